"""Journal shards and the cluster-wide quota, without Ray: merge rules, idempotence, the shared budget and bucket.

The Ray engine rests on these: a shard merged twice adds nothing; an answer never replaces an earlier
one; a paid failure keeps its cost; one quota keeps ``max_calls`` for every worker together; one
shared bucket holds a rate for every worker together.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from distil.cli import main
from distil.errors import ConfigError, DataError
from distil.journal import Journal, call_key
from distil.quota import Quota, SharedBucket, SharedBudget, local_caller
from distil.ray_engine import QUIET_S, merge_shards
from distil.shards import answered_in, new_shard_path, shard_paths
from distil.teachers.base import Answer

FP = "fp-1"


def _journal(path: Path) -> Journal:
    j = Journal(path)
    j.register_teacher(FP, "openai", {"model": "m"}, ["a", "b"])
    return j


def _answer(j: Journal, text: str, status: str = "done", cost: float = 0.01, probs: list[float] | None = None) -> str:
    key = call_key(FP, text)
    j.lease([(key, FP, text)], "owner")
    ans = Answer(status, probs=probs if status == "done" else None, cost=cost, attempts=1,
                 error=None if status == "done" else "boom")
    j.record([(key, ans, "a" if status == "done" else None)])
    return key


def _age(*paths: Path) -> None:
    """Make shards look unwritten for longer than a worker could still be running."""
    old = time.time() - 10 * QUIET_S
    for path in paths:
        for suffix in ("", "-wal"):
            if Path(f"{path}{suffix}").exists():
                os.utime(f"{path}{suffix}", (old, old))


def test_a_merge_takes_what_is_missing_keeps_first_answers_and_is_idempotent(tmp_path: Path) -> None:
    central = _journal(tmp_path / "journal.sqlite")
    shard_path = new_shard_path(central.path)
    shard = _journal(shard_path)
    _answer(shard, "new", probs=[0.9, 0.1])
    _answer(shard, "was failed", probs=[0.2, 0.8], cost=0.02)
    _answer(central, "was failed", status="failed", cost=0.05)
    _answer(shard, "answered twice", probs=[0.6, 0.4])
    first = _answer(central, "answered twice", probs=[0.1, 0.9])
    _answer(shard, "failed twice", status="failed", cost=0.03)
    _answer(central, "failed twice", status="failed", cost=0.04)
    shard.record_probe(FP, {"calls": 1, "attempts": 2, "cost": 0.001})
    shard.close()

    stats = central.merge(shard_path)
    assert (stats.added, stats.answered, stats.duplicates, stats.failures, stats.probes) == (1, 1, 1, 1, 1)
    rows = {r.text: r for r in central.rows()}
    assert rows["new"].status == "done" and rows["new"].probs == [0.9, 0.1]
    assert rows["was failed"].status == "done" and rows["was failed"].cost == pytest.approx(0.07)
    assert rows["answered twice"].probs == [0.1, 0.9] and rows["answered twice"].key == first
    assert rows["failed twice"].cost == pytest.approx(0.07) and rows["failed twice"].attempts == 2
    before = central.counts()

    again = central.merge(shard_path)
    assert (again.added, again.answered, again.duplicates, again.failures, again.probes) == (0, 0, 0, 0, 0)
    assert central.counts() == before
    central.close()


def test_a_shard_written_after_a_merge_is_taken_from_where_the_last_merge_stopped(tmp_path: Path) -> None:
    central = _journal(tmp_path / "journal.sqlite")
    shard_path = new_shard_path(central.path)
    shard = _journal(shard_path)
    _answer(shard, "one", probs=[1.0, 0.0])
    assert central.merge(shard_path).added == 1
    _answer(shard, "two", probs=[0.0, 1.0])
    shard.close()
    assert central.merge(shard_path).added == 1
    assert central.counts()["done"] == 2
    central.close()


def test_merge_shards_removes_what_it_merged_and_answered_in_reads_live_shards(tmp_path: Path) -> None:
    central = _journal(tmp_path / "journal.sqlite")
    paths = [new_shard_path(central.path) for _ in range(3)]
    keys = []
    for i, p in enumerate(paths):
        with _journal(p) as s:
            keys.append(_answer(s, f"text {i}", probs=[0.5, 0.5]))
    pending = call_key(FP, "pending one")
    with _journal(paths[0]) as s:
        s.lease([(pending, FP, "pending one")], "someone")
    assert answered_in(paths, [*keys, pending]) == set(keys)
    total = merge_shards(central)
    assert total.added == 3 and total.kept == 3, "just written: a worker may still be running, so kept"
    _age(paths[0], paths[1])
    again = merge_shards(central, finished=[paths[2]])
    assert again.added == 0 and again.kept == 0 and shard_paths(central.path) == []
    assert central.lookup([pending]) == {}, "a pending row is not an answer: not merged"
    central.close()


def test_distil_journal_merge_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = tmp_path / "task.toml"
    task.write_text('name = "t"\ninstruction = "x"\nlabels = ["a", "b"]\n[teacher]\nkind = "function"\n'
                    'callable = "teacher_fns:by_keyword"\n', encoding="utf-8")
    journal = tmp_path / ".distil" / "journal.sqlite"
    shard = new_shard_path(journal)
    with _journal(shard) as s:
        _answer(s, "from a worker", probs=[0.3, 0.7])
    assert main(["journal", "merge", str(task), str(shard)]) == 0
    assert "1 new rows" in capsys.readouterr().out
    assert shard.exists(), "shards named on the command line are left in place"
    assert main(["journal", "merge", str(task), str(shard)]) == 0
    assert "0 new rows" in capsys.readouterr().out
    assert main(["journal", "merge", str(task)]) == 0  # the shards folder: a fresh shard is merged and kept
    assert shard.exists() and "1 shards kept" in capsys.readouterr().out
    _age(shard)
    assert main(["journal", "merge", str(task)]) == 0  # quiet for long enough: merged (nothing new) and removed
    assert not shard.exists()
    assert main(["journal", "merge", str(task), str(tmp_path / "missing.sqlite")]) != 0
    assert "no such journal shard" in capsys.readouterr().err


def test_one_quota_keeps_max_calls_for_every_worker_together() -> None:
    quota = Quota(max_calls=100)
    call = local_caller(quota)
    workers = [SharedBudget(call) for _ in range(8)]
    granted = [0] * 8

    def spend(i: int) -> None:
        while workers[i].reserve(0.0):
            granted[i] += 1
            workers[i].settle(0.0, 0.0)
        workers[i].release()

    threads = [threading.Thread(target=spend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 100 and quota.state()["requests"] == 100 and quota.state()["used"] == 100
    assert all(w.stopped == "max_calls" for w in workers)


def test_allotments_never_pass_max_cost_and_unused_room_goes_back() -> None:
    quota = Quota(max_cost=1.0)
    call = local_caller(quota)
    a, b = SharedBudget(call), SharedBudget(call)
    a.expect(3)
    for _ in range(3):
        assert a.reserve(0.1)
        a.settle(0.1, 0.05)  # cheaper than estimated: the rest of the hold is not spent
    a.release()
    assert quota.state()["spent"] == pytest.approx(0.15)
    sent = 0
    while b.reserve(0.1):
        b.settle(0.1, 0.1)
        sent += 1
    b.release()
    assert sent == 8 and b.stopped == "max_cost"  # 0.15 + 8 x 0.1 <= 1.0 < 0.15 + 9 x 0.1
    assert quota.state()["spent"] == pytest.approx(0.95)


def test_an_unlimited_run_only_reports_what_workers_spent() -> None:
    calls: list[str] = []
    quota = Quota()

    def call(method: str, *args: object) -> object:
        calls.append(method)
        return getattr(quota, method)(*args)

    w = SharedBudget(call, limited=False)
    for _ in range(50):
        assert w.reserve(0.01)
        w.settle(0.01, 0.01)
    w.release()
    assert calls == ["release"], "no quota call per request when there is no budget to keep"
    assert quota.state()["requests"] == 50 and quota.state()["spent"] == pytest.approx(0.5)


def test_shared_buckets_never_let_more_than_the_bucket_through() -> None:
    quota = Quota(requests_per_minute=60)  # 1 per second, a burst of 10

    class Wait(Exception):
        pass

    def no_sleep(_: float) -> None:
        raise Wait

    call = local_caller(quota)
    buckets = [SharedBucket(call, "rpm", sleep=no_sleep) for _ in range(4)]
    through = 0
    for i in range(40):
        try:
            buckets[i % 4].acquire()
            through += 1
        except Wait:
            continue
    held = sum(b._local for b in buckets)
    assert through <= 10 and through + held == pytest.approx(10, abs=0.1), (through, held)
    assert quota.take("tpm", 5) == (5, 0.0), "a limit the task does not set never waits"


def test_without_ray_the_engine_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from distil.ray_engine import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError) as err:
        import_ray()
    assert "distil[ray]" in (err.value.hint or "")


def test_inputs_expand_from_folders_and_patterns(tmp_path: Path) -> None:
    from distil.data import expand_inputs

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.csv", "a.parquet", "sub/c.jsonl", "_SUCCESS.json", "notes.txt"):
        (folder / name).write_text("text\nx\n", encoding="utf-8")
    assert [p.name for p in expand_inputs([folder])] == ["a.parquet", "b.csv", "c.jsonl"]
    assert [p.name for p in expand_inputs([str(folder / "*.csv"), str(folder / "b.csv")])] == ["b.csv"]
    with pytest.raises(DataError, match="no file matches"):
        expand_inputs([str(folder / "*.tsv")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .csv"):
        expand_inputs([tmp_path / "empty"])


def test_an_error_a_worker_raised_comes_out_of_rays_wrappers() -> None:
    from distil.ray_engine import _distil_error

    inner = DataError("bad row 3")

    class Wrapped(Exception):
        cause = inner

    outer = RuntimeError("task failed")
    outer.__cause__ = Wrapped("user code raised")
    assert _distil_error(outer) is inner
    plain = RuntimeError("not ours")
    assert _distil_error(plain) is plain
