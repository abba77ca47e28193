"""The window keeper: owned partitions, rebuild state, skew-corrected placement (controllable clock)."""

import uuid

import pytest

from plugwatch.tables.keeper import Rebuild, WindowKeeper
from plugwatch.tables.windows import WindowStore

NOW_MS = 1_764_000_000_000
WINDOW_MS = 900_000


class Clock:
    def __init__(self):
        self.ms = NOW_MS

    def seconds(self) -> float:
        return self.ms / 1000


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def keeper(clock):
    store = WindowStore(window_ms=WINDOW_MS, clock=lambda: clock.ms, started_ms=NOW_MS - 10_000)
    partitions = {"acme/a": 0, "acme/b": 1}
    keeper = WindowKeeper(
        store, {"logs": "m.logs", "traces": "m.traces", "metrics": "m.metrics"},
        partition_for=lambda key: partitions.get(key, 0), window_ms=WINDOW_MS, clock=clock.seconds,
    )
    keeper.owned = {0, 1}
    return keeper


def log(key: str, ts: int, **fields) -> dict:
    tenant, plugin = key.split("/")
    return {"tenant_id": tenant, "plugin_id": plugin, "ts": ts, "event_id": uuid.uuid4().hex, **fields}


def test_records_land_in_their_plugins_window_and_too_old_ones_do_not(keeper):
    assert keeper.apply("logs", "acme/a", log("acme/a", NOW_MS - 1000), 100, 0)
    assert not keeper.apply("logs", "acme/a", log("acme/a", NOW_MS - WINDOW_MS - 1), 100, 0)
    assert not keeper.apply("logs", "acme/a", {"tenant_id": "acme", "plugin_id": "a"}, 10, 0)  # no time
    window = keeper.slice("acme/a", NOW_MS - 5000, NOW_MS)
    assert [e.raw_ts for e in window.entries] == [NOW_MS - 1000]
    assert keeper.dirty == {"acme/a"}


def test_a_plugin_owned_elsewhere_or_being_rebuilt_gives_incomplete_slices(keeper):
    keeper.owned = {0}
    assert "owned by another worker" in keeper.slice("acme/b", NOW_MS - 1000, NOW_MS).reason
    keeper.rebuilding[0] = Rebuild(NOW_MS / 1000, {})
    window = keeper.slice("acme/a", NOW_MS - 1000, NOW_MS)
    assert not window.complete and "being rebuilt" in window.reason


def test_after_a_rebuild_old_and_new_keys_are_complete_since_the_replay_start(keeper, clock):
    keeper.rebuilding[0] = Rebuild(NOW_MS / 1000, {})
    keeper.apply("logs", "acme/a", log("acme/a", NOW_MS - 600_000), 100, 0)  # replayed
    rebuild = keeper.rebuilding.pop(0)
    keeper.rebuilt(0, rebuild)
    assert keeper.slice("acme/a", NOW_MS - WINDOW_MS, NOW_MS).complete
    clock.ms += 1000
    keeper.apply("logs", "acme/c", log("acme/c", clock.ms - 10), 100, 0)  # first seen after the rebuild
    window = keeper.slice("acme/c", NOW_MS - WINDOW_MS, clock.ms)
    assert window.complete and window.complete_from == NOW_MS - WINDOW_MS


def test_revoked_partitions_forget_their_plugins(keeper):
    keeper.apply("logs", "acme/a", log("acme/a", NOW_MS - 10), 100, 0)
    keeper.apply("logs", "acme/b", log("acme/b", NOW_MS - 10), 100, 1)
    keeper.forget_partitions({1})
    keeper.owned = {0}
    assert keeper.slice("acme/b", NOW_MS - 1000, NOW_MS).entries == []
    assert "acme/b" not in keeper.skew and len(keeper.slice("acme/a", NOW_MS - 1000, NOW_MS).entries) == 1


def test_entries_placed_before_the_skew_was_known_are_moved_when_it_is(keeper, clock):
    key = "acme/a"
    base = NOW_MS - 200_000
    for i in range(60):
        start = base + i * 1000
        span_id = f"{i + 1:016x}"
        keeper.apply("traces", key, {**log(key, 0), "instance_id": "api", "span_id": span_id, "trace_id": "ab" * 16,
                                     "start_ts": start, "end_ts": start + 200}, 100, 0)
        keeper.apply("logs", key, log(key, start + 100 + 3000, instance_id="w1", span_id=span_id), 100, 0)
    clock.ms += 2000  # the estimator refits on a clock tick
    keeper.recorrect_moved()
    logs = keeper.slice(key, base - 10_000, NOW_MS, ["logs"]).entries
    assert len(logs) == 60
    assert all(abs(e.corrected_ts - (e.raw_ts - 3000)) <= 50 for e in logs)


def test_logs_applied_before_their_spans_are_moved_once_the_spans_arrive(keeper, clock):
    # No log follows the spans, so nothing on the log path notices the estimate moved.
    key = "acme/a"
    base = NOW_MS - 200_000
    for i in range(60):
        keeper.apply("logs", key, log(key, base + i * 1000 + 100 + 3000, instance_id="w1", span_id=f"{i + 1:016x}"),
                     100, 0)
    keeper.recorrect_moved()
    for i in range(60):
        start = base + i * 1000
        keeper.apply("traces", key, {**log(key, 0), "instance_id": "api", "span_id": f"{i + 1:016x}",
                                     "trace_id": "ab" * 16, "start_ts": start, "end_ts": start + 200}, 100, 0)
    clock.ms += 2000  # the estimator refits on a clock tick
    assert keeper.recorrect_moved() == 1
    logs = keeper.slice(key, base - 10_000, NOW_MS, ["logs"]).entries
    assert len(logs) == 60
    assert all(abs(e.corrected_ts - (e.raw_ts - 3000)) <= 50 for e in logs)
    assert keeper.recorrect_moved() == 0  # placed with what was learnt: nothing more to move


def test_a_broker_bound_that_moves_a_sources_offset_moves_its_entries(keeper, clock):
    # The bound caps only its own (source, signal): the record that moves it is corrected with the
    # new offset, and the entries placed before are re-indexed on the next retime.
    key = "acme/a"
    for i in range(10):  # stamped 3 s ahead, bound not yet known: placed at their raw time
        keeper.apply("logs", key, log(key, NOW_MS - 20_000 + i * 100, instance_id="w1"), 100, 0)
    ahead = log(key, NOW_MS + 3_000, instance_id="w1", broker_ts=NOW_MS)
    keeper.apply("logs", key, ahead, 100, 0)
    assert keeper.observed == set()  # no vote or root span: nothing for the other sources
    assert keeper.recorrect_moved() == 1
    logs = keeper.slice(key, NOW_MS - 30_000, NOW_MS + 10_000, ["logs"]).entries
    assert len(logs) == 11
    assert all(e.corrected_ts == e.raw_ts - 3_000 + 100 for e in logs)  # the bound's tolerance is 100 ms


def test_watermark_is_the_newest_corrected_time_and_count_bisects_the_window(keeper):
    assert keeper.watermark("acme/a") is None and keeper.count("acme/a", 0, NOW_MS) == 0
    keeper.apply("logs", "acme/a", log("acme/a", NOW_MS - 5_000), 100, 0)
    keeper.apply("logs", "acme/a", log("acme/a", NOW_MS - 9_000), 100, 0)
    keeper.apply("logs", "acme/a", log("acme/a", NOW_MS - 7_000), 100, 0)
    assert keeper.watermark("acme/a") == NOW_MS - 5_000
    assert keeper.count("acme/a", NOW_MS - 9_000, NOW_MS - 7_000) == 2  # both ends included
    assert keeper.count("acme/a", NOW_MS - 4_999, NOW_MS) == 0
    keeper.forget_partitions({0})
    assert keeper.watermark("acme/a") is None


def test_caught_up_once_the_plugins_partition_was_applied_past_a_time(keeper):
    assert not keeper.caught_up("acme/b", NOW_MS)
    keeper.written_until[1] = NOW_MS - 1
    assert not keeper.caught_up("acme/b", NOW_MS)
    keeper.written_until[1] = NOW_MS
    assert keeper.caught_up("acme/b", NOW_MS) and not keeper.caught_up("acme/a", NOW_MS)  # other partition
