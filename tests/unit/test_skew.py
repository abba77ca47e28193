"""The skew estimator on synthetic traces and logs, with a clock advanced by hand."""

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugwatch.tables.skew import Estimate, SkewEstimator, source_of

BASE = 1_700_000_000_000
KEY = {"tenant_id": "t1", "plugin_id": "p1"}


class Clock:
    def __init__(self, now: int = BASE):
        self.now = now

    def __call__(self) -> int:
        return self.now


class World:
    """True time runs on the clock; a source ``ahead`` ms stamps ``true + ahead`` (offset = -ahead)."""

    def __init__(self, est: SkewEstimator, clock: Clock, rng: random.Random):
        self.est, self.clock, self.rng = est, clock, rng
        self.ids = 0

    def _id(self) -> str:
        self.ids += 1
        return f"s{self.ids:06d}"

    def span(self, source, ahead, start, end, parent=None, broker=None):
        span_id = self._id()
        record = {**KEY, "instance_id": source, "trace_id": "t", "span_id": span_id,
                  "parent_span_id": parent, "start_ts": start + ahead, "end_ts": end + ahead,
                  "event_id": f"e-{span_id}"}
        if broker is not None:
            record["broker_ts"] = broker
        return record

    def log(self, source, ahead, true_ts, span_id):
        return {**KEY, "instance_id": source, "ts": true_ts + ahead, "span_id": span_id,
                "event_id": f"l-{self._id()}", "message": "m"}

    def linked_sample(self, log_ahead: int, outlier: bool, span_source="gw", span_ahead=0):
        """One root span from ``span_source`` and one log inside it (or an outlier log)."""
        self.clock.now += 1_000
        start = self.clock.now
        end = start + self.rng.randint(20, 1_000)
        span = self.span(span_source, span_ahead, start, end)
        if not outlier:
            true_ts = self.rng.randint(start, end)
        elif self.rng.random() < 0.5:
            true_ts = end + self.rng.randint(5_000, 60_000)  # async log written long after the span
        else:
            true_ts = start + self.rng.randint(-30_000, 30_000)  # garbage
        self.est.observe("traces", span)
        self.est.observe("logs", self.log("app", log_ahead, true_ts, span["span_id"]))


def make(seed=1, **tunables):
    clock = Clock()
    est = SkewEstimator(clock=clock, **tunables)
    return World(est, clock, random.Random(seed)), est, clock


def test_no_evidence_means_offset_zero_with_confidence_zero():
    world, est, _ = make()
    assert est.estimate("nobody", "logs") == Estimate(0, 0.0, 0)
    est.observe("metrics", {**KEY, "host": "h", "ts": BASE, "name": "x", "value": 1})
    assert est.estimate("h", "metrics") == Estimate(0, 0.0, 0)
    assert est.table() == []


def test_source_is_instance_then_host_then_unknown():
    assert source_of({"instance_id": "i", "host": "h"}) == "i"
    assert source_of({"host": "h"}) == "h"
    assert source_of({}) == "unknown"


def test_converges_within_50_linked_samples_with_10_percent_outliers():
    world, est, _ = make(seed=7)
    outliers = set(random.Random(3).sample(range(50), 5))
    for i in range(50):
        world.linked_sample(log_ahead=1_234, outlier=i in outliers)
    got = est.estimate("app", "logs")
    assert abs(got.offset_ms - (-1_234)) <= 50
    assert got.confidence > 0.5 and got.samples == 50 and got.basis == "linked"
    assert est.estimate("gw", "traces").offset_ms == 0


@settings(max_examples=25, deadline=None)
@given(
    ahead=st.integers(-10_000, 10_000),
    seed=st.integers(0, 2**32 - 1),
    outliers=st.sets(st.integers(0, 49), min_size=5, max_size=5),
)
def test_any_offset_is_found_despite_outliers(ahead, seed, outliers):
    world, est, _ = make(seed=seed)
    for i in range(50):
        world.linked_sample(log_ahead=ahead, outlier=i in outliers)
    assert abs(est.estimate("app", "logs").offset_ms + ahead) <= 50


def test_follows_a_step_change_of_two_seconds():
    world, est, _ = make(seed=11)
    for i in range(60):
        world.linked_sample(log_ahead=500, outlier=i % 10 == 3)
    assert abs(est.estimate("app", "logs").offset_ms + 500) <= 50
    for i in range(50):
        world.linked_sample(log_ahead=2_500, outlier=i % 10 == 3)
    assert abs(est.estimate("app", "logs").offset_ms + 2_500) <= 50


def _rpc_traces(world, child_ahead, n, shuffle=True):
    """Root spans on gw calling a child span on svc (plus a log on svc inside the child)."""
    rng = world.rng
    for _ in range(n):
        world.clock.now += 1_000
        start = world.clock.now
        end = start + rng.randint(50, 800)
        parent = world.span("gw", 0, start, end)
        c_start, c_end = start + rng.randint(1, 20), end - rng.randint(1, 20)
        child = world.span("svc", child_ahead, c_start, c_end, parent=parent["span_id"])
        log = world.log("svc", child_ahead, rng.randint(c_start, c_end), child["span_id"])
        batch = [("traces", parent), ("traces", child), ("logs", log)]
        if shuffle:
            rng.shuffle(batch)  # children and logs often arrive before their parent span
        for signal, record in batch:
            world.est.observe(signal, record)


def test_a_child_span_on_a_skewed_host_is_detected_and_the_parent_stays_at_zero():
    world, est, _ = make(seed=5)
    _rpc_traces(world, child_ahead=2_500, n=40)
    child = est.estimate("svc", "traces")
    assert abs(child.offset_ms + 2_500) <= 50 and child.basis == "linked" and child.confidence > 0.5
    parent = est.estimate("gw", "traces")
    assert parent.offset_ms == 0 and parent.basis == "root" and parent.confidence > 0.9
    assert abs(est.estimate("svc", "logs").offset_ms + 2_500) <= 50  # logs follow the corrected spans


def test_a_child_that_outlived_its_parent_is_only_moved_to_start_after_it():
    world, est, clock = make()
    parent = world.span("gw", 0, BASE, BASE + 100)
    child = world.span("svc", 1_000, BASE - 500, BASE + 5_000, parent=parent["span_id"])
    est.observe("traces", parent)
    est.observe("traces", child)
    assert est.estimate("svc", "traces").offset_ms == 0  # starts 500 ms after its parent: consistent
    late = world.span("gw", 0, BASE + 10_000, BASE + 10_100)
    early_child = world.span("svc", -3_000, BASE + 10_000, BASE + 20_000, parent=late["span_id"])
    est2 = SkewEstimator(clock=clock)
    est2.observe("traces", late)
    est2.observe("traces", early_child)
    assert est2.estimate("svc", "traces").offset_ms == 3_000  # aligned starts, as Jaeger does


def test_the_broker_bound_caps_a_source_that_claims_to_be_in_the_future():
    world, est, clock = make()
    rng = random.Random(2)
    for i in range(30):
        clock.now += 1_000
        true_ts = clock.now
        broker = true_ts + rng.randint(5, 40)
        raw = true_ts + 5_000 if i != 7 else true_ts + 900_000  # one record with a wild timestamp
        est.observe("metrics", {**KEY, "host": "edge", "ts": raw, "name": "cpu", "value": 1,
                                "broker_ts": broker})
        est.observe("metrics", {**KEY, "host": "late", "ts": true_ts - 3_000, "name": "cpu",
                                "value": 1, "broker_ts": broker})
    edge = est.estimate("edge", "metrics")
    assert -5_000 <= edge.offset_ms <= -5_000 + 40 + 100 and edge.basis == "broker"
    assert edge.confidence > 0
    assert est.estimate("late", "metrics") == Estimate(0, 0.0, 30)  # a bound says nothing of clocks behind


def test_the_broker_bound_overrides_link_evidence_that_puts_a_record_in_the_future():
    world, est, clock = make(seed=4)
    for _ in range(30):
        world.linked_sample(log_ahead=0, outlier=False, span_ahead=3_000)  # gw itself is 3 s ahead
    assert est.estimate("gw", "traces").offset_ms == 0  # traces alone cannot see it
    for _ in range(20):
        clock.now += 1_000
        span = world.span("gw", 3_000, clock.now - 200, clock.now - 10, broker=clock.now + 20)
        est.observe("traces", span)
    gw = est.estimate("gw", "traces")
    assert -3_000 <= gw.offset_ms <= -3_000 + 40 + 100 and gw.basis == "broker"


def test_a_log_waiting_for_its_span_is_linked_when_the_span_arrives_and_not_after_the_ttl():
    world, est, clock = make(index_ttl_ms=60_000)
    span = world.span("gw", 0, BASE + 1_000, BASE + 1_100)
    est.observe("logs", world.log("app", 700, BASE + 1_050, span["span_id"]))
    est.observe("traces", span)
    assert est.estimate("app", "logs").samples == 1
    lost = world.span("gw", 0, BASE + 2_000, BASE + 2_100)
    est.observe("logs", world.log("app2", 700, BASE + 2_050, lost["span_id"]))
    clock.now += 61_000
    est.observe("traces", lost)
    assert est.estimate("app2", "logs").samples == 0


def test_the_wait_lists_drop_their_oldest_first_over_the_cap_and_by_age():
    world, est, clock = make(index_ttl_ms=60_000, max_waiting=3)
    spans = [world.span("gw", 0, clock.now + i * 100, clock.now + i * 100 + 50) for i in range(4)]
    for i, span in enumerate(spans):  # four logs wait; the cap keeps the last three
        est.observe("logs", world.log(f"app{i}", 0, clock.now + i * 100 + 10, span["span_id"]))
    est.observe("traces", spans[0])
    est.observe("traces", spans[1])
    assert [est.estimate(source, "logs").samples for source in ("app0", "app1")] == [0, 1]
    later = world.span("gw", 0, clock.now + 40_000, clock.now + 40_050)
    clock.now += 40_000
    est.observe("logs", world.log("late", 0, clock.now + 10, later["span_id"]))
    clock.now += 30_000  # the first logs are 70 s old now, the last one 30 s
    for span in (*spans[2:], later):
        est.observe("traces", span)
    assert [est.estimate(source, "logs").samples for source in ("app2", "app3", "late")] == [0, 0, 1]


def test_signals_without_links_borrow_the_sources_trace_clock():
    world, est, clock = make(seed=9)
    _rpc_traces(world, child_ahead=-1_500, n=30)
    est.observe("metrics", {**KEY, "instance_id": "svc", "ts": clock.now, "name": "m", "value": 1})
    borrowed = est.estimate("svc", "metrics")
    assert abs(borrowed.offset_ms - 1_500) <= 50 and borrowed.basis == "borrowed:traces"
    assert 0 < borrowed.confidence < est.estimate("svc", "traces").confidence


def test_correct_applies_the_offsets():
    world, est, clock = make(seed=5)
    _rpc_traces(world, child_ahead=2_500, n=40)
    offset = est.estimate("svc", "traces").offset_ms
    span = world.span("svc", 2_500, BASE, BASE + 10)
    assert est.correct("traces", span) == span["start_ts"] + offset
    log = world.log("svc", 2_500, BASE, span["span_id"])
    assert est.correct("logs", log) == log["ts"] + est.estimate("svc", "logs").offset_ms
    assert est.correct("logs", {**KEY, "host": "other", "ts": 42}) == 42
    with pytest.raises(ValueError, match="use one of"):
        est.correct("events", log)
    with pytest.raises(ValueError, match="start_ts"):
        est.correct("traces", {"span_id": "x"})


def test_snapshot_restore_round_trip_through_json():
    world, est, clock = make(seed=5)
    _rpc_traces(world, child_ahead=2_500, n=20)
    parent = world.span("gw", 0, clock.now, clock.now + 10)
    est.observe("traces", parent)
    est.observe("traces", world.span("svc", 2_500, clock.now, clock.now + 99, parent=parent["span_id"]))
    est.observe("metrics", {**KEY, "host": "edge", "ts": clock.now + 5_000, "name": "m", "value": 1,
                            "broker_ts": clock.now})
    data = json.loads(json.dumps(est.snapshot(), allow_nan=False))
    again = SkewEstimator.restore(data, clock=clock)
    assert again.table() == est.table()
    assert again.snapshot() == data
    with pytest.raises(ValueError, match="relearns"):
        SkewEstimator.restore({"version": 99}, clock=clock)


def test_memory_stays_bounded():
    world, est, clock = make(max_sources=4, max_spans=100, max_waiting=10, max_votes=16)
    for i in range(500):
        clock.now += 10
        span = world.span(f"src{i % 10}", 0, clock.now, clock.now + 5)
        est.observe("traces", span)
        est.observe("logs", world.log(f"src{i % 10}", 0, clock.now + 1, f"missing{i}"))
        est.observe("logs", world.log("app", 0, clock.now + 1, span["span_id"]))
    assert len({row["source"] for row in est.table()}) <= 4
    assert len(est._spans) <= 100 and len(est._waiting_logs) <= 10
    assert est.estimate("app", "logs").samples <= 16


def test_old_evidence_fades_by_the_clock():
    world, est, clock = make(seed=1, half_life_ms=60_000, max_age_ms=600_000)
    for _ in range(20):
        world.linked_sample(log_ahead=800, outlier=False)
    fresh = est.estimate("app", "logs").confidence
    clock.now += 120_000
    assert est.estimate("app", "logs").confidence < fresh
    clock.now += 600_000
    assert est.estimate("app", "logs").samples == 0


def test_changes_counts_only_evidence_that_can_move_an_estimate():
    clock = Clock()
    est = SkewEstimator(clock=clock)
    unlinked = {**KEY, "instance_id": "w", "ts": BASE, "span_id": "never-arrives", "message": "m"}
    est.observe("logs", unlinked)  # waits for its span: no vote yet
    assert est.changes == 0
    est.observe("logs", {**unlinked, "broker_ts": BASE + 40})  # a first broker bound
    assert est.changes == 1
    est.observe("logs", {**unlinked, "broker_ts": BASE + 40})  # the same bound again
    assert est.changes == 1
    est.observe("traces", {**KEY, "instance_id": "gw", "trace_id": "t", "span_id": "never-arrives",
                           "start_ts": BASE - 10, "end_ts": BASE + 10})
    assert est.changes == 1 + 1 + 3  # the bound, the root span, a vote from each of the three waiting logs
    assert est.links == 1 + 3  # of those, what can move another (source, signal): the root, the votes


def test_observe_returns_the_records_source():
    est = SkewEstimator(clock=Clock())
    assert est.observe("logs", {**KEY, "instance_id": "i-1", "host": "h", "ts": BASE}) == "i-1"
    assert est.observe("metrics", {**KEY, "host": "h", "ts": BASE, "name": "m", "value": 1}) == "h"
    assert est.observe("logs", {**KEY, "ts": BASE}) == "unknown"


def test_a_broker_sample_no_clock_could_give_is_ignored_not_raised():
    est = SkewEstimator(clock=Clock())
    est.observe("logs", {**KEY, "instance_id": "w", "ts": -(2**70), "broker_ts": BASE})
    est.observe("logs", {**KEY, "instance_id": "w", "ts": BASE, "broker_ts": BASE + 40})
    assert est.estimate("w", "logs").samples == 1
    restored = SkewEstimator.restore(est.snapshot(), clock=Clock())
    assert restored.snapshot() == est.snapshot()
