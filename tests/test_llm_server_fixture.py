"""The LLM server fixture notices a server that answers /v1/models and then dies."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
from llm_server import LlmServer, ServerDied, describe_exit, free_port, start_server_process

STAND_IN = Path(__file__).with_name("crashing_server.py")


def _start(mode: str, timeout: float = 30.0) -> LlmServer:
    port = free_port()
    cmd = [sys.executable, str(STAND_IN), str(port), mode]
    return start_server_process(cmd, port, STAND_IN, startup_timeout=timeout)


def test_a_server_that_dies_on_its_first_completion_is_not_up() -> None:
    with pytest.raises(ServerDied) as info:
        _start("crash")
    msg = str(info.value)
    assert "first chat completion" in msg
    assert "signal 11 (SIGSEGV)" in msg
    assert "amx repack" in msg  # the log tail is in the message


def test_check_alive_reports_a_server_that_died_after_starting() -> None:
    server = _start("ok")
    try:
        server.check_alive()  # up: a real completion answered
        server.process.send_signal(signal.SIGSEGV)
        server.process.wait(timeout=10)
        with pytest.raises(ServerDied) as info:
            server.check_alive()
        assert "no longer running" in str(info.value)
        assert "SIGSEGV" in str(info.value)
        assert "stand-in server on" in str(info.value)
    finally:
        server.stop()
        server.log_path.unlink(missing_ok=True)


def test_a_command_that_exits_at_once_fails_with_its_exit_code() -> None:
    port = free_port()
    cmd = [sys.executable, "-c", "import sys; print('no such model'); sys.exit(3)"]
    with pytest.raises(ServerDied) as info:
        start_server_process(cmd, port, STAND_IN, startup_timeout=30)
    assert "exit code 3" in str(info.value)
    assert "no such model" in str(info.value)


def test_describe_exit() -> None:
    assert describe_exit(None) == "still running"
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(-9) == "killed by signal 9 (SIGKILL)"
