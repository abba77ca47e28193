"""The per-plugin window store, with a clock advanced by hand and a plain-list model to compare with."""

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from plugwatch.tables.windows import ENTRY_OVERHEAD, RecordPacker, Slice, WindowStore

BASE = 1_700_000_000_000
ALL = (-(10**18), 10**18)


class Clock:
    def __init__(self, now: int = BASE):
        self.now = now

    def __call__(self) -> int:
        return self.now


def record(event_id, ts, source="i-1"):
    return {"event_id": event_id, "ts": ts, "tenant_id": "t", "plugin_id": "p", "instance_id": source}


def make(**caps):
    clock = Clock()
    return WindowStore(clock=clock, **caps), clock


def add(store, key, event_id, ts, size=100, signal="logs"):
    store.add(key, signal, record(event_id, ts - 7), corrected_ts=ts, raw_ts=ts - 7, size=size)


def ids(result: Slice):
    return [entry.event_id for entry in result.entries]


def test_slices_are_closed_on_both_ends_and_keep_raw_time_beside():
    store, _ = make()
    for i, ts in enumerate([BASE + 100, BASE + 200, BASE + 300]):
        add(store, "t/p", f"e{i}", ts)
    got = store.slice("t/p", BASE + 100, BASE + 200)
    assert ids(got) == ["e0", "e1"] and got.complete and got.reason is None
    assert ids(store.slice("t/p", BASE + 101, BASE + 299)) == ["e1"]
    entry = got.entries[0]
    assert (entry.corrected_ts, entry.raw_ts, entry.signal, entry.source, entry.size) == (
        BASE + 100, BASE + 93, "logs", "i-1", 100)


def test_late_data_lands_in_corrected_order_and_ties_keep_arrival_order():
    store, _ = make()
    for event_id, ts in [("a", 500), ("b", 100), ("c", 300), ("d", 300), ("e", 50)]:
        add(store, "t/p", event_id, BASE + ts)
    got = store.slice("t/p", *ALL)
    assert ids(got) == ["e", "b", "c", "d", "a"]
    assert [e.corrected_ts for e in got.entries] == sorted(e.corrected_ts for e in got.entries)


def test_signals_filter():
    store, _ = make()
    add(store, "t/p", "l", BASE + 1, signal="logs")
    add(store, "t/p", "s", BASE + 2, signal="traces")
    add(store, "t/p", "m", BASE + 3, signal="metrics")
    assert ids(store.slice("t/p", *ALL, signals=["traces", "metrics"])) == ["s", "m"]


def test_a_redelivered_event_id_is_ignored():
    store, _ = make()
    add(store, "t/p", "e1", BASE + 10)
    add(store, "t/p", "e1", BASE + 10)
    add(store, "t/other", "e1", BASE + 10)  # same id under another key is another record
    assert ids(store.slice("t/p", *ALL)) == ["e1"]
    assert store.stats()["entries"] == 2


def test_ids_sharing_a_tag_are_told_apart_by_the_record_and_packed_redeliveries_are_found(monkeypatch):
    """The window holds an 8-byte tag per event id, not the id: a tag match is only a hint."""
    from plugwatch.tables import windows

    monkeypatch.setattr(windows, "_tag", lambda event_id: b"\x07" * 8)  # every id collides
    now = BASE + 10_000
    store = WindowStore(clock=lambda: now, packer=RecordPacker(train_records=100))
    raws = [_telemetry(i) for i in range(300)]  # the last 200 are held packed
    for i, raw in enumerate(raws):
        store.add("t/p", "logs", orjson.loads(raw), BASE + i, BASE + i, len(raw), raw, "s")
    for i in (0, 150, 299):  # redeliveries, held as they came and packed
        store.add("t/p", "logs", orjson.loads(raws[i]), BASE + i, BASE + i, len(raws[i]), raws[i], "s")
    assert ids(store.slice("t/p", *ALL)) == [f"e{i}" for i in range(300)]
    assert store.stats()["entries"] == 300


def test_a_large_key_finds_a_redelivery_near_its_time_or_anywhere_else(monkeypatch):
    from plugwatch.tables import windows

    monkeypatch.setattr(windows, "_INDEX_FROM", 4)
    monkeypatch.setattr(windows, "_tag", lambda event_id: (1 + int(event_id[1:]) % 2).to_bytes(8, "little"))
    store, _ = make()
    for i in range(40):  # one a second: the key is indexed, and every other id shares a tag
        add(store, "t/p", f"e{i}", BASE + 1_000 * i)
    add(store, "t/p", "e20", BASE + 20_000)  # where its first copy is
    add(store, "t/p", "e21", BASE + 35_000)  # its estimate moved 14 s since: found further away
    add(store, "t/p", "e40", BASE + 20_000)  # new, though its tag is held right there
    assert ids(store.slice("t/p", *ALL)) == [f"e{i}" for i in range(21)] + ["e40"] + [f"e{i}" for i in range(21, 40)]


def test_a_tag_straddling_two_entries_is_not_taken_for_one(monkeypatch):
    from plugwatch.tables import windows

    tags = {"a": bytes([1, 2, 3, 4, 5, 6, 7, 8]), "b": bytes([9, 10, 11, 12, 13, 14, 15, 16]),
            "c": bytes([5, 6, 7, 8, 9, 10, 11, 12])}  # c's tag is a's second half and b's first
    monkeypatch.setattr(windows, "_tag", tags.__getitem__)
    store, _ = make()
    for event_id in "abc":
        add(store, "t/p", event_id, BASE + 10)
    assert ids(store.slice("t/p", *ALL)) == ["a", "b", "c"]


def test_per_key_entry_cap_evicts_that_keys_oldest_and_moves_its_watermark():
    store, _ = make(per_key_max_entries=3)
    add(store, "t/other", "x", BASE + 1)
    for i in range(5):
        add(store, "t/p", f"e{i}", BASE + 100 + i)
    got = store.slice("t/p", BASE + 103, BASE + 200)
    assert ids(store.slice("t/p", *ALL)) == ["e2", "e3", "e4"]
    assert got.complete and got.complete_from == BASE + 102
    older = store.slice("t/p", BASE + 50, BASE + 200)
    assert not older.complete and "dropped" in older.reason and "ClickHouse" in older.reason
    assert ids(store.slice("t/other", *ALL)) == ["x"] and store.slice("t/other", BASE, BASE + 9).complete
    assert store.stats()["evicted_total"] == 2


def test_per_key_byte_cap():
    store, _ = make(per_key_max_bytes=3 * (100 + ENTRY_OVERHEAD))
    for i in range(4):
        add(store, "t/p", f"e{i}", BASE + i)
    assert ids(store.slice("t/p", *ALL)) == ["e1", "e2", "e3"]
    add(store, "t/p", "huge", BASE + 9, size=10 * 2**20)  # can never fit: dropped, and the slice says so
    assert "huge" not in ids(store.slice("t/p", *ALL))
    assert store.slice("t/p", BASE + 9, BASE + 9).complete is False


def test_global_budget_evicts_the_globally_oldest_first_across_keys():
    cost = 100 + ENTRY_OVERHEAD
    store, _ = make(budget_bytes=4 * cost)
    add(store, "t/a", "a1", BASE + 10)
    add(store, "t/b", "b1", BASE + 20)
    add(store, "t/a", "a2", BASE + 30)
    add(store, "t/b", "b2", BASE + 5)  # late: now the oldest of all
    add(store, "t/c", "c1", BASE + 40)
    assert ids(store.slice("t/b", *ALL)) == ["b1"]  # b2 went first
    add(store, "t/c", "c2", BASE + 50)
    assert ids(store.slice("t/a", *ALL)) == ["a2"]  # then a1
    stats = store.stats()
    assert stats["bytes"] == 4 * cost <= store.budget_bytes and stats["evicted_total"] == 2
    assert not store.slice("t/a", BASE, BASE + 40).complete
    assert store.slice("t/a", BASE + 11, BASE + 40).complete


def test_expiry_follows_the_clock():
    store, clock = make(window_ms=60_000)
    add(store, "t/p", "old", BASE + 1_000)
    add(store, "t/p", "new", BASE + 50_000)
    clock.now = BASE + 61_001
    assert store.expire() == 1
    assert ids(store.slice("t/p", *ALL)) == ["new"]
    assert store.stats()["expired_total"] == 1
    assert not store.slice("t/p", BASE, BASE + 60_000).complete
    add(store, "t/p", "too-late", BASE + 500)  # older than the window on arrival: not kept
    assert ids(store.slice("t/p", *ALL)) == ["new"] and store.stats()["expired_total"] == 2
    assert store.expire() == 0


def test_completeness_from_store_start_and_across_a_rebuild():
    store, clock = make()
    never_seen = store.slice("t/new", BASE - 300_000, BASE)
    assert not never_seen.complete and "never held" in never_seen.reason
    assert store.slice("t/new", BASE, BASE + 10).complete  # held since start, nothing dropped
    store.mark_rebuilding("t/p")
    add(store, "t/p", "e1", BASE + 10)
    rebuilding = store.slice("t/p", BASE, BASE + 20)
    assert ids(rebuilding) == ["e1"] and not rebuilding.complete
    assert rebuilding.complete_from is None and "rebuilt" in rebuilding.reason
    assert store.stats()["rebuilding"] == 1
    store.mark_rebuilt("t/p", BASE - 900_000)
    assert store.slice("t/p", BASE - 300_000, BASE + 20).complete
    assert not store.slice("t/p", BASE - 900_001, BASE).complete


def test_forget_drops_a_key_and_its_slices_say_it_is_not_held():
    store, clock = make()
    add(store, "t/p", "e1", BASE + 1, size=300)
    add(store, "t/q", "e2", BASE + 2, size=50)
    clock.now += 5_000
    store.forget("t/p")
    assert store.keys() == ["t/q"]
    assert store.stats()["bytes"] == 50 + ENTRY_OVERHEAD and store.stats()["entries"] == 1
    gone = store.slice("t/p", *ALL)
    assert gone.entries == [] and not gone.complete and "not held" in gone.reason
    add(store, "t/p", "e3", BASE + 6_000)  # reassigned without a rebuild: held again from the forget
    assert store.slice("t/p", BASE + 5_000, BASE + 7_000).complete
    assert not store.slice("t/p", BASE, BASE + 7_000).complete


def test_a_key_forgets_the_sources_its_entries_no_longer_use():
    store, _ = make(per_key_max_entries=10)
    for i in range(1_000):  # a new instance every 5 records, as when pods keep being replaced
        ts = BASE + i
        store.add("t/p", "logs", record(f"e{i}", ts, source=f"pod-{i // 5}"), corrected_ts=ts, raw_ts=ts, size=10)
    held = store.slice("t/p", *ALL).entries
    assert [(e.event_id, e.source) for e in held] == [(f"e{i}", f"pod-{i // 5}") for i in range(990, 1_000)]
    assert len(store._windows["t/p"].kind_of) < 100  # bounded, not one per pod ever seen (200)


def test_recorrect_reindexes_a_key():
    store, _ = make()
    for i in range(3):
        add(store, "t/p", f"e{i}", BASE + 100 * i)
    store.add("t/p", "logs", record("x", BASE), corrected_ts=BASE + 50, raw_ts=BASE, size=10)
    # recorrect hands out entries without their records: times, signal and source only
    moved = store.recorrect("t/p", lambda e: e.raw_ts + 1_000 if e.raw_ts == BASE else e.corrected_ts)
    assert moved == 1
    assert ids(store.slice("t/p", *ALL)) == ["e0", "e1", "e2", "x"]
    assert store.slice("t/p", BASE + 1_000, BASE + 1_000).entries[0].event_id == "x"
    for event_id in ("x", "e0", "e2"):  # the ids moved with their entries: redeliveries are still found
        add(store, "t/p", event_id, BASE + 5)
    assert ids(store.slice("t/p", *ALL)) == ["e0", "e1", "e2", "x"]


class Model:
    """The store's rules on plain lists, O(n) everywhere."""

    def __init__(self, store: WindowStore):
        self.store, self.entries, self.seq = store, {}, 0  # key -> [(ts, seq, event_id, cost)]
        self.held, self.lost = {}, {}

    def total(self):
        return sum(cost for rows in self.entries.values() for *_, cost in rows)

    def drop(self, key, row):
        self.entries[key].remove(row)
        self.lost[key] = max(self.lost.get(key, row[0] + 1), row[0] + 1)

    def add(self, key, ts, event_id, size, now):
        s = self.store
        self.held.setdefault(key, BASE)
        rows = self.entries.setdefault(key, [])
        cost = size + ENTRY_OVERHEAD
        if ts < now - s.window_ms or cost > s.per_key_max_bytes or cost > s.budget_bytes:
            self.lost[key] = max(self.lost.get(key, ts + 1), ts + 1)
            return
        if any(row[2] == event_id for row in rows):
            return
        self.seq += 1
        rows.append((ts, self.seq, event_id, cost))
        while len(rows) > s.per_key_max_entries or sum(r[3] for r in rows) > s.per_key_max_bytes:
            self.drop(key, min(rows))
        while self.total() > s.budget_bytes:
            _, k, row = min((min(r)[0], k, min(r)) for k, r in self.entries.items() if r)
            self.drop(k, row)

    def expire(self, now):
        for key, rows in self.entries.items():
            for row in [r for r in rows if r[0] < now - self.store.window_ms]:
                self.drop(key, row)

    def forget(self, key, now):
        self.entries.pop(key, None)
        self.lost.pop(key, None)
        self.held[key] = now


# (what, key, ts delta, size, redeliver, tick): mostly adds, so the caps and the budget are reached.
operations = st.lists(
    st.tuples(st.sampled_from(["add"] * 6 + ["tick", "expire", "forget"]), st.integers(0, 3),
              st.integers(-3_000, 1_000), st.integers(1, 600), st.booleans(), st.integers(1, 4_000)),
    min_size=10,
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_accounting_never_drifts_and_matches_the_model(ops):
    run_against_the_model(ops)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_the_tag_index_of_large_keys_matches_the_model_when_tags_collide(ops):
    """Every key indexed from its first entry, and ids spread over three tags: the index must count
    how many live entries share a tag, and every hit is confirmed against the record."""
    from unittest import mock

    from plugwatch.tables import windows

    with mock.patch.object(windows, "_INDEX_FROM", 0), \
            mock.patch.object(windows, "_tag", lambda event_id: (hash(event_id) % 3 + 1).to_bytes(8, "little")):
        run_against_the_model(ops)


def run_against_the_model(ops):
    store, clock = make(window_ms=10_000, per_key_max_entries=4, per_key_max_bytes=2_000,
                        budget_bytes=6 * (300 + ENTRY_OVERHEAD))
    model = Model(store)
    counter = 0
    for what, k, delta, size, redeliver, tick in ops:
        key = f"t/p{k}"
        if what == "add":
            counter += 1
            known = [row[2] for row in model.entries.get(key, [])]
            event_id = known[-1] if redeliver and known else f"e{counter}"
            ts = clock.now + delta
            store.add(key, "logs", record(event_id, ts), corrected_ts=ts, raw_ts=ts, size=size)
            model.add(key, ts, event_id, size, clock.now)
            assert store.stats()["bytes"] <= store.budget_bytes
        elif what == "tick":
            clock.now += tick
        elif what == "expire":
            store.expire()
            model.expire(clock.now)
        else:
            store.forget(key)
            model.forget(key, clock.now)
        total = 0
        for key in store.keys():
            got = store.slice(key, *ALL)
            total += sum(entry.size + ENTRY_OVERHEAD for entry in got.entries)
            assert ids(got) == [row[2] for row in sorted(model.entries.get(key, []))]
            expected_from = max(model.held.get(key, BASE), model.lost.get(key, BASE))
            assert got.complete_from == expected_from
        stats = store.stats()
        assert stats["bytes"] == total == model.total()
        assert stats["entries"] == sum(len(rows) for rows in model.entries.values())


def test_entries_can_hold_the_json_bytes_instead_of_the_dict():
    import orjson

    now = 1_764_000_000_000
    store = WindowStore(clock=lambda: now)
    record = {"tenant_id": "t", "plugin_id": "p", "ts": now, "event_id": "e1", "instance_id": "i-1"}
    raw = orjson.dumps(record)
    store.add("t/p", "logs", record, now, now, len(raw), raw)
    store.add("t/p", "logs", record, now, now, len(raw), raw)  # redelivered: ignored
    [entry] = store.slice("t/p", now - 1, now).entries
    assert entry.record == raw and entry.data() == record
    assert (entry.source, entry.event_id) == ("i-1", "e1")


def _telemetry(i: int) -> bytes:
    return orjson.dumps({"ts": BASE + i, "event_id": f"e{i}", "tenant_id": "tenant-007", "plugin_id": f"plugin-{i % 5}",
                         "instance_id": f"plugin-{i % 5}-i{i % 3}", "level": "ERROR" if i % 7 == 0 else "INFO",
                         "message": f"request {i * 7919 % 100_003} took {i % 997} ms", "attributes": {"n": i}})


def test_records_are_held_packed_and_come_back_byte_for_byte():
    now = BASE + 10_000
    store = WindowStore(clock=lambda: now, packer=RecordPacker(train_records=200))
    raws = [_telemetry(i) for i in range(1_000)]
    for i, raw in enumerate(raws):
        store.add(f"t/p{i % 5}", "logs", {"event_id": f"e{i}"}, BASE + i, BASE + i, len(raw), raw, f"s{i % 3}")
    got = [entry.record for key in store.keys() for entry in store.slice(key, *ALL).entries]
    assert sorted(got) == sorted(raws)  # the first 200 (held as they came) and the packed rest
    stats = store.stats()
    assert stats["bytes"] == sum(len(raw) + ENTRY_OVERHEAD for raw in raws)  # the budget counts JSON bytes
    assert sum(map(len, raws[:200])) < stats["held_bytes"] < sum(map(len, raws)) / 2
    for key in store.keys():  # dropping every entry gives back every held byte
        store.forget(key)
    assert store.stats()["held_bytes"] == 0


def test_held_bytes_follow_evictions():
    now = BASE + 10_000
    raws = [_telemetry(i) for i in range(600)]
    store = WindowStore(clock=lambda: now, packer=RecordPacker(train_records=100),
                        budget_bytes=100 * (max(map(len, raws)) + ENTRY_OVERHEAD))
    packer = RecordPacker(train_records=100)
    packed = [packer.pack(raw) for raw in raws]  # the same dictionary: trained on the same first 100
    for i, raw in enumerate(raws):
        store.add("t/p", "logs", {"event_id": f"e{i}"}, BASE + i, BASE + i, len(raw), raw, "s")
    kept = [entry.event_id for entry in store.slice("t/p", *ALL).entries]
    assert kept == [f"e{i}" for i in range(600 - len(kept), 600)] and 0 < len(kept) <= 100
    assert store.stats()["held_bytes"] == sum(len(p) for p in packed[600 - len(kept):])


def test_packer_holds_records_as_they_came_until_trained_and_unpacks_both_forms():
    packer = RecordPacker(train_records=50)
    early = [packer.pack(_telemetry(i)) for i in range(50)]
    assert early == [_telemetry(i) for i in range(50)] and packer.trained
    late = packer.pack(_telemetry(50))
    assert late.startswith(RecordPacker.MAGIC) and len(late) < len(_telemetry(50))
    assert [packer.unpack(x) for x in early + [late]] == [_telemetry(i) for i in range(51)]


def test_packer_without_a_usable_dictionary_still_round_trips():
    packer = RecordPacker(train_records=3)
    [packer.pack(b'{"a":1}') for _ in range(3)]  # too little to train a dictionary on
    assert packer.trained
    raw = _telemetry(9) * 4
    assert packer.unpack(packer.pack(raw)) == raw
