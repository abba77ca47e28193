"""The regression runner against real subprocesses, a real HTTP server and the real masking engine."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from plugwatch.masking import load_engine
from plugwatch.regression.config import CommandCheck, HttpCheck, RegressionConfig
from plugwatch.regression.runner import RegressionResult, run_checks

REPO = Path(__file__).resolve().parents[2]
MASK = load_engine(path=REPO / "config" / "security" / "data_masking_rules.yaml").mask_text
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzdmMtcGF5bWVudHMiLCJpYXQiOjE3MDAwMDAwMDB9"
       ".c2lnbmF0dXJlLW9mLXRoZS10b2tlbi1oZXJlLTEyMzQ1Njc")
VALUES = {"tenant_id": "acme", "plugin_id": "pay", "version": "3.2.2", "commit": "abc123", "alert_id": "al-1"}


def py(code: str, name: str = "py", timeout_s: float = 30, **kw) -> CommandCheck:
    return CommandCheck(name=name, argv=("{python}", "-c", code), cwd=REPO, timeout_s=timeout_s, **kw)


async def run(*checks, **kw) -> RegressionResult:
    return await run_checks(list(checks), VALUES, MASK, **kw)


async def gone(pid: int, within_s: float = 10.0) -> bool:
    """True once ``pid`` no longer runs (absent, or a zombie waiting for init to reap it)."""
    for _ in range(int(within_s / 0.05)):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except (FileNotFoundError, IndexError):
            return True
        await asyncio.sleep(0.05)
    return False


async def read_pid(path: Path) -> int:
    for _ in range(200):
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} was never written")


@asynccontextmanager
async def http_server() -> AsyncIterator[str]:
    async def health(request: web.Request) -> web.Response:
        return web.Response(text="status: ok")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="db error: password=hunter2 Authorization: Bearer " + JWT)

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"method": request.method, "x_alert": request.headers.get("X-Alert")})

    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="too late")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/slow", slow)
    app.router.add_get("/broken", broken)
    app.router.add_route("*", "/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        release.set()
        await runner.cleanup()


async def test_http_check_past_its_timeout_times_out():
    async with http_server() as base:
        result = await run(HttpCheck(name="slow", url=f"{base}/slow", timeout_s=0.3))
    (check,) = result.checks
    assert not result.passed and check.timed_out and "no answer within 0.3 s" in check.error
    assert "TIMEOUT" in result.summary()


# Commands --------------------------------------------------------------------------------------


async def test_a_command_that_exits_zero_passes():
    result = await run(py("print('all good')", name="ok"))
    assert result.passed and result.note is None
    (check,) = result.checks
    assert (check.name, check.kind, check.passed, check.exit_code, check.timed_out) == ("ok", "command", True, 0, False)
    assert check.output_tail == "all good\n" and check.error is None and check.duration_ms >= 0
    assert "PASS" in result.summary() and "ok" in result.summary()


async def test_a_failing_command_keeps_the_failing_line_and_masks_its_secrets():
    code = ("import sys\n"
            "print('connecting to postgres://svc:hunter2@db:5432/pay')\n"
            f"print('Authorization: Bearer {JWT}', file=sys.stderr)\n"
            "print('AssertionError: settlement expected SETTLED, got TIMEOUT')\n"
            "sys.exit(3)\n")
    result = await run(py(code, name="suite"))
    assert not result.passed and result.note == "1 of 1 checks failed"
    (check,) = result.checks
    assert check.exit_code == 3 and not check.timed_out and "exited with code 3" in check.error
    assert "AssertionError: settlement expected SETTLED, got TIMEOUT" in check.output_tail
    assert "connecting to postgres://svc:" in check.output_tail  # stderr is merged, lines kept
    for secret in ("hunter2", JWT, JWT.split(".")[1]):
        assert secret not in check.output_tail
        assert secret not in json.dumps(result.as_dict())
    assert "FAIL" in result.summary() and "exit 3" in result.summary()


async def test_timeout_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    check = CommandCheck(name="hangs", argv=("sh", "-c", f"sleep 300 & echo $! > {pid_file}; echo started; sleep 300"),
                         cwd=tmp_path, timeout_s=0.5)
    result = await run(check)
    (res,) = result.checks
    assert not result.passed and res.timed_out and not res.passed
    assert "timed out" in res.error and "TIMEOUT" in result.summary()
    assert "started" in res.output_tail
    assert await gone(await read_pid(pid_file))


async def test_timeout_escalates_to_kill_when_term_is_ignored(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    script = f"trap '' TERM; sleep 300 & echo $! > {pid_file}; wait"
    result = await run(CommandCheck(name="stubborn", argv=("sh", "-c", script), cwd=tmp_path, timeout_s=0.5))
    (res,) = result.checks
    assert res.timed_out and not result.passed
    assert await gone(await read_pid(pid_file))


async def test_background_leftovers_of_a_finished_command_are_killed(tmp_path):
    pid_file = tmp_path / "leftover.pid"
    check = CommandCheck(name="leaves", argv=("sh", "-c", f"sleep 300 & echo $! > {pid_file}; echo done"),
                         cwd=tmp_path, timeout_s=10)
    result = await run(check)
    assert result.passed and not result.checks[0].timed_out and "done" in result.checks[0].output_tail
    assert await gone(await read_pid(pid_file))


async def test_only_allow_listed_environment_reaches_the_command():
    code = ("import os; names = ('ALLOWED', 'HIDDEN', 'FIXED', 'PATH')\n"
            "print(sorted(k for k in os.environ if k in names), os.environ.get('ALLOWED'), os.environ.get('FIXED'))")
    check = py(code, env=("ALLOWED",), set_env=(("FIXED", "{tenant_id}-{version}"),))
    worker_env = {"PATH": os.environ["PATH"], "ALLOWED": "visible", "HIDDEN": "invisible"}
    result = await run(check, env=worker_env)
    assert result.passed
    out = result.checks[0].output_tail
    assert "['ALLOWED', 'FIXED', 'PATH'] visible acme-3.2.2" in out
    assert "invisible" not in out


async def test_the_worker_environment_is_not_inherited_by_default(monkeypatch):
    monkeypatch.setenv("PLUGWATCH_TEST_SECRET_VAR", "should-not-leak")
    result = await run(py("import os; print(os.environ.get('PLUGWATCH_TEST_SECRET_VAR'))"))
    assert result.passed and result.checks[0].output_tail.strip() == "None"


async def test_huge_output_keeps_only_the_tail():
    code = ("import sys\nfor i in range(200_000): sys.stdout.write(f'line {i:06d} of noisy output\\n')\n"
            "print('LAST LINE')")
    result = await run(py(code), tail_bytes=2000)
    tail = result.checks[0].output_tail
    assert result.passed
    assert tail.endswith("LAST LINE\n") and "line 199999 of noisy output" in tail
    assert "line 000000" not in tail and "output cut" in tail
    assert len(tail) <= 2000 + 100
    body = tail.split("\n", 1)[1]
    assert body.startswith("line ")  # the partial first line was dropped


async def test_one_huge_line_is_cut_after_masking_so_no_secret_survives():
    code = "import sys; sys.stdout.write('A' * 100_000 + ' postgres://svc:hunter2@db:5432/pay END')"
    result = await run(py(code), tail_bytes=2000)
    tail = result.checks[0].output_tail
    assert result.passed and tail.endswith("@db:5432/pay END") and "hunter2" not in tail
    assert len(tail) <= 2000 + 100


async def test_missing_executable_and_missing_cwd_fail_with_a_clear_error(tmp_path):
    (tmp_path / "plain.txt").write_text("not a program")
    result = await run(
        CommandCheck(name="nope", argv=("/nonexistent/bin/check-suite",), cwd=tmp_path),
        CommandCheck(name="not-on-path", argv=("plugwatch-no-such-binary-xyz",), cwd=tmp_path),
        CommandCheck(name="not-executable", argv=(str(tmp_path / "plain.txt"),), cwd=tmp_path),
        CommandCheck(name="no-dir", argv=("true",), cwd=tmp_path / "missing"),
    )
    assert not result.passed and result.note == "4 of 4 checks failed"
    nope, not_on_path, not_executable, no_dir = result.checks
    assert "cannot start '/nonexistent/bin/check-suite'" in nope.error and nope.exit_code is None
    assert "cannot start 'plugwatch-no-such-binary-xyz'" in not_on_path.error
    assert "cannot start" in not_executable.error and "Permission denied" in not_executable.error
    assert "working directory" in no_dir.error and "does not exist" in no_dir.error
    assert all(not c.timed_out for c in result.checks)


async def test_no_checks_is_a_failure_with_a_note():
    result = await run_checks([], VALUES, MASK)
    assert not result.passed and result.checks == ()
    assert "no regression checks" in result.note and "regression.yaml" in result.summary()


async def test_checks_run_in_order_and_all_must_pass():
    result = await run(py("print(1)", name="a"), py("raise SystemExit(1)", name="b"), py("print(3)", name="c"))
    assert [c.name for c in result.checks] == ["a", "b", "c"]
    assert [c.passed for c in result.checks] == [True, False, True] and not result.passed
    data = result.as_dict()
    assert data["passed"] is False and [c["name"] for c in data["checks"]] == ["a", "b", "c"]
    json.dumps(data)


# HTTP ------------------------------------------------------------------------------------------


async def test_http_checks_pass_and_fail_on_status_body_and_connection():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    async with http_server() as base:
        result = await run(
            HttpCheck(name="health", url=f"{base}/health", expect_body="status: ok"),
            HttpCheck(name="status", url=f"{base}/broken"),
            HttpCheck(name="body", url=f"{base}/health", expect_body="status: degraded"),
            HttpCheck(name="refused", url=f"http://127.0.0.1:{closed_port}/health", timeout_s=2),
            HttpCheck(name="expected-500", url=f"{base}/broken", expect_status=500),
            HttpCheck(name="echo", url=f"{base}/echo", method="POST", headers=(("X-Alert", "{alert_id}"),),
                      expect_body='"x_alert": "al-1"'),
        )
    health, status, body, refused, expected_500, echo = result.checks
    assert health.passed and health.kind == "http" and health.error is None
    assert "HTTP 200" in health.output_tail and "status: ok" in health.output_tail
    assert not status.passed and "expected status 200, got 500" in status.error
    assert "db error" in status.output_tail and "hunter2" not in status.output_tail and JWT not in status.output_tail
    assert not body.passed and "does not contain 'status: degraded'" in body.error
    assert not refused.passed and not refused.timed_out and "ConnectError" in refused.error
    assert expected_500.passed
    assert echo.passed, echo.error
    assert not result.passed and result.note == "3 of 6 checks failed"


# The shipped config and example ---------------------------------------------------------------


async def test_shipped_payment_gateway_check_passes_on_the_fixed_version_and_fails_before_it():
    config = RegressionConfig.from_file(REPO / "config" / "plugins" / "regression.yaml")
    checks = config.checks_for("acme", "payment-gateway")
    fixed = await run_checks(checks, {**VALUES, "plugin_id": "payment-gateway", "version": "3.2.2"}, MASK)
    assert fixed.passed, fixed.summary()
    assert "3 passed, 0 failed" in fixed.checks[0].output_tail

    broken = await run_checks(checks, {**VALUES, "plugin_id": "payment-gateway", "version": "3.2.1"}, MASK)
    assert not broken.passed
    (check,) = broken.checks
    assert check.exit_code == 1
    assert "AssertionError: settlement retry gave up after 2 attempts" in check.output_tail
    assert "using settlement dsn postgres://svc:" in check.output_tail
    assert "hunter2" not in check.output_tail and "hunter2" not in json.dumps(broken.as_dict())
