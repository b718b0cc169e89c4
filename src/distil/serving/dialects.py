"""The answer shapes of other tools, on top of distil's own: the Hugging Face Inference
text-classification shape, the OpenAI chat facade's ``logprobs`` and ``stream``, and ``/v1/models``
(their requests are parsed in :mod:`distil.serving.schema`).

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
from typing import Any

import numpy as np


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
