"""The alert lifecycle: the whole state x event grid, immutability, persistence round trip."""

from __future__ import annotations

import dataclasses

import pytest

from plugwatch.regression.alerts import (
    EVENTS,
    STATES,
    AlertLifecycle,
    AlertTransitionError,
    Fix,
    apply,
)

T = 1_795_500_000_000

# state -> event -> new state; "=" a no-op, None refused.
GRID: dict[str, dict[str, str | None]] = {
    "open": {"reported": "reported", "ticketed": None, "fix_submitted": "regression_running",
             "regression_passed": None, "regression_failed": None},
    "reported": {"reported": "=", "ticketed": "ticketed", "fix_submitted": "regression_running",
                 "regression_passed": None, "regression_failed": None},
    "ticketed": {"reported": "=", "ticketed": "=", "fix_submitted": "regression_running",
                 "regression_passed": None, "regression_failed": None},
    "regression_running": {"reported": None, "ticketed": None, "fix_submitted": None,
                           "regression_passed": "resolved", "regression_failed": "failed"},
    "failed": {"reported": None, "ticketed": None, "fix_submitted": "regression_running",
               "regression_passed": None, "regression_failed": "="},
    "resolved": {"reported": None, "ticketed": None, "fix_submitted": None,
                 "regression_passed": "=", "regression_failed": None},
}
DETAILS = {"ticketed": {"ticket_id": "T-1"}}


def in_state(status: str) -> AlertLifecycle:
    return dataclasses.replace(AlertLifecycle.opened("a1", "acme", "pay", T, fingerprint="fp"), status=status)


def test_grid_covers_every_state_and_event():
    assert set(GRID) == set(STATES)
    assert all(set(row) == set(EVENTS) for row in GRID.values())


@pytest.mark.parametrize("state, event", [(s, e) for s in STATES for e in EVENTS])
def test_transition_grid(state, event):
    before = in_state(state)
    expected = GRID[state][event]
    if expected is None:
        with pytest.raises(AlertTransitionError) as info:
            apply(before, event, T + 1, by="someone", **DETAILS.get(event, {}))
        assert info.value.status == state and info.value.event == event
        assert state in str(info.value) and event in str(info.value)
        return
    after = apply(before, event, T + 1, by="someone", **DETAILS.get(event, {}))
    if expected == "=":
        assert after == before
        return
    assert after.status == expected
    assert after.history[-1] == (expected, T + 1, "someone")
    assert after.history[:-1] == before.history
    assert before.status == state  # the input is untouched


def test_resolved_is_final_and_says_so():
    with pytest.raises(AlertTransitionError, match="new alert opens a new lifecycle"):
        apply(in_state("resolved"), "fix_submitted", T)


def test_a_second_fix_while_running_is_refused():
    with pytest.raises(AlertTransitionError, match="in progress"):
        apply(in_state("regression_running"), "fix_submitted", T)


def test_full_lifecycle_records_report_ticket_fix_and_history():
    lc = AlertLifecycle.opened("a1", "acme", "pay", T, fingerprint="fp1", by="monitor")
    lc = apply(lc, "reported", T + 1, report_id="r1")
    lc = apply(lc, "reported", T + 2, report_id="r2")  # a revision: no-op
    lc = apply(lc, "ticketed", T + 3, ticket_id="T-9", ticket_url="https://tickets/T-9")
    lc = apply(lc, "fix_submitted", T + 4, by="dev", fix_id="f1", version="3.2.1", commit="abc")
    lc = apply(lc, "regression_failed", T + 5, fix_id="f1", note="1 of 1 checks failed")
    assert lc.status == "failed" and lc.last_note == "1 of 1 checks failed"
    lc = apply(lc, "fix_submitted", T + 6, by="dev", fix_id="f2", version="3.2.2")
    assert lc.last_note is None
    lc = apply(lc, "regression_passed", T + 7, fix_id="f2")
    assert lc.status == "resolved"
    assert (lc.report_id, lc.ticket_id, lc.ticket_url) == ("r1", "T-9", "https://tickets/T-9")
    assert lc.fix == Fix("f2", "3.2.2", None, T + 6, "dev")
    assert [s for s, _, _ in lc.history] == ["open", "reported", "ticketed", "regression_running", "failed",
                                             "regression_running", "resolved"]


def test_a_fix_without_a_ticket_is_allowed():
    lc = apply(AlertLifecycle.opened("a1", "acme", "pay", T), "fix_submitted", T + 1, version="1")
    assert lc.status == "regression_running" and lc.ticket_id is None


def test_a_stale_result_for_another_fix_is_refused():
    lc = apply(in_state("failed"), "fix_submitted", T, fix_id="new")
    with pytest.raises(AlertTransitionError, match="fix old"):
        apply(lc, "regression_passed", T + 1, fix_id="old")
    assert apply(lc, "regression_passed", T + 1, fix_id="new").status == "resolved"


def test_bad_events_and_details_are_programming_errors():
    lc = in_state("open")
    with pytest.raises(ValueError, match="unknown alert event"):
        apply(lc, "closed", T)
    with pytest.raises(TypeError, match="ticket_id"):
        apply(lc, "reported", T, ticket_id="x")
    with pytest.raises(ValueError, match="ticket_id"):
        apply(in_state("reported"), "ticketed", T)


def test_lifecycle_is_immutable():
    lc = AlertLifecycle.opened("a1", "acme", "pay", T)
    with pytest.raises(dataclasses.FrozenInstanceError):
        lc.status = "resolved"  # type: ignore[misc]
    assert isinstance(lc.history, tuple)
    after = apply(lc, "reported", T + 1)
    assert after is not lc and lc.status == "open" and len(lc.history) == 1


def test_round_trip_through_as_dict():
    lc = AlertLifecycle.opened("a1", "acme", "pay", T, fingerprint="fp", by="monitor")
    lc = apply(lc, "reported", T + 1, report_id="r1")
    lc = apply(lc, "ticketed", T + 2, ticket_id="T-1", ticket_url="u")
    lc = apply(lc, "fix_submitted", T + 3, by="dev", fix_id="f", version="3", commit="c")
    data = lc.as_dict()
    assert data["history"][0] == {"status": "open", "at_ms": T, "by": "monitor"}
    assert AlertLifecycle.from_dict(data) == lc
    fresh = AlertLifecycle.opened("a2", "acme", "pay", T)
    assert AlertLifecycle.from_dict(fresh.as_dict()) == fresh


def test_from_dict_rejects_unknown_status_and_missing_ids():
    data = AlertLifecycle.opened("a1", "acme", "pay", T).as_dict()
    with pytest.raises(ValueError, match="not one of"):
        AlertLifecycle.from_dict({**data, "status": "closed"})
    with pytest.raises(ValueError, match="alert_id"):
        AlertLifecycle.from_dict({**data, "alert_id": ""})
