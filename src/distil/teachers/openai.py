"""The ``openai`` teacher: any OpenAI-compatible chat-completions endpoint.

Works with OpenAI itself, vLLM, Ollama and llama.cpp's server (``llama_cpp.server``).
One request per text (or a few when sampling), sent by a small thread pool with
requests-per-minute / tokens-per-minute token buckets, through the one retry loop of
:func:`distil.teachers.base.retry_call`.

**The prompt.**  The system message is the task's instruction, then the labels (with
their descriptions when they differ from the name), then the answer format: a JSON object
``{"label": "<one label>"}``.  The user message is the text.  The prompt is the same
whatever the server supports, and its SHA-256 is part of :meth:`OpenAITeacher.identity`.

**Capabilities** are probed once per teacher, on the first batch, with a short fixed
probe text (:data:`PROBE_TEXT`), and kept in :attr:`OpenAITeacher.capabilities`:

1. constrained answers (unless ``constrained = "none"``): first OpenAI's
   ``response_format = {"type": "json_schema", ...}``, then llama.cpp's
   ``{"type": "json_object", "schema": ...}``; both hold a JSON schema whose ``label`` is an
   ``enum`` of the labels.  A style counts as supported when the server accepts it and the
   probe's answer is a label.  A refusal (a 4xx, or a 5xx that persists after one retry —
   llama-cpp-python answers an unknown ``response_format`` type with HTTP 500) only moves
   on to the next style; with none left the answers are unconstrained.
2. log-probabilities (when ``probs`` is ``auto`` or ``logprobs``): ``logprobs=true,
   top_logprobs=k``; supported when the answer carries ``logprobs.content[*].top_logprobs``.

``probs = "auto"`` then uses ``logprobs`` when supported, otherwise ``samples``.  A forced
mode the server cannot serve (``probs = "logprobs"`` without logprobs,
``constrained = "json_schema"`` with neither style) stops the run with a
:class:`TeacherError`.

**Class probabilities** (``Answer.method``):

* ``"logprobs"`` — from the tokens of the generated label.  Starting where the label's
  value begins (after ``"label": "`` in the JSON, or at the first character of a bare
  answer), the generated path is followed token by token.  At each position the reported
  alternatives (``top_logprobs`` plus the generated token) are kept only if, appended to
  the label prefix generated so far, they can still start or complete a label
  (completion = the label followed by ``"`` in JSON, or by whitespace/punctuation in a bare
  answer).  Everything else is dropped and the rest renormalised: llama.cpp reports
  top_logprobs from *before* its grammar masks tokens, so they include tokens the grammar
  forbids.  An alternative that selects a single label gives that label its share of the
  mass; one shared by several labels (``card_`` in ``card_arrival`` / ``card_linking``)
  gives each of them an equal share (the server never shows how that branch would have
  continued); the generated token's share is carried to the next position, until a single
  label is left.  Matching is exact while a grammar constrains the answer and
  case-insensitive otherwise.  When the logprobs cannot be read (no ``top_logprobs`` at the
  label, the path leaves the label set) the answer falls back to ``"onehot"`` and
  ``extra["logprobs_error"]`` says why.  ``extra["split_mass"]`` is the probability that was split
  evenly (0: the distribution over labels is exact).  **Label keys** (``label_keys`` in
  ``[teacher]``) make it exact: the prompt lists each label after a short key (``A``…``Z``, or
  ``1``…``N``), the schema's ``enum`` is the keys and the teacher answers the key, so the first
  answer token's ``top_logprobs`` name labels one each (single letters are one token in every
  common tokenizer; numbers up to 999 in GPT-4-class and Llama-3 tokenizers, digit by digit in
  others, where ``split_mass`` says how much was still shared).  The key mode is part of the
  teacher's identity, so the journal never mixes answers asked by name and by key.
* ``"samples"`` — ``samples`` answers at ``sample_temperature``, asked with ``n=k``; a
  server that returns fewer choices (llama.cpp ignores ``n``) is asked again for the rest.
  The probabilities are the frequencies of the valid answers; invalid samples are counted
  in ``extra["invalid_samples"]``; when none is valid the answer is ``invalid``.  A tie at the
  top (two labels with the most votes) is not left to label order: one more sample is asked at a
  time, up to ``samples`` more, until the tie breaks (``extra["tie_break_samples"]``); one that
  persists stays an even split between the tied labels (``extra["tied"]``).  Every sample counts
  against the budget like any request.
* ``"onehot"`` — one answer at ``temperature``, probability 1 on it.

**Answers outside the label set** are ``invalid`` with the raw text, never mapped to a
near label.  What is normalised before the exact match: surrounding whitespace, a
surrounding Markdown code fence, surrounding quotes or backticks, a trailing period, runs of
whitespace (collapsed to one space) and letter case.  Two labels equal after that
normalisation are matched only exactly.  The answer may be the JSON object
(``{"label": ...}``), a JSON string, or the bare label.

**Request shape.**  Every request carries the model, the two messages, ``max_tokens`` and
``temperature``, except for OpenAI's reasoning families (``o1``, ``o3``, ``o4-mini``, ``gpt-5…``,
matched by name: :data:`REASONING_MODEL`), which get ``max_completion_tokens`` and no temperature
(``token_limit_param`` and ``send_temperature`` in ``[teacher]`` decide it for any model).
``reasoning_effort`` and ``seed`` are sent when set; ``extra_body`` is merged into every request
body last (provider options such as vLLM's ``chat_template_kwargs`` or Ollama's ``think``) and
``headers`` go with every request.  Settings that change answers (no temperature, effort, seed,
extra body) are part of :meth:`OpenAITeacher.identity`, so the journal never mixes answers asked
differently; headers are not.

**Errors.**  Connection errors, timeouts and HTTP 408/409/429/5xx are retried with backoff
and jitter, honouring ``Retry-After`` (and OpenAI's ``retry-after-ms``; a value that is not a
finite number is ignored).  401/403 (bad key) and 404 (no such model or endpoint) raise
:class:`TeacherError` for that call (a later call tries again), as does a probe whose retries are
spent (the endpoint is unreachable).  Any other 4xx makes that one answer ``failed`` with the
server's message, without retries; so do spent retries.  A 2xx reply that is not the shape
checked by :func:`distil.teachers.reply.parse_reply` (not JSON, or a field of the wrong JSON type)
is paid for: that answer is ``invalid`` with the raw body, never retried, and the run goes on.

**Spending.**  Every request — the probe's, retries, the extra requests of ``samples`` — first
reserves its estimate in the run's :class:`~distil.cost.Budget` (prompt tokens estimated at
:data:`BYTES_PER_TOKEN` UTF-8 bytes per token plus ``max_tokens`` per choice, at the task's
price or the built-in one for the model); once the budget refuses, nothing more is sent.  A
request then costs what its ``usage`` says, or the estimate when it reports none; a timeout or
a connection dropped after sending costs the estimate too (the server may have answered and
billed it), a refused connection or an HTTP error nothing.

**Timeouts.**  A reply that arrives after the client gave up (``timeout_s``) is lost, and the
request is usually billed; the retry after a timeout waits twice as long (up to 4x
``timeout_s``), so a slow server is paid twice at most once per input.  Set ``timeout_s`` above
the server's slowest answers to avoid paying twice at all.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NoReturn
from urllib.parse import quote, urlencode, urlparse

import httpx

from distil.cost import DEFAULT_PRICES, Budget, Price, lookup_price
from distil.errors import TeacherError
from distil.teachers.base import (
    RETRYABLE_STATUS,
    Answer,
    Interrupted,
    Method,
    OnAnswer,
    RetryableError,
    RetryPolicy,
    Teacher,
    normalise,
    parse_retry_after,
    retry_call,
)
from distil.teachers.ollama import chat_url, from_ollama, to_ollama
from distil.teachers.ratelimit import TokenBucket
from distil.teachers.reply import Choice, MalformedReply, Reply, parse_reply
from distil.teachers.stream import stream_answers

if TYPE_CHECKING:
    from distil.task import OpenAITeacherSpec, Task

#: The text of the capability probe (short, so the probe costs a few dozen tokens).
PROBE_TEXT = "Hello, I have a question."
#: OpenAI's reasoning families, which refuse ``max_tokens`` and any ``temperature`` but the default.
REASONING_MODEL = re.compile(r"^(?:[\w.-]+/)?(?:o\d|gpt-5)(?:\b|[-_.])", re.IGNORECASE)
#: The keys of ``label_keys = "letters"``: one token each in every common tokenizer.
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: UTF-8 bytes per token for estimates made before sending: on the safe side (English runs ~4,
#: text in other scripts fewer), because a budget without ``usage`` is kept with this estimate.
BYTES_PER_TOKEN = 3.0
#: Tokens a chat request adds around its messages (role markers, template).
MESSAGE_OVERHEAD_TOKENS = 12

ResponseFormat = Literal["json_schema", "json_object"]
Mode = Literal["logprobs", "samples", "onehot"]

_JSON_VALUE_START = re.compile(r'"label"\s*:\s*"')
_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.DOTALL)
_BARE_TERMINATORS = frozenset(" \t\r\n\"'`.,;:!?)]}")
_JSON_TERMINATORS = frozenset('"')


@dataclass
class Capabilities:
    """What the probe found the server supports, and what it cost."""

    response_format: ResponseFormat | None
    logprobs: bool
    mode: Mode
    notes: list[str] = field(default_factory=list)
    calls: int = 0
    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for run records and reports)."""
        return asdict(self)


@dataclass
class _Outcome:
    """The result of one logical request (all its HTTP attempts) and what it cost."""

    reply: Reply | None
    attempts: int
    error: str | None = None
    status: int | None = None
    cost: float = 0.0
    raw: str | None = None  # the body of a malformed 2xx reply (paid for, kept as the answer's raw)
    stopped: bool = False  # the budget refused a request

    @property
    def ok(self) -> bool:
        return self.reply is not None

    @property
    def malformed(self) -> bool:
        return self.raw is not None

    @property
    def estimated(self) -> bool:
        """The cost is the estimate: the reply reported no ``usage``."""
        return self.reply is None or self.reply.usage is None

    def usage(self) -> tuple[int, int]:
        return self.reply.tokens() if self.reply is not None else (0, 0)

    def content(self) -> str:
        return self.reply.content() if self.reply is not None else ""


@dataclass
class _Tally:
    """What the requests behind one answer added up to."""

    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    estimated: bool = False

    def add(self, out: _Outcome) -> None:
        t_in, t_out = out.usage()
        self.attempts += out.attempts
        self.tokens_in += t_in
        self.tokens_out += t_out
        self.cost += out.cost
        self.estimated = self.estimated or (out.attempts > 0 and out.estimated)

    def common(self) -> dict[str, Any]:
        """The :class:`Answer` fields every answer carries."""
        return {"attempts": self.attempts, "tokens_in": self.tokens_in, "tokens_out": self.tokens_out,
                "cost": self.cost}


@dataclass
class _Attempts:
    """The HTTP attempts of one logical request."""

    probe_5xx: list[int] | None
    attempts: int = 0
    timeouts: int = 0
    cost: float = 0.0

    def timeout(self, base: float) -> float:
        """This attempt's client timeout: doubled after each timeout, up to 4x."""
        return float(base * 2 ** min(self.timeouts, 2))


@dataclass
class _Call:
    """One :meth:`OpenAITeacher.answer_each` call: its budget, and the flag that stops its requests."""

    budget: Budget
    stop: threading.Event = field(default_factory=threading.Event)


class _HTTPFailure(Exception):
    """A response that will not get better by retrying (4xx other than 408/409/429)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _MaybeBilled(RetryableError):
    """A retryable failure after the request was sent (a timeout, a dropped connection): it may be billed."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class _Stopped(Exception):
    """This call stopped early (another request's fatal error, Ctrl-C); send nothing more."""


class _BudgetStop(Exception):
    """The budget refused the next request."""


def _no_spend() -> dict[str, float]:
    return {"calls": 0, "attempts": 0, "tokens_in": 0, "tokens_out": 0, "cost": 0.0}


def _norm(text: str) -> str:
    text = " ".join(text.split())
    text = text.removesuffix(".").strip().strip("\"'`").strip()
    return text.removesuffix(".").strip().casefold()


def chat_endpoint(spec: OpenAITeacherSpec) -> str:
    """Where chat requests go: ``/chat/completions`` under ``base_url``, Ollama's ``/api/chat``, or Azure
    OpenAI's deployment URL with its ``api-version``."""
    base = spec.base_url.rstrip("/")
    if spec.api == "ollama":
        return chat_url(base)
    if spec.api == "azure":
        return f"{base}/openai/deployments/{quote(spec.azure_deployment or '', safe='')}/chat/completions?" + \
            urlencode({"api-version": spec.api_version})
    return base + "/chat/completions"


def answer_keys(labels: Sequence[str], mode: str) -> list[str]:
    """What the teacher answers for each label: the name itself, or a short key (``A``…, ``1``…)."""
    if mode == "auto":
        mode = "letters" if len(labels) <= len(_LETTERS) else "numbers"
    if mode == "letters":
        return list(_LETTERS[: len(labels)])
    if mode == "numbers":
        return [str(i + 1) for i in range(len(labels))]
    return list(labels)


def build_system_prompt(task: Task, keys: Sequence[str] | None = None) -> str:
    """The system message: instruction, labels (with descriptions), the task's examples if any, answer format.

    With ``keys`` (one short key per label) every label is listed after its key and the answer is the key.
    """
    keyed = keys is not None and list(keys) != task.label_names
    answer = dict(zip(task.label_names, keys or task.label_names, strict=True))
    lines = [task.instruction.strip(), "", "Labels (answer with the key before the colon):" if keyed else "Labels:"]
    for name, desc in task.label_descriptions.items():
        shown = name if desc == name else f"{name}: {desc}"
        lines.append(f"- {answer[name]}: {shown}" if keyed else f"- {shown}")
    if task.examples:
        lines += ["", "Examples:"]
        for name in task.label_names:  # in label order, so the prompt does not depend on the file's order
            said = json.dumps({"label": answer[name]})
            lines += [f"- {json.dumps(' '.join(t.split()), ensure_ascii=False)} -> {said}"
                      for t in task.examples.get(name, [])]
    word = "key" if keyed else "label"
    lines += [
        "",
        f'Answer with a JSON object only, in the form {{"label": "<{word}>"}}, '
        f"where <{word}> is exactly one of the {word}s above.",
    ]
    return "\n".join(lines)


def label_schema(labels: Sequence[str]) -> dict[str, Any]:
    """JSON schema of an answer: an object whose ``label`` is one of ``labels``."""
    return {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(labels)}},
        "required": ["label"],
        "additionalProperties": False,
    }


class OpenAITeacher(Teacher):
    """A teacher behind an OpenAI-compatible chat-completions endpoint (see the module docs).

    ``transport`` (an httpx transport, e.g. ``httpx.MockTransport``) and ``retry`` (a
    :class:`RetryPolicy`, whose ``sleep`` the rate limiter shares unless ``sleep`` is
    given) exist for tests; ``clock`` drives the rate limiter.
    """

    kind = "openai"

    def __init__(
        self,
        spec: OpenAITeacherSpec,
        task: Task,
        *,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(task.label_names)
        self.spec = spec
        self.task = task
        self.url = chat_endpoint(spec)
        #: What the teacher answers for each label (the names, or short keys: ``label_keys``), in label order.
        self.answers = answer_keys(self.labels, spec.label_keys)
        self.system_prompt = build_system_prompt(task, self.answers)
        self.schema = label_schema(self.answers)
        #: $ per 1M tokens: the task's prices when set, else the built-in table's for the model; None: unknown.
        self.price: Price | None = lookup_price(
            spec.model, DEFAULT_PRICES, price_in_per_1m=spec.price_in_per_1m, price_out_per_1m=spec.price_out_per_1m,
            price_cached_in_per_1m=spec.price_cached_in_per_1m,
        )
        self.retry = retry if retry is not None else RetryPolicy(max_retries=spec.max_retries)
        sleep = sleep or self.retry.sleep
        self._rpm = (
            TokenBucket(spec.requests_per_minute, clock=clock, sleep=sleep)
            if spec.requests_per_minute
            else None
        )
        self._tpm = (
            TokenBucket(spec.tokens_per_minute, clock=clock, sleep=sleep) if spec.tokens_per_minute else None
        )
        headers = {**spec.headers, "Content-Type": "application/json"}
        key = os.environ.get(spec.api_key_env)
        self._has_key = bool(key)
        if key and spec.api == "azure":
            headers["api-key"] = key  # Azure OpenAI's key header
        elif key:
            headers["Authorization"] = f"Bearer {key}"
        conns = max(spec.concurrency, 1)
        self._client = httpx.Client(
            timeout=spec.timeout_s,
            headers=headers,
            transport=transport,
            limits=httpx.Limits(max_connections=conns, max_keepalive_connections=conns),
        )
        # Exact match first (keys, then names), then the normalised form (unless two answers collide).
        self._exact = {lab: lab for lab in self.labels} | dict(zip(self.answers, self.labels, strict=True))
        normed: dict[str, list[str]] = {}
        for ans, lab in zip(self.answers, self.labels, strict=True):
            normed.setdefault(_norm(ans), []).append(lab)
        self._normed = {k: v[0] for k, v in normed.items() if len(v) == 1}
        self.capabilities: Capabilities | None = None
        self._probe_lock = threading.Lock()
        self._probe_spend = _no_spend()
        self._spend_lock = threading.Lock()

    # -- identity ------------------------------------------------------------------
    def prompt_sha(self) -> str:
        """SHA-256 (first 16 hex digits) of the exact prompt template (system message + user template)."""
        template = json.dumps({"system": self.system_prompt, "user": "{text}"}, sort_keys=True)
        return hashlib.sha256(template.encode()).hexdigest()[:16]

    def identity(self) -> dict[str, Any]:
        """Model, prompt and sampling parameters; never the key or the base URL."""
        s = self.spec
        return {
            "model": s.model,
            "prompt_version": s.prompt_version,
            "prompt_sha": self.prompt_sha(),
            "temperature": s.temperature,
            "probs": s.probs,
            "top_logprobs": s.top_logprobs,
            "samples": s.samples,
            "sample_temperature": s.sample_temperature,
            "constrained": s.constrained,
            "max_tokens": s.max_tokens,
            **self._shape_identity(),
        }

    def _shape_identity(self) -> dict[str, Any]:
        """The request-shape settings that change answers, only where set (older journal keys stay valid)."""
        s = self.spec
        out: dict[str, Any] = {}
        if not self._sends_temperature():
            out["temperature"] = None  # the server's default, not the configured one
        for key in ("reasoning_effort", "seed"):
            if getattr(s, key) is not None:
                out[key] = getattr(s, key)
        if s.extra_body:
            out["extra_body"] = s.extra_body
        if self.answers != self.labels:
            out["label_keys"] = s.label_keys
        if s.api != "openai":
            out["api"] = s.api
        if s.azure_deployment is not None:
            out["azure_deployment"] = s.azure_deployment
        return out

    def _reasoning_family(self) -> bool:
        """Whether the model is one of OpenAI's reasoning families (by name, an ``org/`` prefix allowed)."""
        return bool(REASONING_MODEL.match(self.spec.model))

    def _sends_temperature(self) -> bool:
        wanted = self.spec.send_temperature
        return wanted == "yes" or (wanted == "auto" and not self._reasoning_family())

    def _token_limit_param(self) -> str:
        wanted = self.spec.token_limit_param
        if wanted != "auto":
            return wanted
        return "max_completion_tokens" if self._reasoning_family() else "max_tokens"

    def describe(self) -> str:
        """``openai:<model> @ <host>``."""
        host = urlparse(self.spec.base_url).netloc or self.spec.base_url
        return f"openai:{self.spec.model} @ {host}"

    # -- cost ----------------------------------------------------------------------
    def _estimate_tokens_in(self, text: str) -> int:
        size = len(self.system_prompt.encode("utf-8")) + len(text.encode("utf-8", "surrogatepass"))
        return math.ceil(size / BYTES_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS

    def _planned_mode(self) -> Mode:
        if self.capabilities is not None:
            return self.capabilities.mode
        # Before the probe "auto" is assumed to get logprobs (one request per text).
        return "logprobs" if self.spec.probs == "auto" else self.spec.probs

    def estimate_cost(self, texts: Sequence[str]) -> float:
        """Dollars for these texts before sending: the prompt (:data:`BYTES_PER_TOKEN`) + max output tokens.

        Sampling multiplies the whole request by ``samples`` (a server that ignores ``n`` is asked
        once per sample).  Before the capability probe, ``probs = "auto"`` is estimated as one
        request per text (logprobs).  0 when no price is known.
        """
        times = self.spec.samples if self._planned_mode() == "samples" else 1
        return sum(self._cost(self._estimate_tokens_in(t), self.spec.max_tokens) * times for t in texts)

    def prices_known(self) -> bool:
        """Whether the task or the built-in table gives this model a price."""
        return self.price is not None

    def _cost(self, tokens_in: int, tokens_out: int, cached: int = 0) -> float:
        p = self.price
        return 0.0 if p is None else p.tokens_cost(tokens_in, tokens_out, cached)

    # -- HTTP ----------------------------------------------------------------------
    def _payload(
        self,
        text: str,
        *,
        response_format: ResponseFormat | None,
        logprobs: bool,
        n: int = 1,
        temperature: float | None = None,
    ) -> dict[str, Any]:
        s = self.spec
        payload: dict[str, Any] = {
            "model": s.model,
            "messages": [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": text},
            ],
            self._token_limit_param(): s.max_tokens,
        }
        if self._sends_temperature():
            payload["temperature"] = s.temperature if temperature is None else temperature
        for key in ("reasoning_effort", "seed"):
            if getattr(s, key) is not None:
                payload[key] = getattr(s, key)
        if n > 1:
            payload["n"] = n
        if logprobs:
            payload["logprobs"] = True
            payload["top_logprobs"] = s.top_logprobs
        if response_format == "json_schema":
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "label", "strict": True, "schema": self.schema},
            }
        elif response_format == "json_object":
            payload["response_format"] = {"type": "json_object", "schema": self.schema}
        return {**payload, **s.extra_body}

    def _post_once(self, payload: dict[str, Any], st: _Attempts) -> Reply:
        """One HTTP attempt: the checked reply, or RetryableError / _HTTPFailure / MalformedReply / TeacherError."""
        ollama = self.spec.api == "ollama"
        resp = self._http_post(to_ollama(payload) if ollama else payload, st.timeout(self.spec.timeout_s))
        if 200 <= resp.status_code < 300:
            return parse_reply(from_ollama(resp.text) if ollama else resp.text)
        self._raise_for_status(resp, st.probe_5xx)

    def _http_post(self, payload: dict[str, Any], timeout: float) -> httpx.Response:
        """POST ``payload``; a timeout or a connection failure is a RetryableError."""
        body = json.dumps(payload).encode("ascii")  # ASCII-escaped: any text can be sent
        try:
            return self._client.post(self.url, content=body, timeout=timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise RetryableError(f"cannot connect to {self.url}: {type(exc).__name__}: {exc}") from None
        except httpx.TimeoutException as exc:
            raise _MaybeBilled(
                f"{self.url} did not answer within {timeout:g}s ({type(exc).__name__})", timed_out=True
            ) from None
        except httpx.TransportError as exc:
            raise _MaybeBilled(f"the connection to {self.url} failed: {type(exc).__name__}: {exc}",
                               timed_out=False) from None

    def _raise_for_status(self, resp: httpx.Response, probe_5xx: list[int] | None) -> NoReturn:
        """The error for a non-2xx answer: TeacherError (key, model), RetryableError or _HTTPFailure."""
        status = resp.status_code
        message = _error_message(resp)
        if status in (401, 403):
            hint = (
                f"set the environment variable {self.spec.api_key_env} to a valid key"
                if not self._has_key
                else f"check the key in the environment variable {self.spec.api_key_env}"
            )
            raise TeacherError(f"{self.url} refused the request (HTTP {status}): {message}", hint=hint)
        if status == 404:
            raise TeacherError(
                f"{self.url} answered HTTP 404 for model {self.spec.model!r}: {message}",
                hint="check [teacher].model and that base_url ends with the API root (e.g. .../v1)",
            )
        if status in RETRYABLE_STATUS or status >= 500:
            if probe_5xx is not None and status >= 500:
                probe_5xx[0] += 1
                if probe_5xx[0] > 1:  # a probe's feature refused with a 5xx twice: a refusal
                    raise _HTTPFailure(status, f"HTTP {status}: {message}")
            raise RetryableError(f"HTTP {status}: {message}", retry_after=_retry_after(resp))
        raise _HTTPFailure(status, f"HTTP {status}: {message}")

    def _send(self, payload: dict[str, Any], text: str, call: _Call, *, n: int = 1, probe: bool = False) -> _Outcome:
        """One logical request through the rate limits, the budget and the retry loop."""
        est_in, est_out = self._estimate_tokens_in(text), self.spec.max_tokens * n
        hold = self._cost(est_in, est_out)
        st = _Attempts([0] if probe else None)

        def attempt() -> Reply:
            if call.stop.is_set():
                raise _Stopped
            self._throttle(est_in + est_out)
            if not call.budget.reserve(hold):
                raise _BudgetStop
            st.attempts += 1
            return self._paid_attempt(payload, st, hold, call.budget)

        try:
            reply, _ = retry_call(attempt, self.retry)
        except RetryableError as exc:
            return _Outcome(None, st.attempts, f"gave up after {st.attempts} attempts: {exc}", cost=st.cost)
        except _HTTPFailure as exc:
            return _Outcome(None, st.attempts, str(exc), exc.status, cost=st.cost)
        except MalformedReply as exc:
            return _Outcome(None, st.attempts, f"malformed reply: {exc.reason}", cost=st.cost, raw=exc.raw)
        except _BudgetStop:
            return _Outcome(None, st.attempts, "stopped at the budget", cost=st.cost, stopped=True)
        if self._tpm is not None and reply.usage is not None:
            self._tpm.adjust(sum(reply.usage) - est_in - est_out)
        return _Outcome(reply, st.attempts, cost=st.cost)

    def _throttle(self, tokens: int) -> None:
        if self._rpm is not None:
            self._rpm.acquire(1)
        if self._tpm is not None:
            self._tpm.acquire(tokens)

    def _paid_attempt(self, payload: dict[str, Any], st: _Attempts, hold: float, budget: Budget) -> Reply:
        """One attempt, settled in the budget: its ``usage``, else the estimate when it may be billed, else 0."""
        cost = 0.0
        try:
            reply = self._post_once(payload, st)
            cost = hold if reply.usage is None else self._cost(*reply.usage, cached=reply.cached)
            return reply
        except MalformedReply:
            cost = hold
            raise
        except _MaybeBilled as exc:
            cost = hold
            st.timeouts += int(exc.timed_out)
            raise
        except KeyboardInterrupt:  # Ctrl-C on a request in this (the main) thread: it is on the wire
            cost = hold
            raise Interrupted(1) from None
        finally:
            budget.settle(hold, cost)
            st.cost += cost

    # -- capability probe ----------------------------------------------------------
    def _probe(self, call: _Call) -> Capabilities:
        s = self.spec
        notes: list[str] = []
        spent = _no_spend()
        send = self._probe_sender(spent, call)
        try:
            rf = self._probe_response_format(send, notes)
            out, has_lp = self._probe_logprobs(send, rf, notes)
        finally:
            with self._spend_lock:
                for k, v in spent.items():
                    self._probe_spend[k] += v
        if not out.ok:
            raise TeacherError(
                f"{self.url} refused a plain chat completion for model {s.model!r}: {out.error}",
                hint="check [teacher].model, max_tokens and temperature for this server",
            )
        mode: Mode = ("logprobs" if has_lp else "samples") if s.probs == "auto" else s.probs
        return Capabilities(
            response_format=rf, logprobs=has_lp, mode=mode, notes=notes, calls=int(spent["calls"]),
            attempts=int(spent["attempts"]), tokens_in=int(spent["tokens_in"]), tokens_out=int(spent["tokens_out"]),
            cost=spent["cost"],
        )

    def _probe_sender(self, spent: dict[str, float], call: _Call) -> Callable[..., _Outcome]:
        """``send(payload, feature=True)`` for the probe: counts into ``spent``; no answer at all is an error."""

        def send(payload: dict[str, Any], *, feature: bool = True) -> _Outcome:
            # A feature request takes a persistent 5xx as a refusal; a plain one retries as usual.
            before = (call.budget.requests, call.budget.spent)
            try:
                out = self._send(payload, PROBE_TEXT, call, probe=feature)
            except Interrupted:  # Ctrl-C with the probe on the wire: it counts all the same
                spent["calls"] += 1
                spent["attempts"] += call.budget.requests - before[0]
                spent["cost"] += call.budget.spent - before[1]
                raise
            t_in, t_out = out.usage()
            for k, v in (("calls", 1), ("attempts", out.attempts), ("tokens_in", t_in), ("tokens_out", t_out),
                         ("cost", out.cost)):
                spent[k] += v
            if out.stopped:
                raise _BudgetStop
            if not out.ok and out.status is None and not out.malformed:  # retries spent: nothing answers there
                raise TeacherError(
                    f"the teacher endpoint {self.url} did not answer the capability probe: {out.error}",
                    hint="check [teacher].base_url and that the server is running and reachable",
                )
            return out

        return send

    def _probe_response_format(self, send: Callable[..., _Outcome], notes: list[str]) -> ResponseFormat | None:
        """The first constrained-output style the server honours (None: none, or not wanted)."""
        s = self.spec
        if s.constrained == "none":
            return None
        style: ResponseFormat
        for style in ("json_schema", "json_object"):
            out = send(self._payload(PROBE_TEXT, response_format=style, logprobs=False))
            if out.ok and self._parse(out.content()) is not None:
                return style
            why = (out.error or "") if not out.ok else f"answer {out.content()!r} is not a label"
            if out.reply is not None and out.reply.finish_reason() == "length":
                why += f" (cut at max_tokens={s.max_tokens}: raise [teacher].max_tokens)"
            notes.append(f"response_format {style} refused: {why}")
        if s.constrained == "json_schema":
            raise TeacherError(
                f"{self.url} does not constrain answers to a JSON schema: {'; '.join(notes)}",
                hint='set [teacher].constrained = "auto" or "none"',
            )
        return None

    def _probe_logprobs(
        self, send: Callable[..., _Outcome], rf: ResponseFormat | None, notes: list[str]
    ) -> tuple[_Outcome, bool]:
        """A chat completion (with logprobs when wanted) and whether it carried top_logprobs."""
        s = self.spec
        want_lp = s.probs in ("auto", "logprobs")
        out = send(self._payload(PROBE_TEXT, response_format=rf, logprobs=want_lp), feature=want_lp)
        if not want_lp:
            return out, False
        if out.reply is not None and out.reply.has_top_logprobs():
            return out, True
        why = (out.error or "") if not out.ok else "the answer carries no top_logprobs"
        notes.append(f"logprobs not available: {why}")
        if s.probs == "logprobs":
            raise TeacherError(
                f"{self.url} does not return logprobs for model {s.model!r}: {why}",
                hint='set [teacher].probs = "auto" or "samples"',
            )
        if not out.ok:
            out = send(self._payload(PROBE_TEXT, response_format=rf, logprobs=False), feature=False)
        return out, False

    def probe(self, budget: Budget | None = None) -> Capabilities:
        """Probe the server once (thread-safe) and return what it supports."""
        caps = self._probe_for(_Call(budget or Budget()))
        if caps is None:
            raise TeacherError("the budget ran out during the capability probe", hint="raise --max-calls/--max-cost")
        return caps

    def _probe_for(self, call: _Call) -> Capabilities | None:
        """The capabilities, probing first if needed; None when the budget stopped the probe."""
        with self._probe_lock:
            if self.capabilities is None:
                try:
                    self.capabilities = self._probe(call)
                except _BudgetStop:
                    return None
            return self.capabilities

    def prepare(self, budget: Budget) -> None:
        """Probe the server (if not done yet), within ``budget``."""
        self._probe_for(_Call(budget))

    def shared_state(self) -> Capabilities | None:
        """The probe's result: a copy of this teacher elsewhere adopts it instead of probing again."""
        return self.capabilities

    def adopt(self, state: Any) -> None:
        """Use another copy's probe result (a :class:`Capabilities`)."""
        if isinstance(state, Capabilities):
            self.capabilities = state

    def share_limits(self, buckets: Mapping[str, Any]) -> None:
        """Throttle through buckets shared across processes (only the limits the task sets)."""
        if self._rpm is not None and "rpm" in buckets:
            self._rpm = buckets["rpm"]
        if self._tpm is not None and "tpm" in buckets:
            self._tpm = buckets["tpm"]

    def take_probe_spend(self) -> dict[str, Any] | None:
        """What the probe requests cost since the last call (to journal); None when there were none."""
        with self._spend_lock:
            spent, self._probe_spend = self._probe_spend, _no_spend()
        if not spent["calls"]:
            return None
        caps = self.capabilities
        info: dict[str, Any] = {k: (v if k == "cost" else int(v)) for k, v in spent.items()}
        if caps is not None:
            info.update(response_format=caps.response_format, logprobs=caps.logprobs, mode=caps.mode, notes=caps.notes)
        return info

    # -- answers -------------------------------------------------------------------
    def _parse(self, content: str) -> str | None:
        """The label an answer names, or None (see the module docs for what is normalised)."""
        s = content.strip()
        m = _FENCE.match(s)
        if m:
            s = m.group(1).strip()
        value: Any = s
        try:
            value = json.loads(s)
        except (ValueError, RecursionError):
            value = s
        if isinstance(value, dict):
            value = value.get("label")
        if not isinstance(value, str):
            return None
        if value in self._exact:
            return self._exact[value]
        return self._normed.get(_norm(value))

    def answer_each(self, texts: Sequence[str], on_answer: OnAnswer, budget: Budget) -> None:
        """Answer ``texts`` with up to ``concurrency`` requests in flight, handing each answer over as it arrives.

        Every request reserves its estimate in ``budget`` first; texts it has no room for get no
        answer.  Raises :class:`TeacherError` when the endpoint is unreachable at the probe or
        refuses the key / model (every answer would be bad); never for one bad text or reply.
        """
        if not texts:
            return
        call = _Call(budget)
        caps = self._probe_for(call)
        if caps is None:
            return

        def answer(text: str) -> Answer | None:
            return self._answer(text, caps, call)

        stream_answers(texts, answer, on_answer, workers=self.spec.concurrency, stop=call.stop,
                       more=lambda: not budget.exhausted)

    def predict_batch(self, texts: Sequence[str]) -> list[Answer]:
        """One answer per text (no budget), with up to ``concurrency`` requests in flight; see :meth:`answer_each`."""
        got: dict[int, Answer] = {}

        def keep(i: int, answer: Answer) -> None:
            got[i] = answer

        self.answer_each(texts, keep, Budget())
        return [got.get(i) or Answer("failed", error="not asked") for i in range(len(texts))]

    def _answer(self, text: str, caps: Capabilities, call: _Call) -> Answer | None:
        started = time.perf_counter()
        sampled = caps.mode == "samples"
        ans = self._answer_samples(text, caps, call) if sampled else self._answer_single(text, caps, call)
        if ans is None:
            return None
        ans.latency_ms = (time.perf_counter() - started) * 1000.0
        ans.extra.setdefault("response_format", caps.response_format)
        return ans

    def _answer_single(self, text: str, caps: Capabilities, call: _Call) -> Answer | None:
        lp = caps.mode == "logprobs"
        payload = self._payload(text, response_format=caps.response_format, logprobs=lp)
        out = self._send(payload, text, call)
        if out.stopped:
            return None
        tally = _Tally()
        tally.add(out)
        common = tally.common()
        if out.malformed:
            return Answer("invalid", raw=out.raw, error=out.error, **common)
        if out.reply is None:
            return Answer("failed", error=out.error, **common)
        return self.reply_answer(out.reply, caps, common, estimated=tally.estimated)

    def reply_answer(
        self, reply: Reply, caps: Capabilities, common: dict[str, Any], *, estimated: bool = False
    ) -> Answer:
        """The answer one chat completion gives (a label from its content, probabilities from its logprobs
        when ``caps`` asked for them); ``common`` holds what it cost (attempts, tokens, dollars)."""
        content = reply.content()
        label = self._parse(content)
        extra: dict[str, Any] = {"cost_estimated": True} if estimated else {}
        if label is None:
            return Answer("invalid", raw=content, extra=extra, **common)
        extra["answer"] = label
        method: Method = "onehot"
        probs: list[float] | None = None
        if caps.mode == "logprobs":
            stats: dict[str, float] = {}
            probs, why = self._logprob_probs(reply.choices[0] if reply.choices else None, caps, stats)
            if probs is not None:
                method = "logprobs"
                extra["split_mass"] = round(stats.get("split_mass", 0.0), 6)
            else:
                extra["logprobs_error"] = why
        if probs is None:
            probs = [1.0 if lab == label else 0.0 for lab in self.labels]
        return Answer("done", probs=probs, method=method, raw=content, extra=extra, **common)

    def _answer_samples(self, text: str, caps: Capabilities, call: _Call) -> Answer | None:
        k = self.spec.samples
        contents: list[str] = []
        tally = _Tally()
        stopped = False
        want = k
        for _ in range(2 * k):  # at most k requests for the k samples, however few choices each brings,
            if len(contents) >= want and want < 2 * k and self._top_tied(contents):
                want += 1  # and up to k single tie-breaking samples more
            need = want - len(contents)
            if need <= 0:
                break
            payload = self._payload(
                text, response_format=caps.response_format, logprobs=False, n=need,
                temperature=self.spec.sample_temperature,
            )
            out = self._send(payload, text, call, n=need)
            tally.add(out)
            if out.stopped:
                stopped = True
                break
            if out.malformed:
                return Answer("invalid", raw=out.raw, error=out.error, **tally.common())
            if out.reply is None:
                return Answer("failed", error=out.error, **tally.common())
            got = [c.content for c in out.reply.choices[:need]]
            if not got:
                break
            contents += got
        if stopped and not contents:
            return None  # the budget stopped it before any sample came back
        return self._from_samples(contents, k, tally)

    def _top_tied(self, contents: list[str]) -> bool:
        """Whether two or more labels share the most valid votes among ``contents``."""
        valid = [p for p in (self._parse(c) for c in contents) if p is not None]
        if not valid:
            return False
        counts = sorted((valid.count(lab) for lab in set(valid)), reverse=True)
        return len(counts) > 1 and counts[0] == counts[1]

    def _from_samples(self, contents: list[str], k: int, tally: _Tally) -> Answer:
        """The answer from the sampled contents (fewer than ``k`` when the budget stopped the rest)."""
        parsed = [self._parse(c) for c in contents]
        valid = [p for p in parsed if p is not None]
        extra: dict[str, Any] = {"samples": parsed, "invalid_samples": len(parsed) - len(valid)}
        if len(contents) < k:
            extra["samples_short"] = k - len(contents)
        if tally.estimated:
            extra["cost_estimated"] = True
        if not valid:
            return Answer("invalid", raw=json.dumps(contents, ensure_ascii=False), extra=extra, **tally.common())
        counts = {lab: float(valid.count(lab)) for lab in set(valid)}
        if len(contents) > k:
            extra["tie_break_samples"] = len(contents) - k
        if self._top_tied(contents):
            extra["tied"] = sorted(lab for lab, c in counts.items() if c == max(counts.values()))
        probs = normalise(counts, self.labels)
        return Answer("done", probs=probs, method="samples", raw=contents[0], extra=extra, **tally.common())

    def _logprob_probs(
        self, choice: Choice | None, caps: Capabilities, stats: dict[str, float] | None = None
    ) -> tuple[list[float] | None, str]:
        """Label probabilities from the generated path's logprobs (see the module docs); ``stats`` gets
        ``split_mass``, the probability split evenly between labels the tokens could not tell apart."""
        items = choice.logprobs if choice is not None else None
        if not items:
            return None, "no logprobs in the answer"
        constrained = caps.response_format is not None
        return label_probs_from_logprobs(items, self.answers, case_sensitive=constrained, stats=stats)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()


# ---------------------------------------------------------------------------------------------
# Logprobs → label probabilities (a pure function, tested on golden values).


def label_probs_from_logprobs(
    items: Sequence[dict[str, Any]], labels: Sequence[str], *, case_sensitive: bool = True,
    stats: dict[str, float] | None = None,
) -> tuple[list[float] | None, str]:
    """Probabilities over ``labels`` from chat-completions ``logprobs.content`` items.

    Follows the generated path from the start of the label (in a ``{"label": "..."}``
    object, or a bare answer), renormalising each position's alternatives over the tokens
    that can still start or complete a label; see the module docs.  Returns
    ``(probs, "")`` or ``(None, reason)``.  ``stats["split_mass"]`` (when given) is the probability that
    went to several labels at once and was split evenly: 0 when the distribution is exact.
    """
    tokens = [str(it.get("token", "")) for it in items]
    text = "".join(tokens)
    start, terminators, forms = _label_forms(text, labels)
    fold: Callable[[str], str] = _same if case_sensitive else str.casefold
    found = _token_at(tokens, start)
    if found is None:
        return None, "the answer has no label tokens"
    first, pos = found
    if not items[first].get("top_logprobs"):
        return None, "no top_logprobs at the label's first token"
    walk = _LabelWalk({lab: fold(f) for lab, f in forms.items()}, terminators, dict.fromkeys(labels, 0.0), list(labels))
    for i in range(first, len(items)):
        pre = text[pos:start] if i == first else ""
        why = walk.step(*_candidates(items[i], pre, fold))
        if why:
            return None, why
        if walk.settled():
            break
    walk.spread_rest()
    if stats is not None:
        stats["split_mass"] = walk.split
    probs = normalise(walk.scores, labels)
    if probs is None:
        return None, "no probability mass on any label"
    return probs, ""


def _same(x: str) -> str:
    return x


def _label_forms(text: str, labels: Sequence[str]) -> tuple[int, frozenset[str], dict[str, str]]:
    """Where the label starts in ``text``, what may end it, and each label as it is written there.

    In a ``{"label": "..."}`` object the label is JSON-escaped and ends at a quote; a bare answer
    starts after leading blanks and quotes and ends at a blank or punctuation.
    """
    m = _JSON_VALUE_START.search(text)
    if m:
        return m.end(), _JSON_TERMINATORS, {lab: json.dumps(lab, ensure_ascii=False)[1:-1] for lab in labels}
    start = len(text) - len(text.lstrip(" \t\r\n\"'`"))
    return start, _BARE_TERMINATORS, {lab: lab for lab in labels}


def _token_at(tokens: Sequence[str], start: int) -> tuple[int, int] | None:
    """(index, character offset) of the token holding character ``start``; None past the end."""
    pos = 0
    for i, tok in enumerate(tokens):
        if pos <= start < pos + len(tok):
            return i, pos
        pos += len(tok)
    return None


def _candidates(item: dict[str, Any], pre: str, fold: Callable[[str], str]) -> tuple[str, dict[str, float]]:
    """The generated continuation at one position (after ``pre``) and every alternative's best logprob."""
    gen = fold(str(item.get("token", "")))[len(pre) :]
    cands: dict[str, float] = {}
    for alt in item.get("top_logprobs") or []:
        tok = fold(str(alt.get("token", "")))
        if tok.startswith(fold(pre)) and len(tok) > len(pre):
            s = tok[len(pre) :]
            cands[s] = max(cands.get(s, -math.inf), float(alt.get("logprob", -math.inf)))
    cands[gen] = max(cands.get(gen, -math.inf), float(item.get("logprob", -math.inf)))
    return gen, cands


@dataclass
class _LabelWalk:
    """The walk along the generated label: mass given to labels so far, those still possible, the prefix."""

    forms: dict[str, str]
    terminators: frozenset[str]
    scores: dict[str, float]
    remaining: list[str]
    prefix: str = ""
    mass: float = 1.0  # probability of the generated path so far, not yet given to a label
    split: float = 0.0  # probability given evenly to several labels at once (the tokens could not tell them apart)

    def consistent(self, ext: str) -> list[str]:
        """The remaining labels that ``ext`` starts, or that ``ext`` completes up to a terminator."""
        return [
            lab
            for lab in self.remaining
            if self.forms[lab].startswith(ext)
            or (ext.startswith(self.forms[lab]) and ext[len(self.forms[lab])] in self.terminators)
        ]

    def step(self, gen: str, cands: dict[str, float]) -> str:
        """Give the alternatives' share of the mass to their labels and follow ``gen``; a reason on failure."""
        groups = {s: g for s in cands if (g := self.consistent(self.prefix + s))}
        if gen not in groups:
            return f"the generated token {gen!r} leaves the label set after {self.prefix!r}"
        weights = {s: math.exp(cands[s]) for s in groups}
        total = sum(weights.values())
        if total <= 0:
            return "all label tokens have probability 0"
        for s, g in groups.items():
            if s != gen:
                share = self.mass * weights[s] / total / len(g)
                for lab in g:
                    self.scores[lab] += share
                if len(g) > 1:
                    self.split += share * len(g)
        self.mass *= weights[gen] / total
        self.prefix += gen
        self.remaining = groups[gen]
        return ""

    def settled(self) -> bool:
        """True (the mass given to it) once a single label is left."""
        if len(self.remaining) != 1:
            return False
        self.scores[self.remaining[0]] += self.mass
        self.mass = 0.0
        return True

    def spread_rest(self) -> None:
        """The tokens ended with several labels possible: the mass to those the prefix spells exactly, else all."""
        if self.mass <= 0:
            return
        exact = [lab for lab in self.remaining if self.forms[lab] == self.prefix.rstrip()]
        for lab in exact or self.remaining:
            self.scores[lab] += self.mass / len(exact or self.remaining)
        if len(exact or self.remaining) > 1:
            self.split += self.mass


def _error_message(resp: httpx.Response) -> str:
    """The server's own error message (OpenAI ``{"error": {"message"}}``, FastAPI ``detail``, text)."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:500] or resp.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            text = err if isinstance(err, str) else json.dumps(err)
            return text.strip()[:500]
    return json.dumps(body)[:500]


def _retry_after(resp: httpx.Response) -> float | None:
    seconds = parse_retry_after(resp.headers.get("retry-after"))
    if seconds is None:
        ms = resp.headers.get("retry-after-ms")
        try:
            value = float(ms) / 1000.0 if ms else math.nan
        except ValueError:
            value = math.nan
        seconds = max(value, 0.0) if math.isfinite(value) else None
    return seconds


__all__ = [
    "PROBE_TEXT",
    "Capabilities",
    "OpenAITeacher",
    "build_system_prompt",
    "label_probs_from_logprobs",
    "label_schema",
]
