"""Per-plugin windows on the real broker: clock-skew correction, and a rebuild after kill -9."""

from __future__ import annotations

import time
import uuid

import orjson

from .conftest import PARTITIONS, Worker, produce, wait_for


def skewed_telemetry(base: int) -> tuple[list[dict], list[dict], set[str]]:
    """60 spans of api-0 and a log in each from worker-1, whose clock runs 3 s ahead; every tenth log
    is asynchronous, written 5 s after its span ended (an outlier)."""
    spans, logs, outliers = [], [], set()
    for i in range(60):
        start = base + i * 1000
        span_id = f"{i + 1:016x}"
        spans.append({"tenant_id": "acme", "plugin_id": "skewed", "instance_id": "api-0",
                      "trace_id": uuid.UUID(int=i + 1).hex, "span_id": span_id, "name": "GET /x",
                      "start_ts": start, "end_ts": start + 200})
        ts = start + 100 + 3000  # worker-1's clock runs 3 s ahead
        if i % 10 == 9:  # asynchronous log written 5 s after its span ended
            ts = start + 200 + 5000 + 3000
            outliers.add(span_id)
        logs.append({"tenant_id": "acme", "plugin_id": "skewed", "instance_id": "worker-1", "ts": ts,
                     "span_id": span_id, "trace_id": uuid.UUID(int=i + 1).hex, "message": f"step {i}"})
    return spans, logs, outliers


def skew_row(worker: Worker, key: str, source: str, signal: str) -> dict | None:
    rows = worker.get("/internal/debug/skew", plugin=key)["sources"]
    return next((r for r in rows if r["source"] == source and r["signal"] == signal), None)


def test_logs_stamped_3s_ahead_of_their_spans_land_at_the_corrected_time(worker, broker):
    NOW = int(time.time() * 1000)  # at the test, not at collection: other modules run first
    key = "acme/skewed"
    base = NOW - 120_000
    spans, logs, outliers = skewed_telemetry(base)
    produce(broker, worker.topics.traces, [(key.encode(), orjson.dumps(s)) for s in spans])
    produce(broker, worker.topics.logs, [(key.encode(), orjson.dumps(r)) for r in logs])

    def skew_settled():
        row = skew_row(worker, key, "worker-1", "logs")
        return row if row and row["samples"] >= 50 and abs(row["offset_ms"] + 3000) <= 50 else None

    row = wait_for(skew_settled, 60, "worker-1's log offset ≈ -3000 ms", worker)
    assert row["confidence"] > 0.5
    api = next(r for r in worker.get("/internal/debug/skew", plugin=key)["sources"] if r["source"] == "api-0")
    assert abs(api["offset_ms"]) <= 50  # the spans' own clock is the reference

    def corrected_logs():
        window = worker.get("/internal/debug/window", plugin=key, signal="logs", **{"from": base - 10_000, "to": NOW + 10_000})
        entries = window["entries"]
        if len(entries) < 60 or any(abs(e["corrected_ts"] - (e["raw_ts"] - 3000)) > 50 for e in entries):
            return None
        return entries

    entries = wait_for(corrected_logs, 30, "all 60 logs placed at raw - 3000 ms", worker)
    span_at = {s["span_id"]: (s["start_ts"], s["end_ts"]) for s in spans}
    for entry in entries:
        start, end = span_at[entry["record"]["span_id"]]
        if entry["record"]["span_id"] not in outliers:
            assert start <= entry["corrected_ts"] <= end, entry
        assert entry["raw_ts"] == entry["record"]["ts"]  # raw time kept beside the corrected one


def test_skew_estimates_survive_a_restart(broker, access_file, tmp_path):
    """Saved to ClickHouse while the worker runs; a worker started on the same data directory has
    them before any telemetry arrives (its topics are new and empty, so nothing can be relearnt)."""
    key = "acme/skewed"
    data_dir = str(tmp_path / "data")
    first = Worker(broker, access_file, tmp_path, data_dir=data_dir, window__skew_save_interval_s="1").start()
    try:
        spans, logs, _ = skewed_telemetry(int(time.time() * 1000) - 120_000)
        produce(broker, first.topics.traces, [(key.encode(), orjson.dumps(s)) for s in spans])
        produce(broker, first.topics.logs, [(key.encode(), orjson.dumps(r)) for r in logs])

        def saved():
            rows = first.sql(f"SELECT snapshot FROM plugwatch.skew_state FINAL WHERE plugin_key = '{key}'")
            if not rows:
                return None
            votes = orjson.loads(rows[0][0])["sources"].get("worker-1", {}).get("logs", {}).get("votes", [])
            return votes if len(votes) >= 50 else None

        wait_for(saved, 60, "worker-1's log evidence saved in skew_state", first)
        learnt = skew_row(first, key, "worker-1", "logs")
    finally:
        first.stop()
    assert learnt is not None and abs(learnt["offset_ms"] + 3000) <= 50, learnt

    second = Worker(broker, access_file, tmp_path, data_dir=data_dir).start()
    try:
        restored = wait_for(lambda: skew_row(second, key, "worker-1", "logs"), 60,
                            "the saved estimate loaded when the partition was assigned", second)
        # Not bit-equal to ``learnt``: a last vote or two may have come in after that read. With no
        # telemetry on its topics, only the saved evidence can put worker-1 3 s ahead here.
        assert abs(restored["offset_ms"] + 3000) <= 50 and restored["samples"] >= 50, restored
        assert second.get("/internal/debug/window", plugin=key)["entries"] == []  # learnt from nothing new
    finally:
        second.stop()


def test_after_kill_9_the_survivor_rebuilds_the_moved_plugins_windows(broker, access_file, tmp_path):
    NOW = int(time.time() * 1000)
    first = Worker(broker, access_file, tmp_path).start()
    second = Worker(broker, access_file, tmp_path, app_id=first.app_id, topics=first.topics).start()
    try:
        def split():  # both in the group, each holding some partitions' windows, before anything is sent
            shares = [w.get("/healthz")["windows"]["partitions"] for w in (first, second)]
            return all(shares) and sorted(shares[0] + shares[1]) == list(range(PARTITIONS))

        wait_for(split, 60, "the window partitions split between the workers", second)
        keys = [f"tenant-{i % 4}/plugin-{i:02d}" for i in range(40)]
        written: dict[str, set[str]] = {}
        messages = []
        for n, key in enumerate(keys):
            tenant, plugin = key.split("/")
            for j in range(5):
                message = f"{key} record {j}"
                written.setdefault(key, set()).add(message)
                messages.append((key.encode(), orjson.dumps(
                    {"ts": NOW - 60_000 + n * 100 + j, "tenant_id": tenant, "plugin_id": plugin, "message": message})))
        produce(broker, first.topics.logs, messages)

        def held(worker: Worker, key: str) -> set[str]:
            window = worker.get("/internal/debug/window", plugin=key)
            return {e["record"]["message"] for e in window["entries"]}

        def everything_held_somewhere():
            owners = {}
            for key in keys:
                for worker in (first, second):
                    if held(worker, key) == written[key]:
                        owners[key] = worker
            return owners if len(owners) == len(keys) else None

        owners = wait_for(everything_held_somewhere, 90, "every plugin's window on one of the two workers", first)
        moved = [key for key, owner in owners.items() if owner is second]
        assert moved and len(moved) < len(keys), "both workers must own some plugins for this test"

        second.kill()

        def rebuilt():
            for key in keys:
                window = first.get("/internal/debug/window", plugin=key)
                messages_held = [e["record"]["message"] for e in window["entries"]]
                if not window["complete"] or sorted(messages_held) != sorted(written[key]):
                    return None
            return True

        wait_for(rebuilt, 120, "the survivor holding every plugin's complete window", first)
        for key in moved:  # exactly what was written: nothing lost, nothing doubled
            window = first.get("/internal/debug/window", plugin=key)
            assert sorted(e["record"]["message"] for e in window["entries"]) == sorted(written[key])
        assert "window rebuild of partition" in first.log_tail(400)
    finally:
        second.stop()
        first.stop()
