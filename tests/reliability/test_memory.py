"""glibc allocator settings that keep the server's memory bounded (playground/memory.py)."""

import os
import subprocess
import sys


def test_arena_cap_applies_once_and_respects_the_environment():
    # in a fresh interpreter: mallopt must run before threads allocate, as app.main does
    code = "from playground.memory import limit_arenas; import sys; sys.exit(0 if limit_arenas(2) else 3)"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode == 0
    env["MALLOC_ARENA_MAX"] = "4"  # the user's own setting wins
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode == 3

