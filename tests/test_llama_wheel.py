"""scripts/llama_wheel.sh: the portable wheel's cache key, a corrupt cached wheel, a missing compiler."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "llama_wheel.sh"


def run(cache: Path, *, path: str | None = None, dry: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLAMA_WHEEL_DRY_RUN": "1" if dry else ""}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        ["/bin/bash", str(SCRIPT), sys.executable, "0.3.36", str(cache)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )


def test_the_cache_folder_names_version_python_and_cpu_baseline(tmp_path: Path) -> None:
    r = run(tmp_path)
    assert r.returncode == 0, r.stderr
    action, folder = r.stdout.strip().split(" ", 1)
    assert action == "build"
    name = Path(folder).name
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    assert name.startswith(f"llama-cpp-python-0.3.36-{tag}-")
    assert "avx2" in name or "sse" in name or "x86" not in name


def test_a_valid_cached_wheel_is_reused_and_a_corrupt_one_is_not(tmp_path: Path) -> None:
    folder = Path(run(tmp_path).stdout.strip().split(" ", 1)[1])
    wheel = folder / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("llama_cpp/__init__.py", "")
    r = run(tmp_path)
    assert r.stdout.strip() == str(wheel)
    wheel.write_bytes(b"PK\x03\x04 cut short by a full disk")
    r = run(tmp_path)
    assert "corrupt" in r.stderr and "rebuilding" in r.stderr
    assert r.stdout.strip().startswith("build ")
    assert not wheel.exists()


def test_a_missing_compiler_is_one_line_naming_the_package(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    r = run(tmp_path / "cache", path=str(empty), dry=False)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "C/C++ compiler" in r.stderr and "apt-get install build-essential" in r.stderr
