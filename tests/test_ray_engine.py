"""``--engine ray`` on a real local Ray cluster, against the stand-in that counts what it would bill.

What is checked: 2,000 inputs cost exactly 2,000 requests (plus the one capability probe) across
workers, and the merged journal equals the one a local run makes; a worker process killed with
SIGKILL mid-run, then a re-run: requests <= 2,000 + what was in flight + probes, every input
answered (and the same for the driver killed with its cluster); ``--max-calls`` and
``requests_per_minute`` hold for the cluster, not per worker;
``predict --engine ray`` on sharded Parquet equals local ``predict`` row for row.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from test_reliability_standin import StandIn, openai_task

from distil.journal import Journal
from distil.label import label
from distil.predictions import predict_file
from distil.ray_engine import RaySettings, label_on_ray, predict_sharded
from distil.shards import shard_dir
from distil.task import Task

pytestmark = pytest.mark.slow
CONCURRENCY = 4
WORKERS = 2


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """One local Ray cluster (2 CPUs) for the module; the engine joins it instead of starting its own."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _texts(n: int, prefix: str) -> list[str]:
    return [f"{prefix} {i} about my card and a transfer" for i in range(n)]


def _answers(path: Path) -> dict[str, tuple[str, str | None, tuple[float, ...]]]:
    with Journal(path) as j:
        return {r.key: (r.status, r.label, tuple(r.probs or ())) for r in j.rows()}


def _probe_requests(path: Path) -> int:
    with Journal(path) as j:
        return int(j.counts()["probe_attempts"])


def test_ray_labels_each_input_once_and_its_journal_equals_a_local_run(tmp_path: Path, cluster: None) -> None:
    texts = _texts(2000, "ray question")
    with StandIn(delay=(0.0005, 0.002)) as s:
        task = Task.load(openai_task(tmp_path / "ray", s.base_url, concurrency=CONCURRENCY))
        res = label_on_ray(task, texts, settings=RaySettings(workers=WORKERS))
        probes = _probe_requests(task.journal_path)
        assert s.requests == 2000 + probes and probes <= 3
        assert s.paid_twice() == 0
        assert res.stats.done == 2000 and len(res.labeled.texts) == 2000
        assert res.stats.requests == s.requests
        assert not list(shard_dir(task.journal_path).glob("*.sqlite")), "every shard is merged and removed"
        local = Task.load(openai_task(tmp_path / "local", s.base_url, concurrency=CONCURRENCY))
        label(local, texts)
    assert _answers(task.journal_path) == _answers(local.journal_path)
    again = label_on_ray(task, texts, settings=RaySettings(workers=WORKERS))
    assert again.stats.to_ask == 0 and again.stats.from_journal == 2000


def _pids_holding(folder: Path) -> set[int]:
    """Processes with a file of ``folder`` open (the workers writing their journal shards)."""
    pids: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if str(folder) in os.readlink(fd):
                    pids.add(int(proc.name))
                    break
        except OSError:
            continue
    return pids - {os.getpid()}


def test_a_worker_killed_mid_run_costs_at_most_its_requests_in_flight(tmp_path: Path, cluster: None) -> None:
    n = 2000
    texts = _texts(n, "kill question")
    with StandIn(delay=(0.002, 0.006)) as s:
        task = Task.load(openai_task(tmp_path / "t", s.base_url, concurrency=CONCURRENCY))
        folder = shard_dir(task.journal_path)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                label_on_ray(task, texts, settings=RaySettings(workers=WORKERS))
            except BaseException as exc:  # the run may fail with its worker; the re-run finishes it
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.time() + 120
        while s.requests < 600 and time.time() < deadline:
            time.sleep(0.01)
        victims = _pids_holding(folder)
        assert victims, "no worker holds a journal shard open"
        victim = sorted(victims)[0]
        at_kill = s.requests
        os.kill(victim, signal.SIGKILL)
        thread.join(timeout=300)
        assert not thread.is_alive()
        assert at_kill < n, "the run had finished before the kill"
        res = label_on_ray(task, texts, settings=RaySettings(workers=WORKERS))
        probes = _probe_requests(task.journal_path)
        in_flight = CONCURRENCY  # the killed worker's requests on the wire
        assert res.stats.done + res.stats.from_journal == n
        assert s.requests <= n + in_flight + probes, (s.requests, probes, errors)
        assert s.paid_twice() <= in_flight
    with Journal(task.journal_path) as j:
        assert j.counts()["done"] == n


def test_max_calls_holds_for_the_cluster_not_per_worker(tmp_path: Path, cluster: None) -> None:
    with StandIn(delay=(0.001, 0.003)) as s:
        task = Task.load(openai_task(tmp_path / "t", s.base_url, concurrency=CONCURRENCY))
        res = label_on_ray(task, _texts(1000, "budget question"), settings=RaySettings(workers=WORKERS, batch=64),
                           max_calls=300)
        assert s.requests == 300, "the budget is one counter for every worker: no overshoot"
        assert res.stats.stopped == "max_calls"
    with Journal(task.journal_path) as j:
        c = j.counts()
        assert c["done"] + c["failed"] + c["invalid"] + c["probe_attempts"] == 300 and c["pending"] == 0


def test_requests_per_minute_is_shared_by_the_workers(tmp_path: Path, cluster: None) -> None:
    rpm, n = 1200, 260  # 20 per second, a burst of 200: 60 more take >= 3 s for the cluster together
    with StandIn(delay=(0.0, 0.001)) as s:
        task = Task.load(openai_task(tmp_path / "t", s.base_url, concurrency=CONCURRENCY, requests_per_minute=rpm))
        started = time.perf_counter()
        label_on_ray(task, _texts(n, "rate question"), settings=RaySettings(workers=WORKERS, batch=50))
        seconds = time.perf_counter() - started
        assert s.requests >= n
    burst = rpm / 60 * 10
    # one bucket per worker would let 2 bursts through (nothing to wait for); a shared one makes the rest wait
    assert seconds >= (s.requests - burst) / (rpm / 60) * 0.9, seconds


def _shards(folder: Path, texts: list[str], parts: int) -> list[Path]:
    folder.mkdir()
    out = []
    step = -(-len(texts) // parts)
    for i in range(parts):
        chunk = texts[i * step : (i + 1) * step]
        path = folder / f"in-{i}.parquet"
        pq.write_table(pa.table({"id": list(range(i * step, i * step + len(chunk))), "text": chunk}), path)
        out.append(path)
    return out


def test_predict_on_ray_equals_local_predict_row_for_row(
    tmp_path: Path, cluster: None, banking_artifact: tuple[Path, Path, list[str], list[str]]
) -> None:
    artifact, _, _, test = banking_artifact
    texts = (test * (1 + 1500 // len(test)))[:1500]
    shards = _shards(tmp_path / "in", texts, parts=5)
    res = predict_sharded(artifact, shards, tmp_path / "out", engine="ray", settings=RaySettings(workers=WORKERS),
                          probs=True)
    assert res.rows == 1500 and len(res.parts) == 5
    assert (tmp_path / "out" / "_SUCCESS.json").exists()
    for shard, part in zip(shards, res.parts, strict=True):
        local = tmp_path / f"local-{shard.stem}.parquet"
        predict_file(artifact, shard, local, probs=True)
        assert pq.read_table(tmp_path / "out" / part["part"]).equals(pq.read_table(local))
    assert len({p["pid"] for p in res.parts}) >= 1


def test_the_command_line_runs_label_and_predict_on_ray(
    tmp_path: Path, cluster: None, banking_artifact: tuple[Path, Path, list[str], list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from distil.cli import main

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    texts = _texts(120, "cli question")
    for i in range(3):
        (inputs / f"part-{i}.csv").write_text("text\n" + "\n".join(texts[i::3]) + "\n", encoding="utf-8")
    with StandIn(delay=(0.001, 0.002)) as s:
        task = openai_task(tmp_path / "t", s.base_url, concurrency=CONCURRENCY)
        assert main(["label", str(task), str(inputs), "--engine", "ray", "--workers", "2"]) == 0
        assert s.requests - _probe_requests(Task.load(task).journal_path) == 120
        assert main(["label", str(task), str(inputs), "--engine", "ray", "--strategy", "active"]) != 0
    assert "--engine ray runs --strategy all" in capsys.readouterr().err
    artifact = banking_artifact[0]
    assert main(["predict", str(artifact), str(inputs), "--engine", "ray", "--out", str(tmp_path / "pred")]) == 0
    shown = capsys.readouterr()
    assert "120 rows in 3 parts" in shown.out + shown.err
    assert "streaming_executor" not in shown.err, "Ray Data's own logs stay out of distil's display"
    assert main(["predict", str(artifact), str(inputs)]) != 0, "several shards need --out FOLDER"
    assert "--out is not set" in capsys.readouterr().err


def test_a_killed_driver_leaves_shards_the_next_run_merges_before_it_asks(tmp_path: Path, cluster: None) -> None:
    """``distil label --engine ray`` killed with SIGKILL (driver, its local cluster with it), then run again
    (in this process, on the module's cluster)."""
    import subprocess
    import sys

    n = 1000
    texts = _texts(n, "driver kill")
    inputs = tmp_path / "in.csv"
    inputs.write_text("text\n" + "\n".join(texts) + "\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent), "COLUMNS": "200"}
    with StandIn(delay=(0.002, 0.006)) as s:
        task = openai_task(tmp_path / "t", s.base_url, concurrency=CONCURRENCY)
        cmd = [sys.executable, "-m", "distil", "label", str(task), str(inputs), "--engine", "ray", "--workers", "2"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.time() + 120
        while s.requests < 300 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        for pid in _pids_holding(shard_dir(Task.load(task).journal_path)):  # workers in their own sessions: a crash
            os.kill(pid, signal.SIGKILL)
        proc.wait()
        time.sleep(1.0)
        at_kill = s.requests
        journal = Task.load(task).journal_path
        assert list(shard_dir(journal).glob("*.sqlite")), "the killed run left its shards"
        res = label_on_ray(Task.load(task), texts, settings=RaySettings(workers=WORKERS))
        assert res.stats.done + res.stats.from_journal == n
        probes = _probe_requests(journal)
        in_flight = WORKERS * CONCURRENCY
        assert s.requests <= n + in_flight + probes, (s.requests, at_kill, probes)
    with Journal(journal) as j:
        assert j.counts()["done"] == n
    left = list(shard_dir(journal).glob("*.sqlite"))
    assert 0 < len(left) <= WORKERS, "only the killed run's shards stay (written a moment ago), merged already"
