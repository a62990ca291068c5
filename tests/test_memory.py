"""The allocator setting the command line applies."""

from __future__ import annotations

import subprocess
import sys


def run(code: str, **environment: str) -> str:
    import os

    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **environment},
        timeout=120,
        check=True,
    )
    return result.stdout


def test_keep_freed_memory_applies_and_can_be_turned_off():
    code = "from rnnkit.memory import keep_freed_memory; print(keep_freed_memory())"
    assert "kept for reuse" in run(code)
    assert "RNNKIT_KEEP_FREED_MEMORY=0" in run(code, RNNKIT_KEEP_FREED_MEMORY="0")
