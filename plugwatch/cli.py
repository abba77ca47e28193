"""The ``plugwatch`` command: Faust's command line (``plugwatch worker`` …) plus plugwatch's own.

Own commands: broker, up, demo, produce, sql, mask, bench. Anything else goes to Faust's CLI with the
plugwatch app loaded, as ``faust -A plugwatch.app …`` would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from plugwatch.settings import get_settings

OWN_COMMANDS = {"broker", "up", "produce", "sql", "mask", "bench", "demo", "audit", "runtime-sim"}
DEV_TOKEN = "plugwatch-dev-token"


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Faust's commands work too, with the plugwatch app loaded: "
    "plugwatch worker [-l info] [--web-port N], plugwatch agents, plugwatch tables, … "
    "(plugwatch worker --help).",
)
def cli() -> None:
    """plugwatch: masked telemetry, diagnostics and suspensions for a plugin platform."""


def _wait_for_stop_signal(poll: list[subprocess.Popen[bytes]]) -> int | None:
    """Block until SIGINT/SIGTERM (returns None) or until a watched child exits (returns its code)."""
    stop = {"signal": False}

    def _handler(signum: int, frame: object) -> None:
        stop["signal"] = True

    previous = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop["signal"]:
            for proc in poll:
                code = proc.poll()
                if code is not None:
                    return code
            time.sleep(0.2)
        return None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _start_embedded_broker():  # -> EmbeddedBroker
    from plugwatch.embedded import EmbeddedBroker

    settings = get_settings()
    host, port = settings.broker_host_port
    broker = EmbeddedBroker(host, port, log_path=settings.data_dir / "broker.log")
    return broker.start()


@cli.command()
def broker() -> None:
    """Start the embedded Tansu broker on broker_url's host:port, print its URL, run until Ctrl-C."""
    from plugwatch.embedded import BrokerError

    try:
        embedded = _start_embedded_broker()
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(embedded.url, nl=True)
    sys.stdout.flush()
    try:
        code = _wait_for_stop_signal([embedded.process])
        if code is not None:
            raise click.ClickException(f"the broker exited with code {code}")
    finally:
        embedded.stop()


@cli.command()
@click.option("-l", "--loglevel", default="info", show_default=True, help="worker log level")
def up(loglevel: str) -> None:
    """Embedded broker (unless embedded_broker is false) and a worker, in the foreground.

    Ctrl-C (or SIGTERM) stops the worker, then the broker; nothing is left running.
    """
    from plugwatch.embedded import BrokerError, die_with_parent, stop_process

    settings = get_settings()
    embedded = None
    if settings.embedded_broker:
        try:
            embedded = _start_embedded_broker()
        except BrokerError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"embedded broker: {embedded.url}")
    env = {**os.environ, "PLUGWATCH_BROKER_URL": settings.broker_url}
    # Own session: a terminal's Ctrl-C reaches only this process, which stops the worker before the
    # broker; die_with_parent stops the worker even if this process is killed outright.
    worker = subprocess.Popen(
        [sys.executable, "-m", "plugwatch", "worker", "-l", loglevel],
        env=env,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    watched = [worker] + ([embedded.process] if embedded else [])
    code = 0
    try:
        exited = _wait_for_stop_signal(watched)
        if exited is not None:
            code = exited or 1
            click.echo(f"a component exited (code {exited}); stopping", err=True)
    finally:
        stop_process(worker)
        if embedded is not None:
            embedded.stop()
    sys.exit(code)


@cli.command()
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--create-topics/--no-create-topics", default=True, show_default=True,
              help="create the service's topics (and the file's) with the configured partitions first")
@click.option("--now", "shift_now", is_flag=True,
              help="shift every ts/start_ts/end_ts (and OTLP *UnixNano) by one delta so the newest is now")
def produce(file: str, create_topics: bool, shift_now: bool) -> None:
    """Publish a JSON-lines replay file: one {"topic", "key", "value"[, "headers"]} per line.

    An object or array value is sent as JSON, a string as its UTF-8 text. FILE may be - for stdin.
    """
    from plugwatch.replay import ReplayError, produce_file

    try:
        now_ms = int(time.time() * 1000) if shift_now else None
        report = asyncio.run(produce_file(file, get_settings(), create_topics=create_topics, now_ms=now_ms))
    except ReplayError as exc:
        raise click.ClickException(str(exc)) from exc
    for line_no, error in report.errors:
        click.echo(f"{file}:{line_no}: {error}", err=True)
    per_topic = ", ".join(f"{t}={n}" for t, n in sorted(report.per_topic.items()))
    click.echo(f"produced {report.sent} messages ({per_topic})")
    if report.errors:
        sys.exit(1)


@cli.command()
@click.argument("query")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@click.option("--token", envvar="PLUGWATCH_TOKEN", default=DEV_TOKEN, show_default="$PLUGWATCH_TOKEN or the dev token")
def sql(query: str, as_json: bool, token: str) -> None:
    """Run a read-only query on plugwatch's ClickHouse (through the running worker if there is one)."""
    from plugwatch.sqlquery import SqlError, format_table, run_query

    try:
        columns, rows = asyncio.run(run_query(query, get_settings(), token))
    except SqlError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        import orjson

        click.echo(orjson.dumps({"columns": columns, "rows": rows}, default=str).decode())
    else:
        click.echo(format_table(columns, rows))


@cli.command()
@click.option("--scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="JSON lines {topic, key, value} [default: examples/scenarios/incident.jsonl]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-out"),
              show_default=True, help="where the reports, summary.json and other outputs go")
@click.option("--timeout", default=120.0, show_default=True, help="seconds to wait for every alert's report")
@click.option("--token", envvar="PLUGWATCH_TOKEN", default=DEV_TOKEN, show_default="$PLUGWATCH_TOKEN or the dev token")
def demo(scenario: Path | None, out: Path, timeout: float, token: str) -> None:
    """Run a scenario end to end: broker and worker (unless running), publish, wait for reports, collect.

    Times in the scenario are shifted so its newest record is now. Everything the demo started is
    stopped at the end, on Ctrl-C and on errors.
    """
    from plugwatch.demo import DemoError, Terminated, run_demo

    try:
        result = run_demo(scenario, out, timeout, token)
    except DemoError as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt as exc:
        click.echo("interrupted; everything the demo started is stopped", err=True)
        sys.exit(143 if isinstance(exc, Terminated) else 130)
    for alert_id, alert in result.summary["alerts"].items():
        click.echo(f"{alert_id}: report {alert['report_id']} revision {alert['revision']}, "
                   f"built {alert['report_latency_ms']} ms after the alert was consumed")
        if alert.get("status"):
            click.echo(f"{alert_id}: {alert['status']}, ticket {alert.get('ticket_id')} {alert.get('ticket_url') or ''}".rstrip())
    for signal_id, risk in result.summary["risk_signals"].items():
        click.echo(f"{signal_id}: {risk['state']}")
    first = next(iter(result.report_files.values()), None)
    if first:
        click.echo(f"report: {first['html']}")
        click.echo(f"        {first['json']}")
    if (result.summary_path.parent / "tickets.jsonl").exists():
        click.echo(f"tickets: {result.summary_path.parent / 'tickets.jsonl'}")
    click.echo(f"summary: {result.summary_path}")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                               "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def mask(args: tuple[str, ...]) -> None:
    """Mask a JSON-lines file with the masking engine: plugwatch mask [--rules PATH] [--stats] < in > out"""
    from plugwatch.masking.cli import mask_main

    sys.exit(mask_main(list(args)))


@cli.group()
def bench() -> None:
    """Benchmarks that print figures (not part of the tests)."""


@bench.command("ingest")
@click.option("--events", default=100_000, show_default=True, help="events to produce")
@click.option("--plugins", default=500, show_default=True, help="distinct tenant/plugin keys")
def bench_ingest(events: int, plugins: int) -> None:
    """Ingest path end to end on one worker vs a bare Faust agent vs raw aiokafka consume."""
    from plugwatch.bench.ingest import run

    click.echo(run(events=events, plugins=plugins))


@bench.command("window")
@click.option("--seconds", default=120.0, show_default=True, help="measured run with windows")
@click.option("--plugins", default=5000, show_default=True, help="active tenant/plugin keys")
@click.option("--baseline-seconds", default=60.0, show_default=True,
              help="first, the same load without windows (0 to skip)")
def bench_window(seconds: float, plugins: int, baseline_seconds: float) -> None:
    """Ingest with per-plugin windows: events/s and worker RSS, against a run without windows."""
    from plugwatch.bench.window import run

    click.echo(run(seconds=seconds, plugins=plugins, baseline_seconds=baseline_seconds))


@bench.command("report")
@click.option("--alerts", default=200, show_default=True, help="alerts sent while the load runs")
@click.option("--alert-rate", default=5.0, show_default=True, help="alerts per second")
@click.option("--rate", default=6000.0, show_default=True, help="telemetry events/s produced as load")
@click.option("--plugins", default=500, show_default=True, help="tenant/plugin keys of the load")
def bench_report(alerts: int, alert_rate: float, rate: float, plugins: int) -> None:
    """p50/p99 alert -> report latency while the same worker ingests the load."""
    from plugwatch.bench.report import run

    click.echo(run(alerts=alerts, alert_rate=alert_rate, rate=rate, plugins=plugins))


@bench.command("suspend")
@click.option("--requests", default=100, show_default=True, help="concurrent requests, one plugin each")
def bench_suspend(requests: int) -> None:
    """p50/p99 request -> command latency of concurrent suspension requests (auto-approve policy)."""
    from plugwatch.bench.suspend import run

    click.echo(run(requests=requests))


@bench.command("mask")
@click.option("--events", default=20_000, show_default=True)
def bench_mask(events: int) -> None:
    """Masking engine MB/s and events/s vs an orjson round trip of the same lines."""
    from plugwatch.masking.bench import bench_mask as run_mask_bench

    line = run_mask_bench(events=events)
    if line:
        click.echo(line)


@cli.command("runtime-sim")
@click.option("--delay-ms", default=50, show_default=True, help="how long the runtime takes to answer a command")
@click.option("--failure-rate", "failure_rates", multiple=True, metavar="ACTION=P",
              help="probability that ACTION (suspend, force_suspend, resume, lock) fails, e.g. force_suspend=0.2")
@click.option("--silent", multiple=True, type=click.Choice(["suspend", "force_suspend", "resume", "lock"]),
              help="never answer this action (a runtime that does not drain)")
@click.option("--group", default="plugwatch-runtime-sim", show_default=True, help="consumer group")
@click.option("--seed", type=int, default=None, help="random seed for the failures")
def runtime_sim(delay_ms: int, failure_rates: tuple[str, ...], silent: tuple[str, ...], group: str,
                seed: int | None) -> None:
    """Play the plugin runtime: answer plugin.suspend.command on plugin.suspend.ack (Ctrl-C stops)."""
    from plugwatch.suspension.runtime_sim import SimBehaviour, run_sim

    rates = {}
    for item in failure_rates:
        action, _, value = item.partition("=")
        try:
            rates[action] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected ACTION=P, e.g. force_suspend=0.2") from None
    settings = get_settings()
    behaviour = SimBehaviour(delay_ms=delay_ms, failure_rates=rates, silent=frozenset(silent))
    click.echo(f"runtime-sim: answering {settings.topics.suspend_command} on {settings.topics.suspend_ack} "
               f"({settings.bootstrap_servers})", err=True)
    try:
        asyncio.run(run_sim(settings.bootstrap_servers, settings.topics.suspend_command, settings.topics.suspend_ack,
                            behaviour, group_id=group, seed=seed))
    except KeyboardInterrupt:
        pass


@cli.group()
def audit() -> None:
    """The audit trail (plugin.audit, ClickHouse audit_log)."""




@audit.command("verify")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="an audit.jsonl (one record per line, as on plugin.audit) instead of ClickHouse audit_log")
@click.option("--chain", default=None, help="verify only this chain (one writer's)")
@click.option("--allow-aged-out", is_flag=True,
              help="chains may start after seq 1 (oldest rows removed by retention); their oldest row is trusted")
@click.option("--token", envvar="PLUGWATCH_TOKEN", default=DEV_TOKEN, show_default="$PLUGWATCH_TOKEN or the dev token")
def audit_verify(path: Path | None, chain: str | None, allow_aged_out: bool, token: str) -> None:
    """Check the hash chains: exit 0 when intact, 1 naming each broken chain's first bad row, 2 when
    the rows cannot be read. Without --file: ClickHouse, through the running worker if it holds chDB."""
    from plugwatch.audit.verify import (
        AuditReadError,
        load_from_settings,
        read_jsonl,
        verify_rows,
    )

    try:
        if path is not None:
            rows = read_jsonl(path)
            if chain is not None:
                rows = [row for row in rows if row.get("chain") == chain]
        else:
            rows = asyncio.run(load_from_settings(get_settings(), token, chain))
    except AuditReadError as exc:
        click.echo(f"audit: {exc}", err=True)
        sys.exit(2)
    if chain is not None and not rows:
        click.echo(f"audit: no records of chain {chain}", err=True)
        sys.exit(1)
    report = verify_rows(rows, allow_aged_out=allow_aged_out)
    for problem in report.problems:
        click.echo(f"{problem.chain}  seq {problem.seq}  {problem.audit_id or '-'}  {problem.what}")
    click.echo(report.summary())
    sys.exit(0 if report.ok else 1)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in OWN_COMMANDS or args[0] in ("-h", "--help"):
        cli.main(args=args, prog_name="plugwatch")
        return
    from plugwatch.memory import tune_malloc

    tune_malloc()  # a Faust command (the worker): before chDB and the others start threads
    from plugwatch.app import app

    sys.argv = ["plugwatch", *args]
    app.main()


if __name__ == "__main__":  # pragma: no cover
    main()
