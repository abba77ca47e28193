"""Stand-in for payment-gateway's regression suite (stdlib only), run from config/plugins/regression.yaml.

The bug: settlement gave up after one retry while the database failed over. The fix (3.2.2) retries
with exponential backoff. Exit 0 when every assertion holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import sys

# A credential in the output on purpose: the caller masks output before it reaches a ticket.
DSN = "postgres://svc:hunter2@db:5432/pay"
FIXED_IN = (3, 2, 2)


class FlakyConnection:
    """A database connection that fails ``failures`` times, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def execute(self, sql: str) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"connection to {DSN.split('@')[1]} reset (attempt {self.calls})")
        return "SETTLED"


def settle(conn: FlakyConnection, attempts: int, delays: list[float], base_s: float = 0.05) -> str:
    """Settle the batch, retrying with exponential backoff; ``delays`` records the waits (not slept)."""
    for attempt in range(attempts):
        try:
            return conn.execute("UPDATE settlements SET state = 'settled' WHERE batch = 42")
        except ConnectionError:
            if attempt == attempts - 1:
                raise
            delays.append(base_s * 2 ** attempt)
    raise AssertionError("unreachable")


def parse_version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.removeprefix("v").split("."))
    except ValueError:
        raise SystemExit(f"--version must look like 3.2.2, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", required=True)
    version = parse_version(parser.parse_args(argv).version)
    attempts = 3 if version >= FIXED_IN else 2  # what each release shipped
    print(f"payment-gateway {'.'.join(map(str, version))}: settlement regression suite")
    print(f"using settlement dsn {DSN}")
    failed = 0
    checks = [
        ("settles on a healthy connection", FlakyConnection(0), "SETTLED", 1),
        ("settles after one transient failure", FlakyConnection(1), "SETTLED", 2),
        ("settles after two transient failures (db failover)", FlakyConnection(2), "SETTLED", 3),
    ]
    for title, conn, expected, calls in checks:
        delays: list[float] = []
        try:
            outcome = settle(conn, attempts, delays)
            assert outcome == expected, f"expected {expected}, got {outcome}"
            assert conn.calls == calls, f"expected {calls} calls, got {conn.calls}"
            assert all(b > a for a, b in itertools.pairwise(delays)), f"backoff not increasing: {delays}"
            print(f"ok   {title} (backoff {delays})")
        except (AssertionError, ConnectionError) as exc:
            failed += 1
            print(f"FAIL {title}: AssertionError: settlement retry gave up after {conn.calls} attempts: {exc}")
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
