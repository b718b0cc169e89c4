"""The request and answer shapes of other tools, on top of distil's own: the Hugging Face Inference
text-classification shape, the OpenAI chat facade's ``logprobs`` and ``stream``, and ``/v1/models``.

Ranked answers (HF ``top_k``, chat ``top_logprobs``) start with the served answer and its score; the
other labels follow in the answering student's calibrated proportions, scaled to the mass the answer
leaves (for a teacher answer that student is the last rung, the one the teacher stands behind).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distil.serving.schema import HTTPProblem, type_name

#: ``function_to_apply`` values that leave a student's calibrated probabilities as they are.
_SOFTMAX_LIKE = (None, "softmax")


@dataclass(frozen=True)
class HFOptions:
    """The ``parameters`` of a Hugging Face text-classification request."""

    top_k: int | None = None


def parse_hf_parameters(value: Any) -> HFOptions:
    """``{"top_k": int, "function_to_apply": "softmax"}`` (both optional); anything else is a 422."""
    if value is None:
        return HFOptions()
    if not isinstance(value, dict):
        raise HTTPProblem(422, f"'parameters' must be an object like {{\"top_k\": 3}}, found {type_name(value)}")
    unknown = sorted(set(value) - {"top_k", "function_to_apply"})
    if unknown:
        raise HTTPProblem(422, f"unknown parameter(s) {unknown}; text classification takes top_k and function_to_apply")
    top_k = value.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise HTTPProblem(422, f"'parameters.top_k' must be an integer >= 1, found {top_k!r}")
    fn = value.get("function_to_apply")
    if fn not in _SOFTMAX_LIKE:
        raise HTTPProblem(
            422, f"'parameters.function_to_apply' {fn!r} is not supported: the student's scores are calibrated "
            "softmax probabilities; send \"softmax\" or leave it out",
        )
    return HFOptions(top_k=top_k)


def ranked(answer: Mapping[str, Any], probs: np.ndarray, labels: Sequence[str], k: int | None) -> list[dict[str, Any]]:
    """The top ``k`` (all when None) ``{label, score}`` for one served answer, best first (see the module doc)."""
    first, score = str(answer["label"]), float(answer["score"])
    rest = [(lab, float(p)) for lab, p in zip(labels, probs, strict=True) if lab != first]
    mass = sum(p for _, p in rest)
    scale = (1.0 - score) / mass if mass > 0 else 0.0
    out = [{"label": first, "score": score}]
    out += [{"label": lab, "score": p * scale} for lab, p in sorted(rest, key=lambda r: -r[1])]
    return out[: len(out) if k is None else k]


def chat_logprobs(top: Sequence[Mapping[str, Any]], n: int) -> dict[str, Any]:
    """The chat ``logprobs`` object: the label as one token; the ``n`` best labels (itself first) as
    ``top_logprobs``."""

    def token(entry: Mapping[str, Any]) -> dict[str, Any]:
        label = str(entry["label"])
        p = float(entry["score"])
        return {"token": label, "logprob": math.log(p) if p > 0 else -9999.0, "bytes": list(label.encode("utf-8"))}

    return {"content": [{**token(top[0]), "top_logprobs": [token(e) for e in top[:n]]}], "refusal": None}


def parse_chat_logprobs(obj: Mapping[str, Any]) -> int | None:
    """How many alternatives the chat body asks for: None without ``logprobs``, else ``top_logprobs`` (0-20)."""
    want = obj.get("logprobs")
    if want is None or want is False:
        return None
    if want is not True:
        raise HTTPProblem(422, f"'logprobs' must be true or false, found {type_name(want)}")
    n = obj.get("top_logprobs", 0)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 20:
        raise HTTPProblem(422, f"'top_logprobs' must be an integer from 0 to 20, found {n!r}")
    return n


def stream_chunks(completion: Mapping[str, Any], *, include_usage: bool) -> Iterator[str]:
    """A finished chat completion as server-sent events: the role and label, the stop, [usage], ``[DONE]``."""
    choice = completion["choices"][0]
    base = {k: completion[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    delta = {"role": "assistant", "content": choice["message"]["content"]}
    chunks: list[dict[str, Any]] = [
        base | {"choices": [{"index": 0, "delta": delta, "logprobs": choice["logprobs"], "finish_reason": None}]},
        base | {"choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]},
    ]
    if include_usage:
        chunks.append(base | {"choices": [], "usage": completion["usage"]})
    for chunk in chunks:
        yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"


def model_list(name: str, *, created: float | None = None) -> dict[str, Any]:
    """``GET /v1/models``: the one model this server answers as."""
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": int(created or time.time()), "owned_by": "distil"},
    ]}


def completion_id() -> str:
    """A fresh ``chatcmpl-`` id."""
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"
