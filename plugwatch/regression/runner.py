"""Run a plugin's regression checks: commands as subprocesses, HTTP checks through httpx.

Checks run one after another. Every piece of output or error text is masked (``mask``, normally
``MaskingEngine.mask_text``) before it is kept, and only the last ``tail_bytes`` of output are kept
while it streams, so a check printing gigabytes costs no memory. A command past its timeout has its
whole process group killed (TERM, a short grace, KILL), grandchildren included.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from plugwatch.regression.config import Check, CommandCheck, HttpCheck

KILL_GRACE_S = 1.0
_DRAIN_GRACE_S = 2.0
_CHUNK = 65_536
_HTTP_BODY_CAP = 1_048_576
# Bytes kept before the tail: masking context when the tail starts inside one long line.
_MARGIN = 1024
NO_CHECKS_NOTE = ("no regression checks are configured for this plugin: add an entry to "
                  "config/plugins/regression.yaml (a fix is not accepted without checks)")


@dataclass(frozen=True)
class CheckResult:
    name: str
    kind: str  # "command" | "http"
    passed: bool
    exit_code: int | None
    timed_out: bool
    duration_ms: int
    output_tail: str  # masked
    error: str | None  # masked

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "TIMEOUT" if self.timed_out else "FAIL"


@dataclass(frozen=True)
class RegressionResult:
    passed: bool  # at least one check, and every check passed
    checks: tuple[CheckResult, ...]
    note: str | None = None

    def summary(self) -> str:
        """One line per check: verdict, name, exit code or error, duration."""
        if not self.checks:
            return f"FAIL  {self.note or 'no checks ran'}"
        lines = []
        for c in self.checks:
            code = f", exit {c.exit_code}" if c.exit_code is not None else ""
            line = f"{c.verdict:<7} {c.name}  ({c.kind}{code}, {c.duration_ms} ms)"
            if c.error:
                line += f": {c.error}"
            lines.append(line)
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "note": self.note, "checks": [asdict(c) for c in self.checks]}


async def run_checks(checks: Sequence[Check], values: Mapping[str, str], mask: Callable[[str], str], *,
                     tail_bytes: int = 4000, env: Mapping[str, str] | None = None,
                     http_transport: httpx.AsyncBaseTransport | None = None) -> RegressionResult:
    """Run ``checks`` with placeholders from ``values``; ``env`` is the worker's environment
    (default ``os.environ``) from which only the allow-listed names are passed on."""
    if not checks:
        return RegressionResult(False, (), NO_CHECKS_NOTE)
    values = {"python": sys.executable, **values}
    worker_env = os.environ if env is None else env
    safe = _safe_mask(mask)
    results = []
    for check in checks:
        if isinstance(check, CommandCheck):
            results.append(await _run_command(check.with_values(values), safe, tail_bytes, worker_env))
        else:
            results.append(await _run_http(check.with_values(values), safe, tail_bytes, http_transport))
    failed = sum(not r.passed for r in results)
    note = f"{failed} of {len(results)} checks failed" if failed else None
    return RegressionResult(failed == 0, tuple(results), note)


def _safe_mask(mask: Callable[[str], str]) -> Callable[[str], str]:
    def masked(text: str) -> str:
        try:
            return mask(text)
        except Exception:  # noqa: BLE001 - never keep text the masker could not vouch for
            return "[MASKED:error]"
    return masked


class _Tail:
    """The last ``limit`` bytes of a stream (plus a margin), and how much came before them."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.buf = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.buf += chunk
        keep = self.limit + _MARGIN
        if len(self.buf) > keep:
            del self.buf[:len(self.buf) - keep]

    def text(self, mask: Callable[[str], str]) -> str:
        """Masked tail of at most ``limit`` bytes of output, starting at a line boundary where there
        is one (a partial first line may hold half a secret the masker cannot recognise), after a
        marker line when output was cut."""
        data = bytes(self.buf)
        if self.total <= self.limit:
            return mask(data.decode("utf-8", "replace"))
        if not self.limit:
            return f"[... output cut: {self.total} bytes, none kept]"
        start = len(data) - self.limit
        newline = data.find(b"\n", start - 1, len(data) - 1)
        if newline >= 0:
            masked = mask(data[newline + 1:].decode("utf-8", "replace"))
        else:  # one long line: mask it with the margin as context, then cut
            masked = mask(data.decode("utf-8", "replace"))[-self.limit:]
        return f"[... output cut: the last {len(masked)} characters of {self.total} bytes]\n{masked}"


async def _run_command(check: CommandCheck, mask: Callable[[str], str], tail_bytes: int,
                       worker_env: Mapping[str, str]) -> CheckResult:
    started = time.monotonic()

    def result(passed: bool, exit_code: int | None, timed_out: bool, output: str, error: str | None) -> CheckResult:
        return CheckResult(check.name, "command", passed, exit_code, timed_out, _ms(started), output,
                           mask(error) if error else None)

    if not check.cwd.is_dir():
        return result(False, None, False, "", f"working directory {check.cwd} does not exist")
    try:
        proc = await asyncio.create_subprocess_exec(
            *check.argv, cwd=check.cwd, env=check.environment(worker_env), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    except OSError as exc:  # FileNotFoundError, PermissionError, NotADirectoryError ...
        reason = exc.strerror or str(exc)
        return result(False, None, False, "", f"cannot start {check.argv[0]!r}: {reason}")

    tail = _Tail(tail_bytes)
    reader = asyncio.create_task(_pump(proc.stdout, tail))
    waiter = asyncio.create_task(_exited(proc))
    timed_out = False
    try:
        done, _ = await asyncio.wait({waiter}, timeout=check.timeout_s)
        timed_out = not done
        # On timeout the whole group goes; after a normal exit, whatever it left in the background.
        await _stop_group(proc.pid)
        await waiter
        _, pending = await asyncio.wait({reader}, timeout=_DRAIN_GRACE_S)
        if pending:  # a process that left the group (setsid) still holds the pipe open
            reader.cancel()
            transport = getattr(proc, "_transport", None)
            if transport is not None:
                transport.close()
    except BaseException:
        _killpg(proc.pid, signal.SIGKILL)
        reader.cancel()
        waiter.cancel()
        raise
    exit_code = proc.returncode
    output = tail.text(mask)
    if timed_out:
        return result(False, exit_code, True, output, f"timed out after {check.timeout_s:g} s; process group killed")
    passed = exit_code == 0
    return result(passed, exit_code, False, output, None if passed else f"exited with code {exit_code}")


async def _exited(proc: asyncio.subprocess.Process) -> int:
    """The exit code once the process has exited. Unlike ``proc.wait()`` (Python 3.11), this does not
    also wait for every copy of the output pipe to close, which a background grandchild may hold."""
    delay = 0.005
    while proc.returncode is None:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
    return proc.returncode


async def _pump(stream: asyncio.StreamReader | None, tail: _Tail) -> None:
    if stream is None:
        return
    while chunk := await stream.read(_CHUNK):
        tail.add(chunk)


async def _stop_group(pgid: int) -> None:
    """SIGTERM the process group, give it ``KILL_GRACE_S`` to exit, then SIGKILL what is left."""
    if not _killpg(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + KILL_GRACE_S
    while time.monotonic() < deadline and _group_running(pgid):
        await asyncio.sleep(0.02)
    _killpg(pgid, signal.SIGKILL)


def _group_running(pgid: int) -> bool:
    """Whether a member of the group still runs. Zombies do not count: killed grandchildren wait
    for init to reap them, which some container inits do slowly."""
    proc = Path("/proc")
    if not proc.is_dir():
        return _killpg(pgid, 0)
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _killpg(pgid: int, sig: int) -> bool:
    """Signal the group; False when it has no members left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed user: nothing more this worker can do
        return False
    return True


async def _run_http(check: HttpCheck, mask: Callable[[str], str], tail_bytes: int,
                    transport: httpx.AsyncBaseTransport | None) -> CheckResult:
    started = time.monotonic()

    def result(passed: bool, timed_out: bool, output: str, error: str | None) -> CheckResult:
        return CheckResult(check.name, "http", passed, None, timed_out, _ms(started), output,
                           mask(error) if error else None)

    tail = _Tail(tail_bytes)
    body = bytearray()
    try:
        async with (asyncio.timeout(check.timeout_s),
                    httpx.AsyncClient(timeout=check.timeout_s, transport=transport) as client,
                    client.stream(check.method, check.url, headers=dict(check.headers)) as response):
            status = response.status_code
            async for chunk in response.aiter_bytes():
                tail.add(chunk)
                if len(body) < _HTTP_BODY_CAP:
                    body += chunk[:_HTTP_BODY_CAP - len(body)]
    except (TimeoutError, httpx.TimeoutException):
        error = f"{check.method} {check.url}: no answer within {check.timeout_s:g} s"
        return result(False, True, tail.text(mask), error)
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, ValueError, OSError) as exc:
        return result(False, False, "", f"{check.method} {check.url}: {type(exc).__name__}: {exc}")
    output = f"HTTP {status}\n{tail.text(mask)}"
    if status != check.expect_status:
        return result(False, False, output, f"expected status {check.expect_status}, got {status}")
    if check.expect_body is not None and check.expect_body not in body.decode("utf-8", "replace"):
        return result(False, False, output, f"response body does not contain {check.expect_body!r}")
    return result(True, False, output, None)


def _ms(started: float) -> int:
    return max(0, int((time.monotonic() - started) * 1000))
