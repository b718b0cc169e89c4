"""A refused key does not disable the server's teacher for good (issue 12, item 4).

Before: one HTTP 401 (or one malformed reply) in ``distil serve`` set the OpenAI teacher's fatal flag and
the teacher stayed off until the server restarted.  Now a 401 fails that call only: the circuit opens,
``/readyz`` says why, and once the key works again the next call after the cool-down goes through.
The teacher is the stand-in OpenAI-compatible server on 127.0.0.1 (it bills every request it gets).
"""

from __future__ import annotations

import math
from pathlib import Path

import fixtures_serve as fx
import pytest
from fastapi.testclient import TestClient
from test_reliability_standin import StandIn, openai_task

from distil.route import Router
from distil.serving import create_app
from distil.task import Task


@pytest.fixture(scope="module")
def router() -> Router:
    r: Router = fx.centroid_router()
    assert math.isfinite(r.config.threshold.value)
    return r


def test_a_401_degrades_with_its_reason_and_the_teacher_comes_back_when_the_key_works(
    router: Router, tmp_path: Path
) -> None:
    with StandIn(labels=list(fx.LABELS)) as s:
        task = Task.load(openai_task(tmp_path, s.base_url, max_retries=0))
        app = create_app(router, task=task, breaker_failures=1, breaker_cooldown_s=0.0)
        with TestClient(app) as c:
            s.refuse = 401
            r = c.post("/v1/classify", json={"inputs": [fx.FOREIGN[0]]})
            assert r.status_code == 200
            first = r.json()[0]
            assert first["degraded"] is True and first["source"] == "student"
            reasons = c.get("/readyz").json()["degraded"]
            assert any("401" in why and "last call failed" in why for why in reasons), reasons
            refused = s.requests
            s.refuse = None  # the key works again
            again = c.post("/v1/classify", json={"inputs": [fx.FOREIGN[1]]}).json()[0]
            assert again["source"] == "teacher" and again["degraded"] is False
            assert again["label"] == s.label_for(fx.FOREIGN[1])
            assert s.requests > refused
            assert not any("last call failed" in why for why in c.get("/readyz").json()["degraded"])
