"""When reports are built and rebuilt: late data, grace, revisions (pure, with a controllable clock)."""

from __future__ import annotations

from plugwatch.reports.model import Alert
from plugwatch.reports.owners import Owners
from plugwatch.reports.schedule import ReportScheduler
from plugwatch.web.auth import Principal, may_read_plugin

T = 1_795_500_000_000


class Clock:
    def __init__(self, now: int = T):
        self.now = now

    def __call__(self) -> int:
        return self.now


def alert(alert_id: str = "a1", ts: int = T, plugin: str = "p") -> Alert:
    return Alert(alert_id=alert_id, ts=ts, tenant_id="acme", plugin_id=plugin)


def scheduler(clock: Clock, **kw) -> ReportScheduler:
    return ReportScheduler(grace_ms=kw.get("grace_ms", 500), horizon_ms=kw.get("horizon_ms", 60_000),
                           max_open=kw.get("max_open", 100), clock=clock)


def test_an_alert_waits_for_telemetry_past_its_time_then_builds_at_once():
    clock = Clock()
    s = scheduler(clock)
    s.add(alert(), "r1", (T - 300_000, T))
    marks = {"acme/p": T - 5_000}

    def past(pending):
        return marks.get(pending.alert.key, 0) >= pending.alert.ts

    assert s.due(past) == []  # telemetry consumed only up to 5 s before the alert
    clock.now += 100
    marks["acme/p"] = T + 10
    due = s.due(past)
    assert [p.report_id for p in due] == ["r1"]
    assert s.due(past) == []  # handed out once


def test_without_telemetry_the_grace_decides():
    clock = Clock()
    s = scheduler(clock, grace_ms=500)
    s.add(alert(), "r1", (T - 300_000, T))
    clock.now += 499
    assert s.due(lambda pending: False) == []
    assert s.next_deadline() == T + 500
    clock.now += 1
    assert [p.report_id for p in s.due(lambda pending: False)] == ["r1"]


def test_a_redelivered_alert_is_not_scheduled_twice():
    clock = Clock()
    s = scheduler(clock)
    first = s.add(alert(), "r1", (T - 300_000, T))
    clock.now += 200
    again = s.add(alert(), "r1", (T - 300_000, T))
    assert again is first and again.consumed_at == T


def test_more_records_inside_the_window_make_a_revision_records_after_it_do_not():
    clock = Clock()
    s = scheduler(clock)
    held = {"acme/p": [T - 10_000] * 10}

    def count(key, lo, hi):
        return sum(lo <= ts <= hi for ts in held.get(key, []))

    s.built("r1", alert(), (T - 300_000, T), T, revision=1, entries=10)
    held["acme/p"].append(T + 5_000)  # after the window: no revision
    held["acme/other"] = [T - 1_000]  # another plugin
    assert s.revisions_due(count) == []
    held["acme/p"].append(T - 1_000)
    due = s.revisions_due(count)
    assert [r.report_id for r in due] == ["r1"] and due[0].revision == 1
    assert s.revisions_due(count) == []  # being built
    s.built("r1", alert(), (T - 300_000, T), T, revision=2, entries=11)
    assert s.open["r1"].revision == 2 and s.revisions_due(count) == []


def test_a_rebuild_that_was_not_written_keeps_watching_from_what_it_saw():
    clock = Clock()
    s = scheduler(clock)
    s.built("r1", alert(), (T - 300_000, T), T, revision=1, entries=10)
    (report,) = s.revisions_due(lambda key, lo, hi: 11)
    s.unchanged("r1", 11)
    assert s.revisions_due(lambda key, lo, hi: 11) == []
    assert [r.report_id for r in s.revisions_due(lambda key, lo, hi: 12)] == ["r1"]


def test_reports_stop_being_watched_after_the_horizon_and_beyond_max_open():
    clock = Clock()
    s = scheduler(clock, horizon_ms=1_000, max_open=2)
    for i in range(3):
        s.built(f"r{i}", alert(f"a{i}"), (T - 300_000, T), T, revision=1, entries=1)
    assert list(s.open) == ["r1", "r2"]  # the oldest went
    clock.now += 1_000
    assert s.revisions_due(lambda key, lo, hi: 5) == [] and not s.open


def test_owners_file_first_match_wins_and_missing_file_means_none(tmp_path):
    path = tmp_path / "owners.yaml"
    path.write_text(
        "owners:\n"
        "  - {tenant: acme, plugin: pay, owner: team-pay, principals: [pay-dev]}\n"
        "  - {tenant: '*', plugin: '*', owner: oncall}\n"
    )
    owners = Owners.from_file(path)
    assert owners.owner_of("acme", "pay") == "team-pay"
    assert owners.principals_of("acme", "pay") == frozenset({"pay-dev"})
    assert owners.owner_of("other", "x") == "oncall" and owners.principals_of("other", "x") == frozenset()
    assert Owners.from_file(tmp_path / "absent.yaml").owner_of("acme", "pay") is None


def test_reports_are_for_the_tenant_the_owners_security_and_auditors():
    def who(name, roles, tenants):
        return Principal(name, frozenset(roles), frozenset(tenants))

    owners = frozenset({"pay-dev"})
    assert may_read_plugin(who("sec", ["security"], ["*"]), "acme", owners)
    assert may_read_plugin(who("aud", ["auditor"], ["acme"]), "acme", owners)
    assert not may_read_plugin(who("aud", ["auditor"], ["globex"]), "acme", owners)
    assert may_read_plugin(who("dev", ["developer"], ["acme"]), "acme", owners)
    assert may_read_plugin(who("pay-dev", ["developer"], ["globex"]), "acme", owners)
    assert not may_read_plugin(who("ops", ["ops"], ["*"]), "acme", owners)  # "*" is not the tenant
    assert not may_read_plugin(who("dev", ["developer"], ["globex"]), "acme", owners)


def test_revisions_are_spaced_twice_as_long_each_time_up_to_the_most():
    clock = Clock()
    s = ReportScheduler(grace_ms=500, horizon_ms=600_000, max_open=10, clock=clock,
                        min_interval_ms=1_000, max_interval_ms=4_000)
    window = (T - 300_000, T)
    held = {"n": 10}

    def count(key, lo, hi):
        return held["n"]

    s.built("r1", alert(), window, T, 1, 10)
    gaps = []
    last = clock.now
    for revision in range(2, 7):
        held["n"] += 1  # late telemetry keeps arriving
        while not s.revisions_due(count):
            clock.now += 100
        gaps.append(clock.now - last)
        last = clock.now
        s.built("r1", alert(), window, T, revision, held["n"])
    assert gaps == [1_000, 2_000, 4_000, 4_000, 4_000]
    assert s.spacing(1) == 1_000 and s.spacing(40) == 4_000


def test_a_revision_waits_for_late_telemetry_to_settle_or_the_longest_interval():
    clock = Clock()
    s = ReportScheduler(grace_ms=500, horizon_ms=600_000, max_open=10, clock=clock,
                        min_interval_ms=1_000, max_interval_ms=10_000, settle_ms=2_000)
    window = (T - 300_000, T)
    held = {"n": 10}

    def count(key, lo, hi):
        return held["n"]

    def step(ms: int, grow: int = 0) -> list[str]:
        clock.now += ms
        held["n"] += grow
        return [r.report_id for r in s.revisions_due(count)]

    s.built("r1", alert(), window, T, 1, 10)
    # A burst of late records, then quiet: one revision once it has been quiet for 2 s.
    assert step(500, 3) == [] and step(500, 2) == [] and step(1_000) == [] and step(900) == []
    assert step(100) == ["r1"]
    s.built("r1", alert(), window, T, 2, held["n"])
    # A steady trickle never settles: a revision every 10 s all the same.
    due_at = []
    for _ in range(40):
        if step(500, 1):
            due_at.append(clock.now - T)
            s.built("r1", alert(), window, T, 3, held["n"])
    assert due_at == [13_000, 23_000]
