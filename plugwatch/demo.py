"""``plugwatch demo``: run a scenario through the whole service and collect what comes out.

Brings up the embedded stack (broker, worker with its chDB) unless settings point at running ones,
publishes the scenario (JSON lines ``{"topic", "key", "value"}``, times shifted so its newest is
now, DESIGN topic names mapped to the configured ones), waits with a progress display until every
alert has a report (and, once suspension exists, every risk signal a final state); fix submissions
are held until the alert they fix has its ticket, then published, and their regression's outcome
awaited. Then it writes ``<out>/reports/<alert_id>.json|.html``, ``<out>/tickets.jsonl``,
``<out>/summary.json`` and the other outputs that exist, and stops what it started.

What is pure here (topic mapping, scenario reading, waiters, the summary) is unit-tested; the rest
is wiring around the broker, the worker process and its HTTP API.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson

from plugwatch.settings import REPO_ROOT, Settings, Topics, get_settings

DEFAULT_SCENARIO = REPO_ROOT / "examples" / "scenarios" / "incident.jsonl"
WORKER_START_TIMEOUT_S = 120.0
SETTLE_S = 2.0  # after the last report: quiet this long before collecting (late-data revisions)
IDLE_S = 1.5  # topics counted once nothing new arrived for this long
MAX_TAIL_S = 20.0  # cap on each of the two waits above
INGEST_WAIT_S = 30.0  # cap on waiting for the telemetry to be masked before an alert
DATA_MARKER = ".plugwatch-demo"  # marks <out>/data as the demo's own, safe to clear

# Outputs besides the reports: file -> Topics field it is read from (None: not built yet).
OUTPUT_TOPICS: dict[str, str | None] = {
    "tickets.jsonl": None,  # read from GET /api/tickets, not a topic
    "commands.jsonl": "suspend_command",
    "evidence.jsonl": "evidence",
    "audit.jsonl": "audit",
}


class DemoError(RuntimeError):
    """Something the user has to fix or know about; the message says what."""


# -- scenario (pure) -------------------------------------------------------------------------------


def topic_map(configured: Topics) -> dict[str, str]:
    """DESIGN default topic name -> configured name, for every topic of the service."""
    defaults = Topics()
    return {getattr(defaults, name): getattr(configured, name) for name in Topics.model_fields}


def map_topics(entries: Iterable[dict[str, Any]], mapping: Mapping[str, str]) -> list[dict[str, Any]]:
    """Entries with their topic renamed; topics the service does not know pass unchanged."""
    return [{**entry, "topic": mapping.get(entry["topic"], entry["topic"])} for entry in entries]


def load_scenario(path: Path) -> list[dict[str, Any]]:
    """The scenario's entries; DemoError names every bad line (nothing is published then)."""
    from plugwatch.replay import parse_entry

    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise DemoError(f"cannot read the scenario {path}: {exc}") from exc
    entries, errors = [], []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
            parse_entry(entry)
        except orjson.JSONDecodeError as exc:
            errors.append(f"{path}:{line_no}: not JSON ({exc})")
            continue
        except ValueError as exc:
            errors.append(f"{path}:{line_no}: {exc}")
            continue
        entries.append(entry)
    if errors:
        raise DemoError("the scenario has bad lines:\n" + "\n".join(errors[:20]))
    if not entries:
        raise DemoError(f"the scenario {path} is empty")
    return entries


def tag_ids(entries: Iterable[dict[str, Any]], topics: Topics, suffix: str) -> list[dict[str, Any]]:
    """Alert and risk-signal ids (and the alert ids fixes refer to) with ``suffix`` appended.

    A worker that already ran the scenario holds its reports: the same alert id again would be taken
    for a redelivery of the old alert, not for this run's."""
    fields = {topics.alerts: "alert_id", topics.fix_submitted: "alert_id", topics.risk_signals: "signal_id"}
    out = []
    for entry in entries:
        name, value = fields.get(entry["topic"]), entry.get("value")
        if name and isinstance(value, dict) and value.get(name):
            entry = {**entry, "value": {**value, name: f"{value[name]}{suffix}"}}
        out.append(entry)
    return out


@dataclass
class Scenario:
    entries: list[dict[str, Any]]  # topics already mapped to the configured names
    alerts: dict[str, dict[str, Any]]  # alert_id -> alert
    risk_signals: dict[str, dict[str, Any]]  # signal_id -> risk signal
    fixes: dict[str, dict[str, Any]] = field(default_factory=dict)  # alert_id -> fix submission

    @classmethod
    def from_entries(cls, entries: list[dict[str, Any]], topics: Topics) -> Scenario:
        alerts, signals, fixes = {}, {}, {}
        for entry in entries:
            value = entry.get("value")
            if not isinstance(value, dict):
                continue
            if entry["topic"] == topics.alerts and value.get("alert_id"):
                alerts[str(value["alert_id"])] = value
            elif entry["topic"] == topics.risk_signals and value.get("signal_id"):
                signals[str(value["signal_id"])] = value
            elif entry["topic"] == topics.fix_submitted and value.get("alert_id"):
                fixes[str(value["alert_id"])] = value
        return cls(entries, alerts, signals, fixes)

    def count(self, *topics: str) -> int:
        return sum(1 for entry in self.entries if entry["topic"] in topics)


# -- what came out (pure) --------------------------------------------------------------------------


@dataclass
class Observed:
    """Everything consumed from the service's topics since ``since_ms`` (older records are ignored)."""

    topics: Topics
    alert_ids: set[str]
    since_ms: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)  # alert_id -> latest revision
    records: dict[str, list[Any]] = field(default_factory=dict)  # topic -> values, for the outputs
    last_record_at: float = 0.0  # monotonic
    last_report_at: float = 0.0
    alert_states: dict[str, dict[str, Any]] = field(default_factory=dict)  # alert_id -> lifecycle (API)
    completions: list[dict[str, Any]] = field(default_factory=list)  # plugin.suspend.completed records

    def add(self, topic: str, value: bytes | None, timestamp_ms: int | None, now: float) -> None:
        if timestamp_ms is not None and 0 < timestamp_ms < self.since_ms:
            return  # from before this run (a broker that was already running)
        self.counts[topic] += 1
        self.last_record_at = now
        kept = {getattr(self.topics, name) for name in OUTPUT_TOPICS.values() if name}
        if topic != self.topics.debug_report and topic != self.topics.suspend_completed and topic not in kept:
            return
        try:
            decoded = orjson.loads(value) if value else None
        except orjson.JSONDecodeError:
            decoded = (value or b"").decode("utf-8", "replace")
        if topic in kept:
            self.records.setdefault(topic, []).append(decoded)
        if topic == self.topics.debug_report and isinstance(decoded, dict):
            self.add_report(decoded, now)
        if topic == self.topics.suspend_completed and isinstance(decoded, dict):
            self.completions.append(decoded)

    def add_report(self, report: dict[str, Any], now: float) -> None:
        alert_id = str(report.get("alert_id"))
        if alert_id not in self.alert_ids:
            return
        held = self.reports.get(alert_id)
        if held is None or _revision(report) >= _revision(held):
            self.reports[alert_id] = report
            self.last_report_at = now


def _revision(report: dict[str, Any]) -> int:
    revision = report.get("revision")
    return revision if isinstance(revision, int) else 0


class Waiter(Protocol):
    """One thing the demo waits for. A later check (e.g. a suspension's final state) is one more."""

    description: str

    def done(self) -> bool:
        """Nothing left to wait for."""

    def handled(self) -> bool:
        """The service dealt with it (shown as progress)."""

    def state(self) -> str: ...


@dataclass
class ReportWaiter:
    alert_id: str
    observed: Observed

    @property
    def description(self) -> str:
        return f"report for alert {self.alert_id}"

    def done(self) -> bool:
        return self.alert_id in self.observed.reports

    handled = done

    def state(self) -> str:
        return "reported" if self.done() else "no report"


SUSPENSION_FINAL = ("suspended", "locked", "failed", "rejected")


@dataclass
class RiskSignalWaiter:
    """A risk signal raises a suspension request for its plugin: done once a suspension of that
    plugin reached a final state on ``plugin.suspend.completed`` (suspended, locked, failed, rejected)."""

    signal_id: str
    observed: Observed
    tenant_id: str = ""
    plugin_id: str = ""

    @property
    def description(self) -> str:
        return f"suspension for risk signal {self.signal_id}"

    def _outcome(self) -> dict[str, Any] | None:
        return next((c for c in reversed(self.observed.completions)
                     if c.get("kind") == "suspend" and c.get("status") in SUSPENSION_FINAL
                     and (c.get("tenant_id"), c.get("plugin_id")) == (self.tenant_id, self.plugin_id)), None)

    def done(self) -> bool:
        return self._outcome() is not None

    handled = done

    def state(self) -> str:
        outcome = self._outcome()
        if outcome is None:
            return "no outcome"
        return f"{outcome['status']} ({outcome.get('suspension_id')}, mode {outcome.get('mode')})"


FIX_FINAL = ("resolved", "failed")


@dataclass
class FixWaiter:
    """A fix submission: done once its alert's regression finished (resolved or failed)."""

    alert_id: str
    observed: Observed

    @property
    def description(self) -> str:
        return f"regression of the fix for alert {self.alert_id}"

    def done(self) -> bool:
        return (self.observed.alert_states.get(self.alert_id) or {}).get("status") in FIX_FINAL

    handled = done

    def state(self) -> str:
        return (self.observed.alert_states.get(self.alert_id) or {}).get("status") or "no alert state"


def waiters_for(scenario: Scenario, observed: Observed) -> list[Waiter]:
    waiters: list[Waiter] = [ReportWaiter(alert_id, observed) for alert_id in scenario.alerts]
    waiters += [RiskSignalWaiter(signal_id, observed, str(signal.get("tenant_id")), str(signal.get("plugin_id")))
                for signal_id, signal in scenario.risk_signals.items()]
    waiters += [FixWaiter(alert_id, observed) for alert_id in scenario.fixes]
    return waiters


def safe_name(identifier: str) -> str:
    """An id as a file name: nothing that could leave the directory."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", identifier).lstrip(".")
    return name or "_"


def build_summary(
    *,
    scenario: str,
    started_at: str,
    alert_ids: Iterable[str],
    reports: Mapping[str, dict[str, Any]],
    files: Mapping[str, Mapping[str, str]],
    risk_states: Mapping[str, str],
    counts: Mapping[str, int],
    topic_names: Iterable[str],
    outputs: Iterable[str] = (),
    alert_states: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """summary.json: per alert its report (latency, completeness, files) and lifecycle (status,
    ticket), per risk signal its state, per topic the records seen during the run (every service
    topic, 0 when none)."""
    alerts: dict[str, Any] = {}
    for alert_id in alert_ids:
        report = reports.get(alert_id)
        if report is None:
            alerts[alert_id] = {"report_id": None, "state": "no report"}
            continue
        completeness = report.get("completeness") or {}
        alerts[alert_id] = {
            "report_id": report.get("report_id"),
            "revision": report.get("revision"),
            "report_latency_ms": report.get("generated_ms"),
            "complete": completeness.get("complete"),
            "fallback_used": completeness.get("fallback_used"),
            **dict(files.get(alert_id, {})),
        }
        lifecycle = (alert_states or {}).get(alert_id)
        if lifecycle:
            alerts[alert_id].update(status=lifecycle.get("status"), ticket_id=lifecycle.get("ticket_id"),
                                    ticket_url=lifecycle.get("ticket_url"))
    names = list(dict.fromkeys([*topic_names, *counts]))
    return {
        "scenario": scenario,
        "started_at": started_at,
        "alerts": alerts,
        "risk_signals": {signal_id: {"state": state} for signal_id, state in risk_states.items()},
        "topics": {name: int(counts.get(name, 0)) for name in names},
        "outputs": sorted(outputs),
    }


# -- the stack: broker and worker, started only when not running -------------------------------------


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


class Stack:
    """Starts what is not running (embedded broker, worker) and stops exactly that."""

    def __init__(self, settings: Settings, out: Path, say: Callable[[str], None]):
        self.settings = settings
        self.out = out
        self.say = say
        self.broker: Any = None  # EmbeddedBroker we started
        self.worker: subprocess.Popen[bytes] | None = None
        self.runtime: subprocess.Popen[bytes] | None = None  # plugwatch runtime-sim
        self.started_worker = False
        self.worker_log = out / "worker.log"
        self.base_url = f"http://{_client_host(settings.web_host)}:{settings.web_port}"

    def start(self) -> None:
        from plugwatch.embedded import BrokerError, EmbeddedBroker, port_open

        host, port = self.settings.broker_host_port
        if port_open(host, port):
            self.say(f"broker: using the one at {self.settings.bootstrap_servers}")
        elif self.settings.embedded_broker:
            try:
                self.broker = EmbeddedBroker(host, port, log_path=self.out / "broker.log").start()
            except BrokerError as exc:
                raise DemoError(str(exc)) from exc
            self.say(f"broker: started the embedded broker on {self.broker.url}")
        else:
            raise DemoError(
                f"no broker answers at {self.settings.bootstrap_servers} and embedded_broker is false: "
                "start your Kafka, or set PLUGWATCH_EMBEDDED_BROKER=true for the embedded one"
            )
        if self._health() is None:
            self._start_worker()
            self.say(f"worker: started (log {self.worker_log}, data {self.out / 'data'})")
        else:
            self.say(f"worker: using the one at {self.base_url}")
        self._wait_healthy()
        self._start_runtime()
        self.say("runtime: started plugwatch runtime-sim (answers suspend commands)")

    def _start_runtime(self) -> None:
        from plugwatch.embedded import die_with_parent

        env = {**os.environ, "PLUGWATCH_BROKER_URL": self.settings.broker_url}
        with open(self.out / "runtime-sim.log", "wb") as log:
            self.runtime = subprocess.Popen(
                [sys.executable, "-m", "plugwatch", "runtime-sim", "--group", "plugwatch-demo-runtime-sim"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
            )

    def _health(self) -> int | None:
        """/healthz status code, or None when nothing answers."""
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=3).status_code
        except httpx.HTTPError:
            return None

    def _start_worker(self) -> None:
        from plugwatch.embedded import die_with_parent

        data = self.out / "data"
        if data.exists() and (data / DATA_MARKER).exists():
            shutil.rmtree(data)  # the previous demo's chDB and Faust state: every run starts clean
        data.mkdir(parents=True, exist_ok=True)
        (data / DATA_MARKER).write_text("plugwatch demo worker data; removed by the next `plugwatch demo`\n")
        env = {
            **os.environ,
            "PLUGWATCH_BROKER_URL": self.settings.broker_url,
            "PLUGWATCH_DATA_DIR": str(data.resolve()),
            "PLUGWATCH_WEB_HOST": self.settings.web_host,
            "PLUGWATCH_WEB_PORT": str(self.settings.web_port),
        }
        with open(self.worker_log, "wb") as log:
            # Own session: Ctrl-C reaches only the demo, which stops the worker before the broker;
            # die_with_parent stops it even if the demo is killed outright.
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "plugwatch", "worker", "-l", "warn"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self.started_worker = True

    def _wait_healthy(self, timeout: float = WORKER_START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            self.check()
            status = self._health()
            if status == 200:
                return
            time.sleep(0.25)
        raise DemoError(
            f"the worker at {self.base_url} was not healthy within {timeout:.0f} s "
            f"(last /healthz status: {status or 'no answer'})" + self._log_tail()
        )

    def check(self) -> None:
        """Fail fast when a process we started died."""
        if self.worker is not None and self.worker.poll() is not None:
            code = self.worker.returncode
            self.worker = None
            raise DemoError(f"the worker exited with code {code}" + self._log_tail())
        if self.broker is not None and self.broker.process is not None and self.broker.process.poll() is not None:
            raise DemoError(f"the embedded broker exited (log: {self.out / 'broker.log'})")

    def _log_tail(self, lines: int = 30) -> str:
        if not self.started_worker:
            return ""
        try:
            tail = self.worker_log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"; last lines of {self.worker_log}:\n" + "\n".join(tail) if tail else ""

    def stop(self) -> None:
        from plugwatch.embedded import stop_process

        runtime, self.runtime = self.runtime, None
        stop_process(runtime)
        worker, self.worker = self.worker, None
        stop_process(worker)
        broker, self.broker = self.broker, None
        if broker is not None:
            broker.stop()


# -- the run ----------------------------------------------------------------------------------------


@dataclass
class DemoResult:
    summary: dict[str, Any]
    summary_path: Path
    report_files: dict[str, dict[str, Path]]  # alert_id -> {"json": path, "html": path}
    missing: list[str]  # descriptions of what did not finish in time
    problems: list[str]  # outputs that could not be written


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _publish(settings: Settings, entries: list[dict[str, Any]], on_sent: Callable[[], None],
                   before_trigger: Callable[[int], Awaitable[None]]) -> None:
    """Publish the entries in order. Before an alert or risk signal, ``before_trigger(n)`` waits for
    the n telemetry records sent so far: monitoring raises an alert after it saw the errors."""
    from plugwatch.replay import parse_entry
    from plugwatch.sinks.topics import TopicSink

    topics = settings.topics
    telemetry = {topics.logs, topics.traces, topics.metrics}
    triggers = {topics.alerts, topics.risk_signals}
    sink = TopicSink(settings.bootstrap_servers, client_id=f"{settings.app_id}-demo")
    try:
        await sink.start()
    except Exception as exc:
        raise DemoError(f"cannot reach the broker at {settings.bootstrap_servers}: {exc}") from exc
    try:
        pending, sent_telemetry = [], 0
        for entry in entries:
            message = parse_entry(entry)
            if message.topic in triggers and sent_telemetry:
                for future in pending:
                    await future
                await before_trigger(sent_telemetry)
            pending.append(await sink.producer.send(
                message.topic, message.value, key=message.key, headers=message.headers or None))
            sent_telemetry += message.topic in telemetry
            on_sent()
        for future in pending:
            await future
    finally:
        await sink.stop()


async def _poll_alerts(base_url: str, token: str, alert_ids: Iterable[str], observed: Observed) -> None:
    """Keep ``observed.alert_states`` current from ``GET /internal/debug/alerts/{id}``."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        while True:
            for alert_id in alert_ids:
                try:
                    response = await client.get(f"/internal/debug/alerts/{alert_id}",
                                                headers={"Authorization": f"Bearer {token}"})
                except httpx.HTTPError:
                    continue
                if response.status_code == 200:
                    observed.alert_states[alert_id] = response.json()
            await asyncio.sleep(0.3)


def fixes_due(scenario: Scenario, observed: Observed) -> bool:
    """A fix is published once the alert it fixes has its ticket (or got past it)."""
    return all(
        (state := observed.alert_states.get(alert_id)) is not None
        and (state.get("ticket_id") or state.get("status") not in ("open", "reported"))
        for alert_id in scenario.fixes
    )


async def _tickets(base_url: str, token: str, scenario: Scenario) -> list[dict[str, Any]]:
    """tickets.jsonl: the tickets of the scenario's plugins."""
    plugins = sorted({(str(a.get("tenant_id")), str(a.get("plugin_id"))) for a in scenario.alerts.values()})
    rows = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for tenant, plugin in plugins:
            response = await client.get("/api/tickets", params={"tenant": tenant, "plugin": plugin},
                                        headers={"Authorization": f"Bearer {token}"})
            if response.status_code != 200:
                raise DemoError(f"GET /api/tickets answered {response.status_code}: {response.text[:300]}")
            for ticket in response.json()["tickets"]:
                rows.append({k: ticket.get(k) for k in TICKET_FIELDS})
    return rows


TICKET_FIELDS = ("ticket_id", "tenant_id", "plugin_id", "owner", "assignee", "fingerprint", "status", "url", "system",
                 "severity", "occurrences", "title", "report_id")


async def _consume(consumer: Any, observed: Observed) -> None:
    while True:
        batches = await consumer.getmany(timeout_ms=200)
        now = time.monotonic()
        for tp, records in batches.items():
            for record in records:
                observed.add(tp.topic, record.value, record.timestamp, now)


async def _quiet(since: Callable[[], float], quiet_s: float, stack: Stack) -> None:
    """Until nothing new happened for ``quiet_s`` (at most MAX_TAIL_S)."""
    cap = time.monotonic() + MAX_TAIL_S
    while time.monotonic() < cap and time.monotonic() - since() < quiet_s:
        stack.check()
        await asyncio.sleep(0.1)


async def _wait_windows_ready(base_url: str, token: str, keys: Iterable[str], stack: Stack,
                              timeout: float = WORKER_START_TIMEOUT_S) -> list[str]:
    """Until the worker owns the scenario's plugins and has rebuilt their windows (a fresh worker
    replays the masked topics first); returns the reasons of those still not ready at the timeout."""
    waiting = {key: "no answer yet" for key in keys}
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        while waiting and time.monotonic() < deadline:
            stack.check()
            for key in list(waiting):
                now = _now_ms()
                response = await client.get("/internal/debug/window", params={"plugin": key, "from": now, "to": now},
                                            headers={"Authorization": f"Bearer {token}"})
                if response.status_code in (401, 403):
                    raise DemoError(f"the worker refused the token ({response.status_code} on /internal/debug/window): "
                                    "pass the right one with --token or PLUGWATCH_TOKEN")
                body = response.json() if response.status_code == 200 else {}
                if body.get("complete"):
                    del waiting[key]
                else:
                    waiting[key] = body.get("reason") or f"HTTP {response.status_code}"
            if waiting:
                await asyncio.sleep(0.25)
    return [f"{key}: {reason}" for key, reason in waiting.items()]


async def _fetch_html(base_url: str, token: str, report_id: str) -> str:
    url = f"{base_url}/internal/debug/reports/{report_id}.html"
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(20):  # a report on the topic may reach the worker's cache a moment later
            response = await client.get(url, headers={"Authorization": f"Bearer {token}"})
            if response.status_code == 200:
                return response.text
            if response.status_code in (401, 403):
                raise DemoError(
                    f"the worker refused {url} ({response.status_code}): pass the right token "
                    "with --token or PLUGWATCH_TOKEN"
                )
            if response.status_code != 404:
                break
            await asyncio.sleep(0.25)
    raise DemoError(f"the worker did not serve {url}: {response.status_code} {response.text[:300]}")


def _write_json(path: Path, value: Any) -> None:
    path.write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")


def _clear_outputs(out: Path, scenario: Scenario) -> None:
    """Remove this run's output files left by an earlier run, so nothing stale is read as new."""
    paths = [out / "summary.json", *(out / name for name in OUTPUT_TOPICS)]
    for alert_id in scenario.alerts:
        paths += [out / "reports" / f"{safe_name(alert_id)}.json", out / "reports" / f"{safe_name(alert_id)}.html"]
    for path in paths:
        path.unlink(missing_ok=True)


async def _collect(settings: Settings, stack: Stack, scenario: Scenario, scenario_path: Path, observed: Observed,
                   risk_states: dict[str, str], started_ms: int, out: Path, token: str,
                   missing: list[str]) -> DemoResult:
    """Write the reports (JSON as published, HTML from the worker), the other outputs, summary.json."""
    topics = settings.topics
    reports_dir = out / "reports"
    reports_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {}
    report_files: dict[str, dict[str, Path]] = {}
    problems: list[str] = []
    for alert_id, report in observed.reports.items():
        json_path = reports_dir / f"{safe_name(alert_id)}.json"
        _write_json(json_path, report)
        paths = {"json": json_path}
        try:
            html = await _fetch_html(stack.base_url, token, str(report.get("report_id")))
        except (DemoError, httpx.HTTPError) as exc:
            problems.append(f"{alert_id}: report page not written: {exc}")
        else:
            html_path = reports_dir / f"{safe_name(alert_id)}.html"
            html_path.write_text(html, encoding="utf-8")
            paths["html"] = html_path
        report_files[alert_id] = paths
        files[alert_id] = {kind: str(path.relative_to(out)) for kind, path in paths.items()}

    outputs = [str(p.relative_to(out)) for paths in report_files.values() for p in paths.values()]
    # A resolved alert's ticket is closed through the ticket outbox, a moment after the alert.
    closing = {s.get("ticket_id") for s in observed.alert_states.values() if s.get("status") == "resolved"}
    cap = time.monotonic() + MAX_TAIL_S
    while True:
        try:
            tickets = await _tickets(stack.base_url, token, scenario)
        except (DemoError, httpx.HTTPError) as exc:
            problems.append(f"tickets.jsonl not written: {exc}")
            tickets = []
            break
        still_open = [t for t in tickets if t["ticket_id"] in closing and t["status"] != "closed"]
        if not still_open or time.monotonic() > cap:
            break
        await asyncio.sleep(0.2)
    if tickets:
        (out / "tickets.jsonl").write_bytes(b"".join(orjson.dumps(t) + b"\n" for t in tickets))
        outputs.append("tickets.jsonl")
    for file_name, topic_field in OUTPUT_TOPICS.items():
        records = observed.records.get(getattr(topics, topic_field), []) if topic_field else []
        if records:
            (out / file_name).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
            outputs.append(file_name)
    summary = build_summary(
        scenario=str(scenario_path),
        started_at=datetime.fromtimestamp(started_ms / 1000, UTC).isoformat(timespec="milliseconds"),
        alert_ids=scenario.alerts, reports=observed.reports, files=files, risk_states=risk_states,
        counts=observed.counts, topic_names=topics.all_names(), outputs=outputs, alert_states=observed.alert_states,
    )
    summary_path = out / "summary.json"
    _write_json(summary_path, summary)
    return DemoResult(summary, summary_path, report_files, missing, problems)


async def _run(settings: Settings, stack: Stack, scenario_path: Path, entries: list[dict[str, Any]],
               out: Path, timeout: float, token: str, console: Any) -> DemoResult:
    from aiokafka import AIOKafkaConsumer
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from plugwatch.replay import shift_to_now
    from plugwatch.streams.topics import TopicSetupError, ensure_topics

    topics = settings.topics
    started_ms = _now_ms()
    mapped = map_topics(shift_to_now(entries, started_ms), topic_map(topics))
    if not stack.started_worker:
        suffix = datetime.fromtimestamp(started_ms / 1000, UTC).strftime("-r%H%M%S")
        mapped = tag_ids(mapped, topics, suffix)
        console.print(f"the worker was already running: this run's alert and signal ids end in {suffix} "
                      "(its window also holds what earlier runs sent for the same plugins)", highlight=False)
    scenario = Scenario.from_entries(mapped, topics)
    _clear_outputs(out, scenario)
    names = list(dict.fromkeys([*topics.all_names(), *(e["topic"] for e in scenario.entries)]))
    try:
        await ensure_topics(settings.bootstrap_servers, names, settings.topic_partitions, settings.topic_replication)
    except TopicSetupError as exc:
        raise DemoError(f"{exc} (broker {settings.bootstrap_servers})") from exc

    observed = Observed(topics, set(scenario.alerts), since_ms=started_ms)
    # No consumer group: every partition from the start. Counting what arrives until idle, not end
    # offsets, because the embedded broker's end offsets are off by up to a batch.
    consumer = AIOKafkaConsumer(
        *names, bootstrap_servers=settings.bootstrap_servers, group_id=None, auto_offset_reset="earliest",
        enable_auto_commit=False, max_partition_fetch_bytes=16 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    reader = asyncio.ensure_future(_consume(consumer, observed))
    poller = asyncio.ensure_future(_poll_alerts(stack.base_url, token, list(scenario.alerts), observed))
    held = [e for e in scenario.entries if e["topic"] == topics.fix_submitted]
    first = [e for e in scenario.entries if e["topic"] != topics.fix_submitted]
    waiters = waiters_for(scenario, observed)
    telemetry = [topics.logs, topics.traces, topics.metrics]
    masked = [topics.masked_logs, topics.masked_traces, topics.masked_metrics, topics.deadletter]
    try:
        with Progress(TextColumn("{task.description:<18}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                      TextColumn("{task.fields[note]}"), console=console, transient=False) as progress:
            sent = progress.add_task("published", total=len(scenario.entries), note="")
            ingested = progress.add_task("telemetry masked", total=scenario.count(*telemetry), note="")
            reported = progress.add_task("alerts reported", total=len(scenario.alerts), note="")
            risk = progress.add_task("risk signals", total=len(scenario.risk_signals), note="",
                                     visible=bool(scenario.risk_signals))
            fixed = progress.add_task("fixes checked", total=len(scenario.fixes), note="",
                                      visible=bool(scenario.fixes))

            def refresh() -> None:
                done_masked = sum(observed.counts[t] for t in masked)
                progress.update(ingested, completed=min(done_masked, scenario.count(*telemetry)))
                progress.update(reported, completed=sum(isinstance(w, ReportWaiter) and w.handled() for w in waiters))
                progress.update(risk, completed=sum(isinstance(w, RiskSignalWaiter) and w.handled() for w in waiters),
                                note=", ".join(w.state() for w in waiters if isinstance(w, RiskSignalWaiter)))
                progress.update(fixed, completed=sum(isinstance(w, FixWaiter) and w.handled() for w in waiters),
                                note=", ".join(w.state() for w in waiters if isinstance(w, FixWaiter)))

            keys = sorted({str(e["key"]) for e in scenario.entries if e["topic"] in telemetry and e.get("key")})
            for problem in await _wait_windows_ready(stack.base_url, token, keys, stack):
                progress.console.print(f"warning: window not ready, the report may be incomplete: {problem}",
                                       highlight=False)

            async def wait_ingested(expected: int) -> None:
                cap = time.monotonic() + INGEST_WAIT_S
                while sum(observed.counts[t] for t in masked) < expected and time.monotonic() < cap:
                    stack.check()
                    refresh()
                    await asyncio.sleep(0.1)

            await _publish(settings, first, lambda: progress.advance(sent), wait_ingested)
            deadline = time.monotonic() + timeout
            while not all(w.done() for w in waiters) and time.monotonic() < deadline:
                stack.check()
                if reader.done():
                    raise DemoError(f"reading the topics failed: {reader.exception()!r}")
                if held and fixes_due(scenario, observed):
                    await _publish(settings, held, lambda: progress.advance(sent), wait_ingested)
                    held = []
                refresh()
                await asyncio.sleep(0.2)
            missing = [w.description for w in waiters if not w.done()]
            if not missing:
                await _quiet(lambda: observed.last_report_at, SETTLE_S, stack)  # late-data revisions
            await _quiet(lambda: observed.last_record_at, IDLE_S, stack)
            refresh()
    finally:
        reader.cancel()
        poller.cancel()
        await asyncio.gather(reader, poller, return_exceptions=True)
        await consumer.stop()

    risk_states = {w.signal_id: w.state() for w in waiters if isinstance(w, RiskSignalWaiter)}
    return await _collect(settings, stack, scenario, scenario_path, observed, risk_states, started_ms, out, token,
                          missing)


class Terminated(KeyboardInterrupt):
    """SIGTERM: takes the Ctrl-C path, so everything the demo started is stopped."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def run_demo(scenario: Path | None, out: Path, timeout: float, token: str, *,
             console: Any = None) -> DemoResult:
    """Run the scenario end to end; DemoError on anything the user must know (timeout included)."""
    from rich.console import Console

    console = console or Console(stderr=True)
    settings = get_settings()
    scenario_path = (scenario or DEFAULT_SCENARIO).resolve()
    entries = load_scenario(scenario_path)  # a bad file fails before anything starts
    out.mkdir(parents=True, exist_ok=True)
    stack = Stack(settings, out, lambda text: console.print(text, highlight=False))
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        stack.start()
        console.print(f"scenario: {scenario_path} ({len(entries)} records)", highlight=False)
        result = asyncio.run(_run(settings, stack, scenario_path, entries, out, timeout, token, console))
    finally:
        try:
            stack.stop()
        finally:
            signal.signal(signal.SIGTERM, previous)
    if result.missing:
        where = f"; the worker's log is {stack.worker_log}" if stack.started_worker else ""
        dead = result.summary["topics"].get(settings.topics.deadletter, 0)
        if dead:
            where += f"; {dead} record(s) went to {settings.topics.deadletter}: invalid input?"
        raise DemoError(
            f"timed out after {timeout:.0f} s waiting for: {', '.join(result.missing)} "
            f"(what did arrive is in {result.summary_path}{where})"
        )
    if result.problems:
        raise DemoError("; ".join(result.problems))
    return result
