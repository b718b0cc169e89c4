"""The embedding cache: each text embedded once per encoder configuration, never while timing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from distil import embcache
from distil.embcache import caching, encode_cached


class CountingEncoder:
    """A deterministic stand-in encode function that records which texts it was asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.asked += texts
        return np.array([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts], dtype=np.float32).reshape(-1, 3)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTIL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DISTIL_EMBED_CACHE", raising=False)


def test_each_text_is_embedded_once_and_order_is_kept() -> None:
    enc = CountingEncoder()
    first = encode_cached(["a", "bb", "a", "ccc"], "cfg", enc)
    assert enc.asked == ["a", "bb", "ccc"]  # a repeated text is computed once
    np.testing.assert_array_equal(first, CountingEncoder()(["a", "bb", "a", "ccc"]))
    again = encode_cached(["ccc", "dddd", "bb"], "cfg", enc)
    assert enc.asked == ["a", "bb", "ccc", "dddd"]  # only the new text
    np.testing.assert_array_equal(again, CountingEncoder()(["ccc", "dddd", "bb"]))


def test_configurations_do_not_share_vectors() -> None:
    enc = CountingEncoder()
    encode_cached(["a"], "model-x-len128-norm", enc)
    encode_cached(["a"], "model-x-len64-norm", enc)
    assert enc.asked == ["a", "a"]


def test_the_cache_is_off_unless_a_caller_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not embcache.active()
    with caching():
        assert embcache.active()
        with caching(False):
            assert not embcache.active()
        monkeypatch.setenv("DISTIL_EMBED_CACHE", "0")
        assert not embcache.active()
    assert not embcache.active()


def test_timing_never_reads_the_cache() -> None:
    from distil.evaluate import time_predictor
    from distil.train import measure_latency

    seen: list[bool] = []

    def fn(texts: object) -> np.ndarray:
        seen.append(embcache.active())
        return np.zeros((1, 2))

    with caching():
        time_predictor(fn, ["x", "y"], single_calls=5, batch_size=4, budget_s=0.05, measure_memory=False)

        class Probe:
            needs_torch = False

            def predict_proba(self, texts: object) -> np.ndarray:
                return fn(texts)

        measure_latency(Probe(), ["x"], calls=3)  # type: ignore[arg-type]
    assert seen and not any(seen)


def test_an_unwritable_cache_falls_back_to_computing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("DISTIL_CACHE", str(blocked))
    enc = CountingEncoder()
    out = encode_cached(["a", "b"], "cfg", enc)
    assert out.shape == (2, 3) and enc.asked == ["a", "b"]


@pytest.mark.slow
def test_a_real_encoder_gives_the_same_vectors_from_the_cache() -> None:
    from distil.teachers.local import Encoder

    texts = ["my card never arrived", "what is the exchange rate", "my card never arrived"]
    enc = Encoder("all-MiniLM-L6-v2", max_seq_length=64)
    direct = enc.encode(texts)
    with caching():
        cold = enc.encode(texts)
        path = embcache.cache_path(enc.cache_config(True))
        assert path.is_file()
        warm = enc.encode(texts)
    np.testing.assert_allclose(cold, direct, atol=1e-5)
    np.testing.assert_array_equal(warm, cold)
    assert os.path.getsize(path) > 0
