"""The demo's default scenario (examples/scenarios/incident.jsonl) and the pure parts of plugwatch.demo."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import orjson
import pytest

from plugwatch.demo import (
    DemoError,
    FixWaiter,
    Observed,
    ReportWaiter,
    RiskSignalWaiter,
    Scenario,
    build_summary,
    fixes_due,
    load_scenario,
    map_topics,
    safe_name,
    tag_ids,
    topic_map,
    waiters_for,
)
from plugwatch.masking.engine import load_engine
from plugwatch.replay import parse_line, shift_to_now
from plugwatch.reports.model import parse_alert
from plugwatch.settings import REPO_ROOT, Topics
from plugwatch.streams.records import validate
from plugwatch.tables.skew import SkewEstimator

SCENARIO = REPO_ROOT / "examples" / "scenarios" / "incident.jsonl"
SIGNALS = {"telemetry.logs": "logs", "telemetry.traces": "traces", "telemetry.metrics": "metrics"}


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_incident", SCENARIO.with_name("make_incident.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _generator()
LINES = SCENARIO.read_bytes().splitlines()
ENTRIES = [orjson.loads(line) for line in LINES]


def values(topic: str) -> list[dict[str, Any]]:
    return [e["value"] for e in ENTRIES if e["topic"] == topic]


(ALERT,) = values("plugin.debug.alert")


def skew_estimator() -> SkewEstimator:
    estimator = SkewEstimator(lambda: 1_000)
    for entry in ENTRIES:
        if entry["topic"] in SIGNALS:
            estimator.observe(SIGNALS[entry["topic"]], entry["value"])
    return estimator


# -- the scenario ---------------------------------------------------------------------------------


def test_the_generator_reproduces_the_committed_file_byte_for_byte(tmp_path: Path):
    out = tmp_path / "incident.jsonl"
    gen.main(["make_incident.py", str(out)])
    assert out.read_bytes() == SCENARIO.read_bytes()
    assert len(LINES) <= 400


def test_every_line_is_a_replay_message_keyed_by_the_plugin():
    for line in LINES:
        message = parse_line(line)
        assert message.key == b"acme/payment-gateway"
    assert {e["topic"] for e in ENTRIES} == {*SIGNALS, "plugin.debug.alert", "plugin.risk.signal", "plugin.fix.submitted"}


def test_every_telemetry_record_validates():
    for entry in ENTRIES:
        if entry["topic"] in SIGNALS:
            record = validate(SIGNALS[entry["topic"]], entry["value"])
            assert (record["tenant_id"], record["plugin_id"]) == ("acme", "payment-gateway")


def test_exactly_one_alert_and_one_critical_risk_signal():
    alert = parse_alert(ALERT)
    assert (alert.alert_id, alert.kind, alert.severity, alert.window_s) == ("ALR-20261124-0001", "error_rate", "critical", 300)
    (signal,) = values("plugin.risk.signal")
    assert signal["signal_id"] and signal["ts"] > ALERT["ts"]
    assert {k: signal[k] for k in ("tenant_id", "plugin_id", "severity", "reason", "mode", "requester")} == {
        "tenant_id": "acme", "plugin_id": "payment-gateway", "severity": "critical",
        "reason": "card data written to logs", "mode": "wait", "requester": "secscan"}


def test_three_plugin_instances_on_three_hosts_called_by_the_gateway():
    logs, spans = values("telemetry.logs"), values("telemetry.traces")
    assert {log["instance_id"] for log in logs} == {"pg-0", "pg-1", "pg-2"}
    assert len({log["host"] for log in logs}) == 3
    assert {log["plugin_version"] for log in logs} == {"3.2.1"}
    by_id = {span["span_id"]: span for span in spans}
    for span in spans:
        if span["instance_id"] == "gateway-0":
            assert "parent_span_id" not in span  # the reference clock's root spans
        else:
            assert by_id[span["parent_span_id"]]["instance_id"] == "gateway-0"
    for log in logs:  # every plugin log carries its own child span
        assert by_id[log["span_id"]]["instance_id"] == log["instance_id"]


def test_the_failure_has_python_stack_traces_from_all_three_instances():
    errors = [log for log in values("telemetry.logs") if log["level"] == "ERROR"]
    assert {log["instance_id"] for log in errors} == {"pg-0", "pg-1", "pg-2"}
    assert all(log["exception"]["type"] == "PaymentGatewayError" for log in errors)
    traces = [log["exception"]["stacktrace"] for log in errors]
    assert all("ConnectionError" in t and t.startswith("Traceback (most recent call last):") for t in traces)
    assert len({t.split("handle_charge")[0] for t in traces}) > 1  # different caller lines
    assert len({log["exception"]["message"] for log in errors}) == len(errors)
    assert all(log["ts"] < ALERT["ts"] + 1_000 for log in errors)
    normal = [m for m in values("telemetry.metrics") if m["name"] == "http.server.errors"]
    assert max(m["value"] for m in normal) > 0 and min(m["value"] for m in normal) == 0


def test_the_estimator_learns_each_instances_clock_from_the_scenario():
    estimator = skew_estimator()
    for instance, (_, skew) in gen.INSTANCES.items():
        for signal in ("logs", "traces"):
            estimate = estimator.estimate(instance, signal)
            assert abs(estimate.offset_ms + skew) <= 5, (instance, signal, estimate)
            assert estimate.basis == "linked"
    assert {skew for _, skew in gen.INSTANCES.values()} == {2500, -1800, 0}


def test_an_error_stamped_after_the_alert_happened_before_it():
    spans = {span["span_id"]: span for span in values("telemetry.traces")}
    late = [log for log in values("telemetry.logs") if log["level"] == "ERROR" and log["ts"] > ALERT["ts"]]
    assert late and {log["instance_id"] for log in late} == {"pg-0"}
    estimator = skew_estimator()
    for log in late:
        gateway = spans[spans[log["span_id"]]["parent_span_id"]]
        assert gateway["instance_id"] == "gateway-0" and gateway["end_ts"] < ALERT["ts"]  # the reference clock
        corrected = estimator.correct("logs", log)
        assert ALERT["ts"] - ALERT["window_s"] * 1000 <= corrected < ALERT["ts"]


def test_personal_data_is_in_the_payloads_and_the_masking_engine_removes_it():
    raw = SCENARIO.read_text(encoding="utf-8")
    assert all(value in raw for value in gen.SENSITIVE)
    engine = load_engine(path=REPO_ROOT / "config" / "security" / "data_masking_rules.yaml")
    masked = []
    for entry in ENTRIES:
        value, _ = engine.mask(entry["value"])
        masked.append(orjson.dumps(value).decode())
    text = "\n".join(masked)
    leaked = [value for value in gen.SENSITIVE if value in text]
    assert not leaked
    errors = [e["value"] for e in ENTRIES if e["value"].get("level") == "ERROR"]
    assert all(engine.mask(error)[0] != error for error in errors)


def test_after_the_shift_the_risk_signal_is_now_and_the_alert_just_before():
    now = 2_000_000_000_000
    shifted = shift_to_now(ENTRIES, now)
    (signal,) = [e["value"] for e in shifted if e["topic"] == "plugin.risk.signal"]
    (alert,) = [e["value"] for e in shifted if e["topic"] == "plugin.debug.alert"]
    assert signal["ts"] == now and now - 10_000 <= alert["ts"] < now
    telemetry_times = [v.get("ts", v.get("end_ts")) for e in shifted if e["topic"] in SIGNALS for v in [e["value"]]]
    assert max(telemetry_times) < now


# -- plugwatch.demo, the pure parts ----------------------------------------------------------------


RENAMED = Topics(**{name: f"x.{value}" for name, value in Topics().model_dump().items()})


def test_design_topic_names_map_to_the_configured_ones():
    mapping = topic_map(RENAMED)
    assert mapping["telemetry.logs"] == "x.telemetry.logs" and mapping["plugin.risk.signal"] == "x.plugin.risk.signal"
    assert topic_map(Topics()) == {name: name for name in Topics().model_dump().values()}
    entries = [{"topic": "plugin.debug.alert", "key": "a/b", "value": {}}, {"topic": "custom", "key": None, "value": 1}]
    assert [e["topic"] for e in map_topics(entries, mapping)] == ["x.plugin.debug.alert", "custom"]
    assert entries[0]["topic"] == "plugin.debug.alert"  # not mutated


def test_the_scenario_finds_its_alerts_and_risk_signals_under_the_configured_names():
    scenario = Scenario.from_entries(map_topics(ENTRIES, topic_map(RENAMED)), RENAMED)
    assert list(scenario.alerts) == ["ALR-20261124-0001"] and list(scenario.risk_signals) == [gen.SIGNAL_ID]
    assert list(scenario.fixes) == ["ALR-20261124-0001"] and scenario.fixes["ALR-20261124-0001"]["version"] == "3.2.2"
    assert scenario.count("x.telemetry.logs", "x.telemetry.traces", "x.telemetry.metrics") == len(ENTRIES) - 3


def test_tagged_ids_are_new_alerts_and_signals():
    tagged = tag_ids(ENTRIES, Topics(), "-r101500")
    scenario = Scenario.from_entries(tagged, Topics())
    assert list(scenario.alerts) == ["ALR-20261124-0001-r101500"]
    assert list(scenario.risk_signals) == [f"{gen.SIGNAL_ID}-r101500"]
    assert list(scenario.fixes) == ["ALR-20261124-0001-r101500"]  # the fix follows its alert
    assert ALERT["alert_id"] == "ALR-20261124-0001"  # not mutated
    assert [e["value"] for e in tagged if e["topic"] in SIGNALS] == [e["value"] for e in ENTRIES if e["topic"] in SIGNALS]


def test_load_scenario_names_every_bad_line(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"topic": "telemetry.logs", "value": {}}\nnot json\n\n{"value": 1}\n')
    with pytest.raises(DemoError) as caught:
        load_scenario(path)
    assert f"{path}:2: not JSON" in str(caught.value) and f'{path}:4: missing "topic"' in str(caught.value)
    with pytest.raises(DemoError, match="cannot read"):
        load_scenario(tmp_path / "missing.jsonl")
    assert len(load_scenario(SCENARIO)) == len(ENTRIES)


def report(alert_id: str, revision: int, **extra: Any) -> bytes:
    return orjson.dumps({"report_id": "RPT-1", "alert_id": alert_id, "revision": revision, "generated_ms": 40,
                         "completeness": {"complete": True, "fallback_used": False}, **extra})


def test_observed_keeps_the_latest_revision_counts_topics_and_ignores_older_records():
    topics = Topics()
    observed = Observed(topics, {"A"}, since_ms=1_000)
    observed.add(topics.debug_report, report("A", 2), 2_000, now=1.0)
    observed.add(topics.debug_report, report("A", 1), 2_001, now=2.0)  # an older revision, read later
    observed.add(topics.debug_report, report("B", 1), 2_002, now=3.0)  # not this scenario's alert
    observed.add(topics.debug_report, report("A", 9), 999, now=4.0)  # from before the run
    observed.add(topics.audit, b'{"action": "report"}', 2_003, now=5.0)
    observed.add(topics.masked_logs, b"{}", None, now=6.0)
    assert observed.reports["A"]["revision"] == 2 and list(observed.reports) == ["A"]
    assert observed.counts == {topics.debug_report: 3, topics.audit: 1, topics.masked_logs: 1}
    assert observed.records == {topics.audit: [{"action": "report"}]}
    assert observed.last_report_at == 1.0 and observed.last_record_at == 6.0


def test_waiters_wait_for_reports_fix_outcomes_and_suspension_outcomes():
    topics = Topics()
    scenario = Scenario.from_entries(ENTRIES, topics)
    observed = Observed(topics, set(scenario.alerts))
    waiters = waiters_for(scenario, observed)
    report_waiter, risk_waiter, fix_waiter = waiters
    assert isinstance(report_waiter, ReportWaiter) and isinstance(risk_waiter, RiskSignalWaiter)
    assert isinstance(fix_waiter, FixWaiter)
    assert [w.done() for w in waiters] == [False, False, False]
    assert report_waiter.description == "report for alert ALR-20261124-0001"
    observed.add(topics.debug_report, report("ALR-20261124-0001", 1), None, now=1.0)
    assert report_waiter.done() and report_waiter.handled() and not risk_waiter.handled()
    assert risk_waiter.state() == "no outcome"
    executing = {"kind": "suspend", "status": "executing", "tenant_id": "acme", "plugin_id": "payment-gateway"}
    observed.add(topics.suspend_completed, orjson.dumps(executing), None, now=1.5)
    other = {**executing, "status": "suspended", "plugin_id": "another"}
    observed.add(topics.suspend_completed, orjson.dumps(other), None, now=1.6)
    assert not risk_waiter.done()
    done = {**executing, "status": "suspended", "suspension_id": "SUS-1", "mode": "wait"}
    observed.add(topics.suspend_completed, orjson.dumps(done), None, now=1.7)
    assert risk_waiter.done() and risk_waiter.state() == "suspended (SUS-1, mode wait)"
    assert not fixes_due(scenario, observed)  # held until the alert has its ticket
    observed.alert_states["ALR-20261124-0001"] = {"status": "reported"}
    assert not fixes_due(scenario, observed)
    observed.alert_states["ALR-20261124-0001"] = {"status": "ticketed", "ticket_id": "TKT-1"}
    assert fixes_due(scenario, observed) and not fix_waiter.done()
    observed.alert_states["ALR-20261124-0001"] = {"status": "regression_running", "ticket_id": "TKT-1"}
    assert not fix_waiter.done() and fix_waiter.state() == "regression_running"
    observed.alert_states["ALR-20261124-0001"] = {"status": "resolved", "ticket_id": "TKT-1"}
    assert all(w.done() for w in waiters)


def test_summary_lists_each_alerts_report_each_signals_state_and_every_topic():
    reports = {"A": orjson.loads(report("A", 3))}
    summary = build_summary(
        scenario="incident.jsonl", started_at="2026-11-24T09:00:00.000+00:00", alert_ids=["A", "B"], reports=reports,
        files={"A": {"json": "reports/A.json", "html": "reports/A.html"}}, risk_states={"S": "suspended (SUS-1, mode wait)"},
        counts={"telemetry.logs": 78, "extra.topic": 2}, topic_names=Topics().all_names(),
        outputs=["reports/A.json", "audit.jsonl"],
    )
    assert summary["alerts"]["A"] == {"report_id": "RPT-1", "revision": 3, "report_latency_ms": 40, "complete": True,
                                      "fallback_used": False, "json": "reports/A.json", "html": "reports/A.html"}
    assert summary["alerts"]["B"] == {"report_id": None, "state": "no report"}
    assert summary["risk_signals"] == {"S": {"state": "suspended (SUS-1, mode wait)"}}
    assert summary["topics"]["telemetry.logs"] == 78 and summary["topics"]["plugin.audit"] == 0
    assert summary["topics"]["extra.topic"] == 2 and set(Topics().all_names()) <= set(summary["topics"])
    assert summary["outputs"] == ["audit.jsonl", "reports/A.json"]
    assert orjson.loads(orjson.dumps(summary)) == summary


@pytest.mark.parametrize(("identifier", "name"), [("ALR-20261124-0001", "ALR-20261124-0001"),
                                                  ("../etc/passwd", "_etc_passwd"), ("a/b c", "a_b_c"), ("", "_")])
def test_ids_become_file_names_that_stay_in_the_directory(identifier: str, name: str):
    assert safe_name(identifier) == name
