"""glibc's malloc settings in a worker process (``plugwatch.memory``)."""

import os
import subprocess
import sys

CHECK = "import json; from plugwatch.memory import tune_malloc; print(json.dumps(tune_malloc()))"


def run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")} | env_extra
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, check=True)
    return done.stdout.strip()


def test_glibc_takes_both_settings_and_a_variable_set_for_one_leaves_that_one_alone():
    # this machine's C library is glibc
    assert run({}) == '{"arenas": true, "mmap_threshold": true}'
    assert run({"MALLOC_ARENA_MAX": "4"}) == '{"arenas": false, "mmap_threshold": true}'
    assert run({"MALLOC_MMAP_THRESHOLD_": "65536"}) == '{"arenas": true, "mmap_threshold": false}'
