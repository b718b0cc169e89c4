"""What a prediction costs: a price table for hosted teachers and a CPU-time cost model.

Two ways a prediction is paid for:

* a hosted LLM teacher is paid per token.  Cost per 1M predictions is
  ``mean_tokens_in * price_in_per_1m + mean_tokens_out * price_out_per_1m`` dollars
  (a million predictions of ``t`` tokens each are ``t`` million tokens), with the
  mean tokens per prediction measured from the journal;
* anything running on our own CPU (a student, a local or function teacher) is paid
  per core-hour.  Cost per 1M predictions is ``cpu_seconds_per_prediction * 1e6 / 3600
  * core_hour_usd``.

The default prices below are the providers' public list prices (standard tier,
$ per 1M tokens) as read on :data:`PRICES_READ_ON`.  Prices change: a task's
``price_in_per_1m`` / ``price_out_per_1m`` win over this table, and a user's own
table (a JSON or TOML file, or a mapping) can replace or extend it.

A labeling run spends within a :class:`Budget`: every request the teacher sends (capability
probe, retries, extra samples) first reserves its conservative estimate against ``max_calls`` and
``max_cost``, then settles at what the server reported (``usage``), or at the estimate when it
reported nothing.  The stop is hard: what can exceed the cap is only the difference between the
estimate and the real bill of the requests in flight (at most the teacher's concurrency).
"""

from __future__ import annotations

import json
import math
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distil.errors import ConfigError

#: When the default prices were read from the providers' pricing pages.
PRICES_READ_ON = "2025-06-01"


@dataclass(frozen=True)
class Price:
    """Dollars per 1M input and output tokens for one model, and where the number came from."""

    in_per_1m: float
    out_per_1m: float
    source: str = "user"
    read_on: str | None = None
    cached_in_per_1m: float | None = None  # prompt tokens read from the server's cache; None: at in_per_1m

    def tokens_cost(self, tokens_in: int, tokens_out: int, cached: int = 0) -> float:
        """Dollars for one request: uncached and cached prompt tokens, and completion tokens."""
        cached = max(0, min(cached, tokens_in))
        cached_rate = self.in_per_1m if self.cached_in_per_1m is None else self.cached_in_per_1m
        return ((tokens_in - cached) * self.in_per_1m + cached * cached_rate + tokens_out * self.out_per_1m) / 1e6

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for metrics.json."""
        return {
            "in_per_1m": self.in_per_1m,
            "out_per_1m": self.out_per_1m,
            "source": self.source,
            "read_on": self.read_on,
            "cached_in_per_1m": self.cached_in_per_1m,
        }


_OPENAI = "https://openai.com/api/pricing"
_ANTHROPIC = "https://www.anthropic.com/pricing#api"
_GOOGLE = "https://ai.google.dev/gemini-api/docs/pricing"

#: Default list prices, $ per 1M tokens (input, output[, cached input]), standard tier, no batch discount;
#: a cached-input price where the provider bills prompt-cache reads apart (OpenAI), else None (at the input price).
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60, _OPENAI, PRICES_READ_ON, 0.075),
    "gpt-4o": Price(2.50, 10.00, _OPENAI, PRICES_READ_ON, 1.25),
    "gpt-4.1-nano": Price(0.10, 0.40, _OPENAI, PRICES_READ_ON, 0.025),
    "gpt-4.1-mini": Price(0.40, 1.60, _OPENAI, PRICES_READ_ON, 0.10),
    "gpt-4.1": Price(2.00, 8.00, _OPENAI, PRICES_READ_ON, 0.50),
    "claude-3-5-haiku": Price(0.80, 4.00, _ANTHROPIC, PRICES_READ_ON),
    "claude-sonnet-4": Price(3.00, 15.00, _ANTHROPIC, PRICES_READ_ON),
    "gemini-2.0-flash": Price(0.10, 0.40, _GOOGLE, PRICES_READ_ON),
}


def load_prices(prices: Mapping[str, Any] | str | Path | None = None) -> dict[str, Price]:
    """The price table: the defaults, updated by ``prices``.

    ``prices`` is a mapping or a ``.json`` / ``.toml`` file of
    ``model = {in_per_1m = 0.15, out_per_1m = 0.60}`` (a two-number list
    ``[in, out]`` or a :class:`Price` also works).  Raises :class:`ConfigError`
    naming the model and the file for a malformed entry.
    """
    table = dict(DEFAULT_PRICES)
    if prices is None:
        return table
    source = "<mapping>"
    raw: Mapping[str, Any]
    if isinstance(prices, str | Path):
        p = Path(prices)
        source = str(p)
        if not p.exists():
            raise ConfigError(f"price table {source!r} not found", hint="pass a .json or .toml file")
        try:
            text = p.read_text(encoding="utf-8")
            raw = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: not a readable price table ({exc})") from None
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: expected a table of model → prices, found {type(raw).__name__}")
    else:
        raw = prices
    for model, value in raw.items():
        table[str(model)] = _price(value, model=str(model), source=source)
    return table


def _price(value: Any, *, model: str, source: str) -> Price:
    if isinstance(value, Price):
        return value
    try:
        if isinstance(value, Mapping):
            unknown = set(value) - {"in_per_1m", "out_per_1m", "source", "read_on", "cached_in_per_1m"}
            if unknown:
                raise ValueError(f"unknown key(s) {sorted(unknown)}")
            pin, pout = float(value["in_per_1m"]), float(value["out_per_1m"])
            src = str(value.get("source", source))
            read_on = value.get("read_on")
            cached = None if value.get("cached_in_per_1m") is None else float(value["cached_in_per_1m"])
        elif isinstance(value, list | tuple) and len(value) == 2:
            pin, pout = float(value[0]), float(value[1])
            src, read_on, cached = source, None, None
        else:
            raise ValueError(f"found {value!r}")
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"{source}: price for model {model!r} is malformed ({exc})",
            hint="write it as {in_per_1m = 0.15, out_per_1m = 0.60} ($ per 1M tokens)",
        ) from None
    if pin < 0 or pout < 0 or (cached is not None and cached < 0):
        raise ConfigError(f"{source}: price for model {model!r} is negative ({pin}, {pout}, {cached})")
    return Price(pin, pout, src, str(read_on) if read_on is not None else None, cached)


def lookup_price(
    model: str,
    table: Mapping[str, Price],
    *,
    price_in_per_1m: float = 0.0,
    price_out_per_1m: float = 0.0,
    price_cached_in_per_1m: float | None = None,
) -> Price | None:
    """The price of ``model``: the task's own prices when set, else the table.

    The table is matched exactly first, then by the longest key that starts the model
    name (``gpt-4o-mini-2024-07-18`` → ``gpt-4o-mini``), ignoring a ``provider/``
    prefix.  Returns None when nothing matches.
    """
    if price_in_per_1m > 0 or price_out_per_1m > 0:
        return Price(price_in_per_1m, price_out_per_1m, "task file", None, price_cached_in_per_1m)
    name = model.strip()
    candidates = [name, name.rsplit("/", 1)[-1]]
    for cand in candidates:
        if cand in table:
            return table[cand]
    for cand in candidates:
        best = max((k for k in table if cand.startswith(k)), key=len, default=None)
        if best is not None:
            return table[best]
    return None


def token_cost_per_1m(mean_tokens_in: float, mean_tokens_out: float, price: Price) -> float:
    """Dollars per 1M predictions from the mean tokens per prediction and a token price."""
    if mean_tokens_in < 0 or mean_tokens_out < 0:
        raise ValueError("token counts cannot be negative")
    return mean_tokens_in * price.in_per_1m + mean_tokens_out * price.out_per_1m


def cpu_cost_per_1m(cpu_seconds_per_pred: float, core_hour_usd: float) -> float:
    """Dollars per 1M predictions from CPU core-seconds per prediction and a $/core-hour rate."""
    if cpu_seconds_per_pred < 0 or core_hour_usd < 0:
        raise ValueError("CPU time and the core-hour price cannot be negative")
    return cpu_seconds_per_pred * 1e6 / 3600.0 * core_hour_usd


def cost_ratio(teacher_cost_per_1m: float | None, student_cost_per_1m: float | None) -> float | None:
    """How many times cheaper the student is than the teacher; None when either cost is unknown or zero."""
    if not teacher_cost_per_1m or not student_cost_per_1m:
        return None
    return teacher_cost_per_1m / student_cost_per_1m


def cost_target_met(ratio: float | None, max_cost_ratio: float) -> bool | None:
    """Whether a student ``ratio`` times cheaper (:func:`cost_ratio`) costs at most ``max_cost_ratio`` of the teacher.

    The task's ``[targets].max_cost_ratio`` rule, shared by selection and the verdict; None when the
    ratio is unknown.
    """
    return None if ratio is None else bool(ratio * max_cost_ratio >= 1.0)


def check_budget(max_calls: int | None, max_cost: float | None) -> None:
    """Refuse a budget that cannot be a hard stop: negative calls, or a cost that is not a finite number >= 0."""
    if max_calls is not None and (isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 0):
        raise ConfigError(f"--max-calls must be a whole number >= 0, found {max_calls!r}")
    if max_cost is not None:
        try:
            value = float(max_cost)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ConfigError(
                f"--max-cost must be a finite number of dollars >= 0, found {max_cost!r}",
                hint="e.g. --max-cost 5 for five dollars",
            )


class Budget:
    """Requests and dollars one run may spend; shared by the teacher's threads.

    Before each request :meth:`reserve` holds its estimated cost (and counts the request);
    after it :meth:`settle` replaces the hold by what it cost.  Once a reservation is refused
    the budget stays stopped (``stopped`` is ``"max_calls"`` or ``"max_cost"``).  Without limits
    it only counts.
    """

    def __init__(self, max_calls: int | None = None, max_cost: float | None = None) -> None:
        check_budget(max_calls, max_cost)
        self.max_calls = max_calls
        self.max_cost = None if max_cost is None else float(max_cost)
        self.requests = 0
        self.spent = 0.0
        self.held = 0.0
        self.stopped: str | None = None
        self._lock = threading.Lock()

    def reserve(self, estimate: float) -> bool:
        """Count one request and hold ``estimate`` dollars for it; False (and stopped) when that would pass a limit."""
        with self._lock:
            if self.stopped is not None:
                return False
            if self.max_calls is not None and self.requests + 1 > self.max_calls:
                self.stopped = "max_calls"
                return False
            if self.max_cost is not None and self.spent + self.held + estimate > self.max_cost:
                self.stopped = "max_cost"
                return False
            self.requests += 1
            self.held += estimate
            return True

    def settle(self, estimate: float, cost: float) -> None:
        """A reserved request is over: release its hold of ``estimate`` and add what it ``cost``."""
        with self._lock:
            self.held = max(self.held - estimate, 0.0)
            self.spent += cost

    @property
    def exhausted(self) -> bool:
        """True once a reservation was refused."""
        return self.stopped is not None
