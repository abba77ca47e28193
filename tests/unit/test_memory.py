"""Capping glibc's malloc arenas in a worker process (``plugwatch.memory``)."""

import os
import subprocess
import sys

CHECK = "from plugwatch.memory import limit_malloc_arenas; print(limit_malloc_arenas())"


def run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env_extra
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, check=True)
    return done.stdout.strip()


def test_glibc_takes_the_cap_and_a_set_malloc_arena_max_is_left_alone():
    assert run({}) == "True"  # this machine's C library is glibc
    assert run({"MALLOC_ARENA_MAX": "4"}) == "False"
