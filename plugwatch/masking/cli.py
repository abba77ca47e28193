"""``plugwatch mask``: mask a JSON-lines stream with the service's own engine."""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from typing import BinaryIO, TextIO

from plugwatch.masking.engine import DEV_KEY, KEY_ENV, MaskingEngine
from plugwatch.masking.rules import RULES_ENV, RulesError
from plugwatch.masking.stats import MaskStats

_DESCRIPTION = """\
Mask a JSON-lines stream: one JSON object per line on stdin, the same object masked on stdout
(compact JSON). Invalid lines are reported on stderr with their line number and skipped, never
echoed. Uses the same rules and engine as the service, so this is how to test a rules change."""

_EPILOG = f"""\
rules:  --rules PATH, else ${RULES_ENV}, else config/security/data_masking_rules.yaml
key:    --key KEY, else ${KEY_ENV}, else the development key {DEV_KEY.decode()!r}. The key only
        matters for rules with style: hash (same value -> same token); use the production key
        to get the tokens the service writes.
exit:   0 when the input was read to the end (skipped lines included), 1 with --strict if any
        line was skipped or any value failed verification, 2 for bad arguments or rules."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plugwatch mask", description=_DESCRIPTION, epilog=_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", metavar="PATH", help="masking rules YAML")
    parser.add_argument("--key", metavar="KEY", help=f"HMAC key for hash-style tokens (default ${KEY_ENV} or the dev key)")
    parser.add_argument("--stats", action="store_true",
                        help="write per-detector counts, violations, events/s and MB/s to stderr at the end")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a line was skipped or a value failed verification")
    return parser


def _binary_in(stream: BinaryIO | TextIO | None) -> BinaryIO:
    stream = sys.stdin if stream is None else stream
    if isinstance(stream, io.TextIOBase) and hasattr(stream, "buffer"):
        return stream.buffer
    if isinstance(stream, io.TextIOBase):
        return io.BytesIO(stream.read().encode("utf-8", "surrogateescape"))
    return stream


def _binary_out(stream: BinaryIO | TextIO | None) -> BinaryIO:
    stream = sys.stdout if stream is None else stream
    if isinstance(stream, io.TextIOBase) and hasattr(stream, "buffer"):
        return stream.buffer
    if isinstance(stream, io.TextIOBase):
        return _TextSink(stream)
    return stream


class _TextSink(io.RawIOBase):
    """Lets a text stream (tests, StringIO) receive the bytes we write."""

    def __init__(self, text: TextIO) -> None:
        self.text = text

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.text.write(bytes(data).decode("utf-8"))
        return len(data)


def mask_main(argv: list[str] | None = None, stdin=None, stdout=None, stderr=None) -> int:
    err: TextIO = sys.stderr if stderr is None else stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage or help
        return int(exc.code or 0)
    key = args.key or os.environ.get(KEY_ENV) or DEV_KEY
    try:
        engine = MaskingEngine.from_file(args.rules, key.encode() if isinstance(key, str) else key)
    except RulesError as exc:
        err.write(f"plugwatch mask: {exc}\n")
        return 2
    source, sink = _binary_in(stdin), _binary_out(stdout)
    total = MaskStats()
    events = skipped = nbytes = 0
    started = time.perf_counter()
    try:
        for lineno, raw in enumerate(source, 1):
            nbytes += len(raw)
            line = raw.strip()
            if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            if not line:
                continue
            if not line.startswith(b"{"):
                err.write(f"plugwatch mask: line {lineno}: expected one JSON object per line; line skipped\n")
                skipped += 1
                continue
            try:
                out, stats = engine.mask_line(line)
            except ValueError as exc:
                err.write(f"plugwatch mask: line {lineno}: {exc}; line skipped (fix the JSON or drop the line)\n")
                skipped += 1
                continue
            if stats.dropped:
                err.write(f"plugwatch mask: line {lineno}: the masker failed on this event; written as {{}} (fail closed)\n")
            total += stats
            events += 1
            sink.write(out + b"\n")
        sink.flush()
    except BrokenPipeError:
        return 0
    elapsed = max(time.perf_counter() - started, 1e-9)
    if args.stats:
        _write_stats(err, total, events, skipped, nbytes, elapsed, engine.backend)
    if args.strict and (skipped or total.flagged):
        return 1
    return 0


def _write_stats(err: TextIO, stats: MaskStats, events: int, skipped: int, nbytes: int, elapsed: float, backend: str) -> None:
    err.write(f"masked events: {events}  skipped lines: {skipped}  scanner: {backend}\n")
    for name, n in sorted(stats.counts.items(), key=lambda kv: (-kv[1], kv[0])):
        err.write(f"  {name:<20} {n}\n")
    err.write(f"violations: {stats.violations}  dropped: {stats.dropped}\n")
    err.write(f"throughput: {events / elapsed:.0f} events/s  {nbytes / elapsed / 1e6:.1f} MB/s  ({elapsed:.2f} s)\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(mask_main())
