"""`plugwatch demo` as a user runs it: its own broker and worker, the default scenario, the outputs."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from plugwatch.embedded import free_port, port_open
from plugwatch.settings import REPO_ROOT

SCENARIO = REPO_ROOT / "examples" / "scenarios" / "incident.jsonl"
ALERT_ID = "ALR-20261124-0001"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_incident", SCENARIO.with_name("make_incident.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _generator()


def _processes_with(marker: bytes) -> list[int]:
    """Pids of live processes whose environment holds ``marker`` (what the demo started inherits it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes() and b"Z" not in (entry / "stat").read_bytes().split(b")")[-1][:3]:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class DemoRun:
    def __init__(self, out: Path, proc: subprocess.CompletedProcess[str], broker_port: int, web_port: int, app_id: str):
        self.out, self.proc, self.broker_port, self.web_port, self.app_id = out, proc, broker_port, web_port, app_id

    def explain(self) -> str:
        log = self.out / "worker.log"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else "(no worker log)"
        return f"exit {self.proc.returncode}\nstdout:\n{self.proc.stdout}\nstderr:\n{self.proc.stderr}\nworker log:\n{tail}"

    def json(self, relative: str) -> Any:
        return orjson.loads((self.out / relative).read_bytes())


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    work = tmp_path_factory.mktemp("demo")
    out = work / "out"
    broker_port, web_port = free_port(), free_port()
    app_id = f"demo-{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if k not in ("PLUGWATCH_TOKEN", "PLUGWATCH_ACCESS_FILE")}
    env |= {
        "PLUGWATCH_APP_ID": app_id,  # also the marker of every process the demo starts
        "PLUGWATCH_BROKER_URL": f"kafka://127.0.0.1:{broker_port}",
        "PLUGWATCH_EMBEDDED_BROKER": "true",
        "PLUGWATCH_WEB_PORT": str(web_port),
        "PLUGWATCH_DATA_DIR": str(work / "var"),
        "PLUGWATCH_BROKER_SESSION_TIMEOUT_S": "6",
    }
    # cwd without a config/: settings, the dev token and the default scenario come from the repo.
    proc = subprocess.run(
        [sys.executable, "-m", "plugwatch", "demo", "--out", str(out), "--timeout", "120"],
        env=env, cwd=work, capture_output=True, text=True, timeout=400, check=False,
    )
    return DemoRun(out, proc, broker_port, web_port, app_id)


def test_the_demo_exits_0_and_says_where_the_report_is(demo: DemoRun):
    assert demo.proc.returncode == 0, demo.explain()
    html, report = demo.out / "reports" / f"{ALERT_ID}.html", demo.out / "reports" / f"{ALERT_ID}.json"
    assert html.is_file() and report.is_file()
    assert f"report: {html}" in demo.proc.stdout and str(report) in demo.proc.stdout
    assert "PaymentGatewayError" in html.read_text(encoding="utf-8")


def test_the_report_has_the_stack_trace_deduplicated_environment_and_clock_skew(demo: DemoRun):
    assert demo.proc.returncode == 0, demo.explain()
    report = demo.json(f"reports/{ALERT_ID}.json")
    assert report["alert_id"] == ALERT_ID and report["tenant_id"] == "acme" and report["plugin_id"] == "payment-gateway"
    (trace,) = [t for t in report["stack_traces"] if t["type"].endswith("PaymentGatewayError")]
    errors = [line for line in SCENARIO.read_text().splitlines() if '"level": "ERROR"' in line]
    assert trace["count"] == len(errors) >= 3
    assert trace["instances"] == ["pg-0", "pg-1", "pg-2"]
    environment = report["environment"]
    assert environment["plugin_versions"] == ["3.2.1"] and environment["env"] == ["prod"]
    assert environment["region"] == ["cn-east-1"] and environment["runtime"] == ["CPython 3.11.9"]
    assert environment["feature_flags"] == {"new_settlement_client": True}
    assert {"pg-0", "pg-1", "pg-2"} <= set(environment["instances"]) and len(environment["hosts"]) >= 3
    skew = {(row["source"], row["signal"]): row["offset_ms"] for row in report["clock_skew"]}
    for instance, (_, offset) in gen.INSTANCES.items():
        assert abs(skew[(instance, "logs")] + offset) <= 50, report["clock_skew"]


def test_the_error_stamped_after_the_alert_is_in_the_report_at_its_corrected_time(demo: DemoRun):
    assert demo.proc.returncode == 0, demo.explain()
    report = demo.json(f"reports/{ALERT_ID}.json")
    alert_ts = report["alert"]["ts"]
    late = [row for row in report["timeline"] if row["raw_ts"] > alert_ts and row.get("level") == "ERROR"]
    assert late, "pg-0's last error (stamped 0.5 s after the alert, 2 s before it in true time) is missing"
    assert all(row["source"] == "pg-0" and row["ts"] < alert_ts for row in late)


def test_nothing_personal_from_the_scenario_is_anywhere_in_the_out_dir(demo: DemoRun):
    assert demo.proc.returncode == 0, demo.explain()
    needles = [value.encode() for value in gen.SENSITIVE]
    assert len(needles) >= 20
    leaks = []
    for path in demo.out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaks += [f"{path.relative_to(demo.out)}: {n.decode()}" for n in needles if n in data]
    assert not leaks


def test_the_summary_has_latencies_risk_signal_states_and_topic_counts(demo: DemoRun):
    assert demo.proc.returncode == 0, demo.explain()
    summary = demo.json("summary.json")
    alert = summary["alerts"][ALERT_ID]
    assert isinstance(alert["report_latency_ms"], int) and 0 <= alert["report_latency_ms"] < 60_000
    assert alert["json"] == f"reports/{ALERT_ID}.json" and alert["html"] == f"reports/{ALERT_ID}.html"
    assert alert["revision"] == demo.json(alert["json"])["revision"]
    assert summary["risk_signals"][gen.SIGNAL_ID]["state"].startswith("suspended (SUS-")
    published = {"telemetry.logs": 0, "telemetry.traces": 0, "telemetry.metrics": 0, "plugin.debug.alert": 0,
                 "plugin.risk.signal": 0, "plugin.fix.submitted": 0}
    for line in SCENARIO.read_bytes().splitlines():
        published[orjson.loads(line)["topic"]] += 1
    topics = summary["topics"]
    assert {name: topics[name] for name in published} == published
    for signal in ("logs", "traces", "metrics"):
        assert topics[f"telemetry.masked.{signal}"] == published[f"telemetry.{signal}"]
    assert topics["plugin.debug.report"] >= 1 and topics["plugin.deadletter"] == 0


def test_the_fix_passes_its_regression_and_closes_the_one_ticket_and_the_alert(demo: DemoRun):
    assert demo.proc.returncode == 0, demo.explain()
    lines = (demo.out / "tickets.jsonl").read_bytes().splitlines()
    (ticket,) = [orjson.loads(line) for line in lines]
    report = demo.json(f"reports/{ALERT_ID}.json")
    assert (ticket["tenant_id"], ticket["plugin_id"]) == ("acme", "payment-gateway")
    assert ticket["owner"] == "team-payments" and ticket["fingerprint"] == report["fingerprint"]
    assert ticket["status"] == "closed" and ticket["url"].endswith(f"/api/tickets/{ticket['ticket_id']}")
    alert = demo.json("summary.json")["alerts"][ALERT_ID]
    assert alert["status"] == "resolved" and alert["ticket_id"] == ticket["ticket_id"]
    assert demo.json("summary.json")["topics"]["plugin.debug.alert.resolved"] == 1
    assert f"{ALERT_ID}: resolved, ticket {ticket['ticket_id']}" in demo.proc.stdout


def test_the_critical_signal_suspends_the_plugin_with_commands_evidence_and_audit(demo: DemoRun):
    assert demo.proc.returncode == 0, demo.explain()
    commands = [orjson.loads(line) for line in (demo.out / "commands.jsonl").read_bytes().splitlines()]
    assert commands and commands[0]["plugin_id"] == "payment-gateway" and commands[0]["action"] == "suspend"
    assert commands[0]["requester"] == "secscan"
    evidence = [orjson.loads(line) for line in (demo.out / "evidence.jsonl").read_bytes().splitlines()]
    assert evidence and evidence[0]["plugin_id"] == "payment-gateway" and evidence[0]["evidence_id"].startswith("EVD-")
    audit = demo.out / "audit.jsonl"
    actions = {orjson.loads(line)["action"] for line in audit.read_bytes().splitlines()}
    assert {"suspend.requested", "evidence.write"} <= actions
    verified = subprocess.run([sys.executable, "-m", "plugwatch", "audit", "verify", "--file", str(audit)],
                              capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_everything_the_demo_started_is_stopped(demo: DemoRun):
    assert demo.proc.returncode == 0, demo.explain()
    assert "broker: started the embedded broker" in demo.proc.stderr and "worker: started" in demo.proc.stderr
    assert not port_open("127.0.0.1", demo.broker_port)
    assert not port_open("127.0.0.1", demo.web_port)
    assert _processes_with(f"PLUGWATCH_APP_ID={demo.app_id}\0".encode()) == []
