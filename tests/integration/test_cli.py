"""The plugwatch command as a user runs it: broker, up (+ Ctrl-C), produce, sql."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from plugwatch.embedded import die_with_parent, free_port, port_open

from .conftest import TOKEN

REPO = Path(__file__).resolve().parents[2]


def plugwatch(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plugwatch", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(state) and not state.startswith("Z")


@pytest.fixture
def env(tmp_path: Path, access_file: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PLUGWATCH_APP_ID": f"cli-{tmp_path.name[-12:]}",
        "PLUGWATCH_BROKER_URL": f"kafka://127.0.0.1:{free_port()}",
        "PLUGWATCH_WEB_PORT": str(free_port()),
        "PLUGWATCH_DATA_DIR": str(tmp_path / "var"),
        "PLUGWATCH_ACCESS_FILE": str(access_file),
        "PLUGWATCH_TOKEN": TOKEN,
        "PLUGWATCH_BROKER_SESSION_TIMEOUT_S": "6",
    }


def wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_broker_prints_its_url_and_stops_on_sigterm(env):
    port = int(env["PLUGWATCH_BROKER_URL"].rsplit(":", 1)[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "plugwatch", "broker"], env=env, stdout=subprocess.PIPE, text=True,
        preexec_fn=die_with_parent, cwd=REPO,
    )
    try:
        assert proc.stdout.readline().strip() == f"kafka://127.0.0.1:{port}"
        assert port_open("127.0.0.1", port)
        tansu = children_of(proc.pid)
        assert tansu
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        wait_until(lambda: not any(alive(p) for p in tansu), 15, "broker process gone")
        assert not port_open("127.0.0.1", port)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_up_then_produce_then_sql_shows_masked_rows_and_ctrl_c_stops_everything(env):
    up = subprocess.Popen(
        [sys.executable, "-m", "plugwatch", "up", "-l", "info"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, preexec_fn=die_with_parent, cwd=REPO,
    )
    web = f"http://127.0.0.1:{env['PLUGWATCH_WEB_PORT']}/healthz"

    def healthy() -> bool:
        try:
            return httpx.get(web, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 90, "worker healthy", up)
        spawned = children_of(up.pid)
        assert len(spawned) == 2  # the broker and the worker

        produced = plugwatch("produce", "--now", "examples/replay/sample.jsonl", env=env)
        assert produced.returncode == 0, produced.stderr
        assert "produced 6 messages" in produced.stdout

        query = "SELECT plugin_id, message FROM plugwatch.telemetry_logs ORDER BY ts"
        rows = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and rows.count("\n") < 4:
            result = plugwatch("sql", query, env=env)
            assert result.returncode == 0, result.stderr
            rows = result.stdout
            time.sleep(0.5)
        assert "(3 rows)" in rows, rows
        assert "[MASKED:email]" in rows and "li.wei@example.com" not in rows
        assert "invoice-export" in rows and "report-render" in rows

        up.send_signal(signal.SIGINT)  # what Ctrl-C does to the foreground process
        assert up.wait(90) == 0
        wait_until(lambda: not any(alive(p) for p in spawned), 30, "broker and worker gone")
    finally:
        if up.poll() is None:
            up.kill()
