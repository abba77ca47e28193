"""The report builder on plain data: dedup, failing requests and traces, metrics, timeline, limits."""

from __future__ import annotations

import json
import re

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugwatch.reports.builder import build_report, fingerprint_stack, report_window
from plugwatch.reports.model import REPORT_SCHEMA, Alert, Coverage, Links, ReportInput, Telemetry
from plugwatch.reports.template import ReportTemplate

T = 1_700_000_000_000  # the alert's time
KEY = {"tenant_id": "acme", "plugin_id": "payment-gateway"}
ALERT = Alert(alert_id="a-1", ts=T, severity="critical", kind="error_rate", summary="errors up",
              instance_id="i-1", **KEY)
DEFAULT = ReportTemplate.default()

JAVA = """java.lang.IllegalStateException: charge {n} failed for [MASKED:email:{tok}]
\tat com.acme.pay.Charger.charge(Charger.java:{line})
\tat com.acme.pay.Api.lambda$post$0(Api.java:17)
\tat com.acme.pay.Api$$Lambda$1{n}/0x0000000800c0b{n}.apply(Unknown Source)
\tat java.base/java.lang.Thread.run(Thread.java:833)
Caused by: java.net.SocketTimeoutException: timeout after {n} ms
\tat com.acme.http.Client.send(Client.java:{line})
\t... 3 more"""

PYTHON = """Traceback (most recent call last):
  File "/srv/{inst}/app/plugins/pay.py", line {line}, in charge
    result = self.client.post(url)
  File "/srv/{inst}/venv/lib/python3.11/site-packages/httpx/_client.py", line 1145, in post
    return self.request("POST", url)
httpx.ConnectTimeout: timed out after {n}s at 0x7f3a{n}"""

GO = """panic: runtime error: index out of range [{n}] with length 3

goroutine {n} [running]:
main.(*Server).charge(0xc000{n}, 0x2a)
\t/build/{inst}/server.go:{line} +0x1d
main.main()
\t/build/{inst}/main.go:10 +0x25
created by main.start in goroutine {n}"""

JS = """TypeError: Cannot read properties of undefined (reading '{tok}')
    at charge (/app/{inst}/src/pay.js:{line}:13)
    at async Promise.all (index {n})
    at /app/{inst}/src/index.js:7:{n}"""


def stack(template: str, n: int = 1, line: int = 42, inst: str = "i-1", tok: str = "ab12") -> str:
    return template.format(n=n, line=line, inst=inst, tok=tok)


def log(ts, instance="i-1", raw=None, **fields) -> Telemetry:
    record = {**KEY, "ts": raw if raw is not None else ts, "instance_id": instance, "level": "INFO",
              "message": "ok", **fields}
    return Telemetry("logs", ts, raw if raw is not None else ts, instance, record)


def span(start, end, trace_id, span_id, instance="i-1", parent=None, status="OK", raw=None, **fields) -> Telemetry:
    raw_start = raw if raw is not None else start
    record = {**KEY, "instance_id": instance, "trace_id": trace_id, "span_id": span_id, "parent_span_id": parent,
              "name": f"op-{span_id}", "start_ts": raw_start, "end_ts": raw_start + (end - start),
              "status": status, "kind": "SERVER", **fields}
    return Telemetry("traces", start, raw_start, instance, record)


def metric(ts, name, value, unit="ms", instance="i-1") -> Telemetry:
    record = {**KEY, "ts": ts, "instance_id": instance, "name": name, "value": value, "unit": unit}
    return Telemetry("metrics", ts, ts, instance, record)


def report_input(telemetry, **overrides) -> ReportInput:
    fields = {"alert": ALERT, "report_id": "r-1", "revision": 1, "window_from": T - 300_000, "window_to": T,
              "telemetry": list(telemetry), "skew": [], "generated_at": T + 400, "generated_ms": 400,
              "owner": "team-payments"}
    fields.update(overrides)
    return ReportInput(**fields)


def build(telemetry, template: ReportTemplate = DEFAULT, **overrides) -> dict:
    return build_report(report_input(telemetry, **overrides), template)


def with_limits(**limits) -> ReportTemplate:
    return DEFAULT.model_copy(update={"limits": DEFAULT.limits.model_copy(update=limits)})


def exception_log(ts, instance, text, exc_type="java.lang.IllegalStateException", message="boom", **fields):
    fields.setdefault("level", "ERROR")
    return log(ts, instance, message=message,
               exception={"type": exc_type, "message": message, "stacktrace": text}, **fields)


# -- window -------------------------------------------------------------------------------------------


def test_window_uses_the_template_default():
    assert report_window(ALERT, DEFAULT) == (T - 300_000, T)


def test_window_uses_the_alerts_own_window():
    alert = ALERT.model_copy(update={"window_s": 60})
    assert report_window(alert, DEFAULT) == (T - 60_000, T)


# -- fingerprints -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, exc_type", [
    (JAVA, "java.lang.IllegalStateException"), (PYTHON, "httpx.ConnectTimeout"), (GO, "runtime.Error"),
    (JS, "TypeError"),
])
def test_one_bug_on_three_instances_has_one_fingerprint(text, exc_type):
    fingerprints = {
        fingerprint_stack(exc_type, stack(text, n=n, line=line, inst=inst, tok=tok))
        for n, line, inst, tok in [(7, 42, "i-1", "ab12"), (1234, 44, "i-2", "zz99"), (3, 97, "i-3", "q")]
    }
    assert len(fingerprints) == 1
    (fingerprint,) = fingerprints
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint)


def test_fingerprints_of_different_bugs_differ():
    fingerprints = {
        fingerprint_stack("java.lang.IllegalStateException", stack(JAVA)),
        fingerprint_stack("java.lang.IllegalArgumentException", stack(JAVA)),  # same frames, other type
        fingerprint_stack("java.lang.IllegalStateException",
                          stack(JAVA).replace("Charger.charge", "Charger.refund")),
        fingerprint_stack("java.lang.IllegalStateException",
                          stack(JAVA).replace("SocketTimeoutException", "ConnectException")),  # other cause
        fingerprint_stack("httpx.ConnectTimeout", stack(PYTHON)),
        fingerprint_stack("runtime.Error", stack(GO)),
        fingerprint_stack("TypeError", stack(JS)),
    }
    assert len(fingerprints) == 7


def test_the_message_is_not_part_of_the_fingerprint():
    one = "ValueError: amount 42 for card [MASKED:card:****1234] invalid\n  at pay (/app/a.js:1:1)"
    two = "ValueError: user bob has no wallet\n  at pay (/app/a.js:9:4)"
    assert fingerprint_stack("ValueError", one) == fingerprint_stack("ValueError", two)


def test_recursion_depth_does_not_change_the_fingerprint():
    frame = '  File "/app/walk.py", line {}, in walk\n'
    shallow = "Traceback (most recent call last):\n" + frame.format(3) * 3 + "RecursionError: too deep"
    deep = "Traceback (most recent call last):\n" + frame.format(5) * 40 + "RecursionError: too deep"
    assert fingerprint_stack("RecursionError", shallow) == fingerprint_stack("RecursionError", deep)


def test_fingerprint_without_recognisable_frames_normalises_the_text():
    assert fingerprint_stack("Oops", "failed at step 3 (request 0xdeadbeef)") == \
        fingerprint_stack("Oops", "failed at step 12 (request 0x1f)")
    assert fingerprint_stack("Oops", "disk full") != fingerprint_stack("Oops", "network down")


def test_fingerprint_tolerates_missing_parts():
    assert fingerprint_stack(None, None) == fingerprint_stack("", "")
    assert fingerprint_stack("KeyError", None) != fingerprint_stack(None, None)


# -- stack traces -------------------------------------------------------------------------------------


def test_one_bug_across_three_instances_is_one_stack_trace():
    telemetry = [
        exception_log(T - 30_000, "i-2", stack(JAVA, n=5, line=44, tok="x1"), message="charge 5 failed"),
        exception_log(T - 50_000, "i-1", stack(JAVA, n=7, line=42, tok="y2"), message="charge 7 failed"),
        exception_log(T - 10_000, "i-3", stack(JAVA, n=9, line=97, tok="z3"), message="charge 9 failed"),
        exception_log(T - 20_000, "i-1", stack(JAVA, n=2, line=42, tok="w4"), message="charge 2 failed"),
    ]
    report = build(telemetry)
    (trace,) = report["stack_traces"]
    assert trace["count"] == 4
    assert trace["instances"] == ["i-1", "i-2", "i-3"]
    assert (trace["first_ts"], trace["last_ts"]) == (T - 50_000, T - 10_000)
    assert trace["type"] == "java.lang.IllegalStateException"
    assert trace["message"] == "charge 7 failed"  # the earliest occurrence speaks for the group
    assert "Charger.java:42" in trace["stacktrace"]
    assert report["fingerprint"] == trace["fingerprint"]


def test_different_bugs_are_listed_apart_and_the_dominant_names_the_report():
    telemetry = [exception_log(T - 1000 * i, "i-1", stack(PYTHON, inst="i-1"), "httpx.ConnectTimeout")
                 for i in range(1, 4)]
    telemetry.append(exception_log(T - 90_000, "i-2", stack(JS, inst="i-2"), "TypeError"))
    report = build(telemetry)
    assert [t["count"] for t in report["stack_traces"]] == [3, 1]
    assert report["fingerprint"] == report["stack_traces"][0]["fingerprint"]
    assert report["stack_traces"][0]["fingerprint"] != report["stack_traces"][1]["fingerprint"]


@pytest.mark.parametrize("order, expected", [
    ("count_desc", ["TypeError", "KeyError", "OSError"]),
    ("first_seen", ["KeyError", "TypeError", "OSError"]),
    ("last_seen", ["OSError", "KeyError", "TypeError"]),
])
def test_stack_trace_ordering(order, expected):
    telemetry = [
        exception_log(T - 90_000, "i-1", "KeyError: x", "KeyError"),
        exception_log(T - 80_000, "i-1", "TypeError: x", "TypeError"),
        exception_log(T - 70_000, "i-1", "TypeError: y", "TypeError"),
        exception_log(T - 75_000, "i-1", "TypeError: z", "TypeError"),
        exception_log(T - 10_000, "i-1", "OSError: z", "OSError"),
        exception_log(T - 60_000, "i-1", "KeyError: x", "KeyError"),
    ]
    template = DEFAULT.model_copy(update={"ordering": DEFAULT.ordering.model_copy(update={"stack_traces": order})})
    assert [t["type"] for t in build(telemetry, template)["stack_traces"]] == expected


def test_exception_from_otlp_attributes_and_span_events():
    log_record = log(T - 5000, "i-1", level="ERROR", trace_id="t-9",
                     attributes={"exception.type": "KeyError", "exception.stacktrace": "KeyError: 'a'"})
    event = {"ts": T - 3000, "name": "exception",
             "attributes": {"exception.type": "ZeroDivisionError", "exception.message": "division by zero",
                            "exception.stacktrace": "ZeroDivisionError: division by zero"}}
    logged_too = {"ts": T - 5000, "name": "exception",
                  "attributes": {"exception.type": "KeyError", "exception.stacktrace": "KeyError: 'a'"}}
    spans = [span(T - 4000, T - 2000, "t-8", "s-1", status="ERROR", events=[event]),
             span(T - 6000, T - 1000, "t-9", "s-2", status="ERROR", events=[logged_too])]
    report = build([log_record, *spans])
    counts = {t["type"]: (t["count"], t["first_ts"]) for t in report["stack_traces"]}
    # The KeyError recorded on both the log and its span counts once.
    assert counts == {"KeyError": (1, T - 5000), "ZeroDivisionError": (1, T - 3000)}


def test_no_exceptions_fingerprint_of_alert_kind_and_plugin():
    report = build([log(T - 1000)])
    assert report["stack_traces"] == []
    assert re.fullmatch(r"[0-9a-f]{16}", report["fingerprint"])
    assert report["fingerprint"] == build([])["fingerprint"]
    other = ALERT.model_copy(update={"kind": "latency"})
    assert build([], alert=other)["fingerprint"] != report["fingerprint"]


def test_long_stack_traces_are_cut_with_a_marker():
    long_trace = "Traceback (most recent call last):\n" + "".join(
        f'  File "/app/m{i}.py", line {i}, in f{i}\n    call()\n' for i in range(100)) + "ValueError: x"
    template = with_limits(stacktrace_lines=10, stacktrace_chars=200, message_chars=20)
    report = build([exception_log(T, "i-1", long_trace, "ValueError", message="m" * 50)], template)
    (trace,) = report["stack_traces"]
    assert trace["stacktrace"].startswith("Traceback (most recent call last):\n")
    assert re.fullmatch(r"[^…]{200}…\[truncated \d+ chars\]", trace["stacktrace"])
    assert trace["message"] == "m" * 20 + "…[truncated 30 chars]"
    lines_only = build([exception_log(T, "i-1", long_trace, "ValueError")], with_limits(stacktrace_lines=10))
    assert lines_only["stack_traces"][0]["stacktrace"].endswith("…[truncated 192 lines]")


# -- requests and traces ------------------------------------------------------------------------------


def request_log(ts, trace_id, level="INFO", method="POST", url="/charge", **fields):
    return log(ts, "i-2", level=level, trace_id=trace_id, message=f"{method} {url}",
               request={"method": method, "url": url, "headers": {"content-type": "application/json"},
                        "query": {"retry": "1"}, "body": {"amount": 42}}, **fields)


def test_requests_failing_first():
    telemetry = [
        request_log(T - 50_000, "t-ok-old"),
        request_log(T - 40_000, "t-err", level="error"),
        request_log(T - 30_000, "t-ok-new"),
        request_log(T - 20_000, "t-span-err"),  # fails by its span
        span(T - 20_100, T - 19_000, "t-span-err", "s-1", status="STATUS_CODE_ERROR"),
        log(T - 1000, "i-1", message="no request here"),
    ]
    report = build(telemetry)
    assert [r["trace_id"] for r in report["requests"]] == ["t-span-err", "t-err", "t-ok-new", "t-ok-old"]
    first = report["requests"][1]
    assert first == {"ts": T - 40_000, "method": "POST", "url": "/charge",
                     "headers": {"content-type": "application/json"}, "query": {"retry": "1"},
                     "body": {"amount": 42}, "trace_id": "t-err", "level": "error", "instance_id": "i-2"}


@pytest.mark.parametrize("order, expected", [
    ("newest_first", ["c", "b", "a"]), ("oldest_first", ["a", "b", "c"]), ("failing_first", ["b", "c", "a"]),
])
def test_request_ordering(order, expected):
    telemetry = [request_log(T - 3000, "a"), request_log(T - 2000, "b", level="FATAL"), request_log(T - 1000, "c")]
    template = DEFAULT.model_copy(update={"ordering": DEFAULT.ordering.model_copy(update={"requests": order})})
    assert [r["trace_id"] for r in build(telemetry, template)["requests"]] == expected


def test_failing_traces_with_their_spans():
    telemetry = [
        # t-1 fails by an error log; its spans come from two sources, listed by corrected start.
        span(T - 10_000, T - 9_000, "t-1", "root", instance="gw"),
        span(T - 9_800, T - 9_500, "t-1", "child", instance="i-1", parent="root", raw=T - 12_800),
        log(T - 9_700, "i-1", level="Error", trace_id="t-1", message="card declined"),
        # t-2 fails by a span status in OTLP's numeric form.
        span(T - 5_000, T - 4_000, "t-2", "only", status="2"),
        # t-3 fails by an exception only.
        exception_log(T - 3_000, "i-1", "KeyError: 'x'", "KeyError", level="INFO", trace_id="t-3"),
        # t-4 is healthy.
        span(T - 2_000, T - 1_000, "t-4", "fine"),
        log(T - 1_500, "i-1", trace_id="t-4", level="WARN"),
    ]
    report = build(telemetry)
    traces = {t["trace_id"]: t for t in report["traces"]}
    assert list(traces) == ["t-3", "t-2", "t-1"]  # latest failure first
    assert traces["t-1"]["status"] == "ok"
    assert traces["t-2"]["status"] == "error"
    assert traces["t-3"] == {"trace_id": "t-3", "status": "unknown", "spans": []}
    root, child = traces["t-1"]["spans"]
    assert (root["span_id"], child["span_id"]) == ("root", "child")
    assert child == {"span_id": "child", "parent_span_id": "root", "name": "op-child", "start_ts": T - 9_800,
                     "end_ts": T - 9_500, "raw_start_ts": T - 12_800, "duration_ms": 300, "status": "OK",
                     "source": "i-1", "attributes": {}}


@pytest.mark.parametrize("level", ["ERROR", "error", "FATAL", "critical", "ERROR2", "FATAL4", "Severe"])
def test_error_levels(level):
    report = build([log(T, trace_id="t-1", level=level)])
    assert [t["trace_id"] for t in report["traces"]] == ["t-1"]


@pytest.mark.parametrize("level", ["INFO", "WARN", "debug", "ERRORS", None])
def test_not_error_levels(level):
    assert build([log(T, trace_id="t-1", level=level)])["traces"] == []


def test_otlp_severity_number_marks_an_error():
    assert build([log(T, trace_id="t-1", level=None, severity_number=17)])["traces"][0]["trace_id"] == "t-1"


def test_span_limit_keeps_error_spans():
    telemetry = [span(T - 100 + i, T, "t-1", f"s-{i:02}", status="ERROR" if i == 9 else "OK") for i in range(10)]
    report = build(telemetry, with_limits(spans_per_trace=3))
    assert [s["span_id"] for s in report["traces"][0]["spans"]] == ["s-00", "s-01", "s-09"]
    assert report["completeness"]["truncated"] == {"spans": 7}


# -- metrics ------------------------------------------------------------------------------------------


def test_metric_summaries():
    telemetry = [
        metric(T - 3000, "latency", 120.0),
        metric(T - 1000, "latency", 80.5),
        metric(T - 2000, "latency", 300),
        metric(T - 1000, "errors", 4, unit="1"),
        metric(T - 500, "errors", None),
        metric(T - 400, "queue", "high"),
    ]
    metrics = build(telemetry)["metrics"]
    assert list(metrics) == ["errors", "latency"]
    assert metrics["latency"] == {"min": 80.5, "max": 300, "avg": pytest.approx((120 + 80.5 + 300) / 3),
                                  "last": 80.5, "count": 3, "unit": "ms"}
    assert metrics["errors"] == {"min": 4, "max": 4, "avg": 4.0, "last": 4, "count": 1, "unit": "1"}


def test_metric_limit_keeps_the_first_names():
    telemetry = [metric(T, name, 1) for name in ("c", "a", "d", "b")]
    report = build(telemetry, with_limits(metrics=2))
    assert list(report["metrics"]) == ["a", "b"]
    assert report["completeness"]["truncated"] == {"metrics": 2}


# -- timeline -----------------------------------------------------------------------------------------


def test_timeline_sorted_by_corrected_time_with_raw_times_kept():
    telemetry = [
        log(T - 1000, "i-1", message="third"),
        # A clock 4 s ahead: its raw time is after the window end, the corrected one inside.
        log(T - 2000, "i-2", raw=T + 2000, message="second", level="WARN"),
        span(T - 3000, T - 500, "t-1", "s-1", instance="gw"),
        metric(T - 2500, "latency", 1),
    ]
    timeline = build(telemetry)["timeline"]
    assert [(e["ts"], e["raw_ts"], e["message"]) for e in timeline] == [
        (T - 3000, T - 3000, "op-s-1"), (T - 2000, T + 2000, "second"), (T - 1000, T - 1000, "third")]
    assert timeline[0] == {"ts": T - 3000, "raw_ts": T - 3000, "source": "gw", "signal": "traces", "level": "OK",
                           "message": "op-s-1", "trace_id": "t-1"}
    assert timeline[1]["source"] == "i-2" and timeline[1]["level"] == "WARN" and timeline[1]["signal"] == "logs"


def test_timeline_ties_put_a_span_before_its_logs_and_keep_input_order():
    telemetry = [log(T - 100, message="log-a", trace_id="t"), span(T - 100, T, "t", "s"),
                 log(T - 100, message="log-b", trace_id="t")]
    assert [e["message"] for e in build(telemetry)["timeline"]] == ["op-s", "log-a", "log-b"]


def test_timeline_over_the_limit_keeps_entries_nearest_the_alert():
    telemetry = [log(T - 1000 * i, message=f"m{i}") for i in range(10)]
    telemetry.append(log(T + 500, message="after"))  # the caller's window may reach past the alert
    report = build(telemetry, with_limits(timeline=4))
    assert [e["message"] for e in report["timeline"]] == ["m2", "m1", "m0", "after"]
    assert report["completeness"]["truncated"] == {"timeline": 7}


# -- environment and clock skew ----------------------------------------------------------------------


def test_environment_from_records_and_otel_attributes():
    telemetry = [
        log(T - 3000, "i-1", plugin_version="2.3.1", env="prod", region="eu-west-1", host="h-1",
            attributes={"process.runtime.name": "CPython", "process.runtime.version": "3.11.4",
                        "feature_flags": {"new_checkout": True, "beta": "off"}}),
        span(T - 2000, T, "t", "s", instance="i-2", host="h-2",
             attributes={"service.version": "2.3.0", "telemetry.sdk.language": "java",
                         "feature_flag.key": "beta", "feature_flag.variant": "on", "cloud.region": "eu-west-2"}),
        metric(T - 1000, "latency", 1, instance="i-3"),
        log(T - 500, "i-1", attributes="not a dict"),
    ]
    env = build(telemetry)["environment"]
    assert env == {
        "plugin_versions": ["2.3.0", "2.3.1"], "instances": ["i-1", "i-2", "i-3"], "hosts": ["h-1", "h-2"],
        "env": ["prod"], "region": ["eu-west-1", "eu-west-2"], "runtime": ["CPython 3.11.4", "java"],
        "feature_flags": {"beta": "on", "new_checkout": True},  # the latest evaluation wins
    }


def test_environment_keeps_only_text_and_number_values():
    telemetry = [
        log(T - 3000, "i-1", plugin_version=["2.3.1"], region={"name": "eu"}, env=None,
            attributes={"service.version": ["x"], "cloud.region": {"r": 1}, "host.name": "h-9"}),
        log(T - 2000, "i-1", plugin_version="2.4.0", region="eu-west-1", env="prod"),
        log(T - 1000, "i-2", plugin_version=2.5, level=" Fatal ", attributes={"exception.message": "no type"}),
    ]
    report = build(telemetry)
    env = report["environment"]
    assert env["plugin_versions"] == ["2.4.0", "2.5"] and env["region"] == ["eu-west-1"]
    assert env["env"] == ["prod"] and env["hosts"] == ["h-9"] and env["instances"] == ["i-1", "i-2"]
    assert report["stack_traces"] == []  # a message alone names no bug
    assert [e["level"] for e in report["timeline"]] == ["INFO", "INFO", " Fatal "]


def test_error_levels_are_recognised_whatever_their_length():
    from plugwatch.reports.builder import _is_error_log

    assert _is_error_log({"level": "ERROR"}) and _is_error_log({"level": " Fatal "})
    assert _is_error_log({"level": " " * 100 + "error"})  # long: matched, not remembered
    assert not _is_error_log({"level": "x" * 100}) and not _is_error_log({"level": "INFO"})
    assert _is_error_log({"severity_number": 17}) and not _is_error_log({"severity_number": "9"})


def test_clock_skew_rows_for_present_and_known_sources():
    skew = [
        {"source": "i-2", "signal": "logs", "offset_ms": -4000, "confidence": 0.9, "samples": 12, "basis": "linked"},
        {"source": "i-9", "signal": "logs", "offset_ms": 100, "confidence": 0.5, "samples": 3, "basis": "root"},
        {"source": "other-plugin-host", "signal": "logs", "offset_ms": 1, "confidence": 1.0, "samples": 1},
        "garbage",
    ]
    telemetry = [log(T - 2000, "i-2", raw=T + 2000), log(T - 1000, "i-1")]
    report = build(telemetry, skew=skew, coverage=Coverage(known_sources=("i-1", "i-2", "i-9")))
    assert report["clock_skew"] == [
        {"source": "i-1", "signal": "logs", "offset_ms": 0, "confidence": 0.0, "samples": 0, "basis": "none"},
        {"source": "i-2", "signal": "logs", "offset_ms": -4000, "confidence": 0.9, "samples": 12, "basis": "linked"},
        {"source": "i-9", "signal": "logs", "offset_ms": 100, "confidence": 0.5, "samples": 3, "basis": "root"},
    ]
    assert report["completeness"]["missing_sources"] == ["i-9"]


# -- the whole report ---------------------------------------------------------------------------------


def full_telemetry() -> list[Telemetry]:
    return [
        exception_log(T - 40_000, "i-1", stack(JAVA, line=42), trace_id="t-1"),
        exception_log(T - 30_000, "i-2", stack(JAVA, line=44), trace_id="t-2"),
        request_log(T - 40_001, "t-1", level="ERROR"),
        span(T - 40_100, T - 39_000, "t-1", "s-1", status="ERROR"),
        metric(T - 20_000, "latency", 5),
        log(T - 1000, "i-3", message="hello"),
    ]


def test_report_shape():
    links = Links(report_url="http://x/r/r-1", export_url=None, expires_at=T + 86_400_000, ticket_url=None)
    coverage = Coverage(coverage=0.75, fallback_used=True, complete=False, notes=("keeper restarted",),
                        known_sources=("i-1", "i-4"))
    report = build(full_telemetry(), links=links, coverage=coverage)
    assert list(report) == ["schema", "report_id", "alert_id", "tenant_id", "plugin_id", "owner", "revision",
                            "generated_at", "generated_ms", "alert", "fingerprint", "window", "environment",
                            "stack_traces", "requests", "traces", "metrics", "timeline", "clock_skew",
                            "completeness", "links", "counts"]
    assert report["schema"] == REPORT_SCHEMA
    assert (report["report_id"], report["alert_id"], report["tenant_id"], report["plugin_id"]) == \
        ("r-1", "a-1", "acme", "payment-gateway")
    assert (report["owner"], report["revision"], report["generated_at"], report["generated_ms"]) == \
        ("team-payments", 1, T + 400, 400)
    assert report["alert"] == {"alert_id": "a-1", "ts": T, "severity": "critical", "kind": "error_rate",
                               "summary": "errors up", "instance_id": "i-1"}
    assert report["window"] == {"from": T - 300_000, "to": T}
    assert report["completeness"] == {"coverage": 0.75, "fallback_used": True, "missing_sources": ["i-4"],
                                      "complete": False, "notes": ["keeper restarted"], "truncated": {}}
    assert report["links"] == {"report_url": "http://x/r/r-1", "export_url": None,
                               "expires_at": T + 86_400_000, "ticket_url": None}
    assert report["counts"] == {"logs": 4, "traces": 1, "metrics": 1}
    assert report["stack_traces"][0]["count"] == 2
    assert [t["trace_id"] for t in report["traces"]] == ["t-2", "t-1"]
    assert json.loads(json.dumps(report)) == report
    assert orjson.loads(orjson.dumps(report)) == report


def test_sections_left_out_are_empty():
    template = DEFAULT.model_copy(update={"sections": ("summary", "timeline")})
    report = build(full_telemetry(), template)
    assert report["stack_traces"] == [] and report["requests"] == [] and report["traces"] == []
    assert report["metrics"] == {} and report["clock_skew"] == []
    assert report["environment"] == {"plugin_versions": [], "instances": [], "hosts": [], "env": [], "region": [],
                                     "runtime": [], "feature_flags": {}}
    assert len(report["timeline"]) == 5
    # The summary stays whole: the fingerprint still names the dominant stack trace.
    assert report["fingerprint"] == build(full_telemetry())["stack_traces"][0]["fingerprint"]


def test_truncated_counts_what_the_limits_cut():
    telemetry = [request_log(T - i, f"t-{i}", level="ERROR") for i in range(6)]
    telemetry += [exception_log(T - 100 - i, "i-1", f"E{i}Error: x", f"E{'x' * i}Error") for i in range(4)]
    template = with_limits(requests=2, traces=3, stack_traces=1, timeline=5)
    report = build(telemetry, template)
    assert len(report["requests"]) == 2 and len(report["traces"]) == 3 and len(report["stack_traces"]) == 1
    assert report["completeness"]["truncated"] == {"requests": 4, "stack_traces": 3, "timeline": 5, "traces": 3}


def test_long_strings_are_cut_with_a_marker():
    template = with_limits(message_chars=10, body_chars=15)
    telemetry = [log(T, message="x" * 25, trace_id="t", request={"url": "/" + "u" * 20, "body": "b" * 40,
                                                                 "headers": {"cookie": "c" * 11}}),
                 log(T - 1, request={"body": {"items": list(range(50))}})]
    report = build(telemetry, template)
    assert report["timeline"][1]["message"] == "x" * 10 + "…[truncated 15 chars]"
    newest, older = report["requests"]
    assert newest["url"] == "/" + "u" * 9 + "…[truncated 11 chars]"
    assert newest["body"] == "b" * 15 + "…[truncated 25 chars]"
    assert newest["headers"] == {"cookie": "c" * 10 + "…[truncated 1 chars]"}
    assert older["body"].startswith('{"items":[0,1,2') and "…[truncated" in older["body"]


def test_the_same_input_gives_the_same_report():
    telemetry = full_telemetry()
    first = orjson.dumps(build(telemetry))
    assert orjson.dumps(build(list(telemetry))) == first
    assert orjson.dumps(build(telemetry)) == first


def test_odd_records_are_skipped_not_fatal():
    telemetry = [
        Telemetry("logs", T, T, "i-1", {"level": 5, "exception": ["not", "a", "dict"], "request": "GET /",
                                         "attributes": ["x"], "trace_id": {"a": 1}}),
        Telemetry("logs", T, T, "i-1", {"exception": {"type": None, "stacktrace": 3}, "request": {"headers": "x"}}),
        Telemetry("traces", T, T, "i-1", {"status": {"code": 2}, "trace_id": "t", "end_ts": "soon",
                                           "events": ["x", {"name": "exception", "attributes": None}]}),
        Telemetry("metrics", T, T, "i-1", {"name": "m", "value": None}),
        Telemetry("metrics", T, T, "i-1", {"name": "m", "value": float("nan")}),
        Telemetry("metrics", T, T, "i-1", {"name": None, "value": 1}),
        Telemetry("metrics", T, T, "i-1", {"name": "big", "value": 2**70}),
        Telemetry("bogus", T, T, "i-1", {}),
        Telemetry("logs", "yesterday", T, "i-1", {}),  # type: ignore[arg-type]
        Telemetry("logs", T, T, "i-1", "not a record"),  # type: ignore[arg-type]
        Telemetry("logs", T, T, None,  # type: ignore[arg-type]
                  {"attributes": {"deep": {"set": {1, 2}, "obj": object()}}}),
    ]
    report = build(telemetry)
    assert report["metrics"] == {}
    assert report["traces"][0]["status"] == "error"
    assert report["traces"][0]["spans"][0]["end_ts"] is None
    assert report["counts"] == {"logs": 3, "traces": 1, "metrics": 4}
    orjson.dumps(report)


# -- properties ---------------------------------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                       max_leaves=8)
_keys = st.sampled_from(["ts", "level", "message", "trace_id", "span_id", "parent_span_id", "name", "status",
                         "end_ts", "value", "unit", "instance_id", "host", "attributes", "exception", "request",
                         "events", "plugin_version", "feature_flags", "severity_number"])
_records = st.dictionaries(_keys, _values, max_size=8)
_telemetry = st.builds(Telemetry, signal=st.sampled_from(["logs", "traces", "metrics"]),
                       corrected_ts=st.integers(T - 400_000, T + 10_000),
                       raw_ts=st.integers(T - 400_000, T + 10_000),
                       source=st.sampled_from(["i-1", "i-2", "gw"]), record=_records)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_telemetry, max_size=12), st.integers(1, 5))
def test_build_report_never_raises_and_the_timeline_is_sorted(telemetry, limit):
    report = build(telemetry, with_limits(timeline=limit, requests=limit, message_chars=limit * 3))
    times = [entry["ts"] for entry in report["timeline"]]
    assert times == sorted(times)
    assert len(times) <= limit
    assert orjson.loads(orjson.dumps(report)) is not None
