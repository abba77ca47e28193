"""The suspension state machine: the whole status x event grid, approvals, execution, resume,
elapsed_ms, persistence, and a property test over random event sequences. Plain data, a hand clock."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugwatch.suspension import machine as m
from plugwatch.suspension.machine import (
    AUTO_APPROVER,
    RESUME_STATUSES,
    SUSPEND_STATUSES,
    Audit,
    Completed,
    ConflictError,
    ForbiddenError,
    InvalidEventError,
    NotAllowedError,
    Notify,
    RaiseAlert,
    ScheduleTimeout,
    SelfApprovalError,
    SendCommand,
    SnapshotEvidence,
    Suspension,
    SuspensionError,
    ack,
    approve,
    lock,
    reject,
    request,
    resume_request,
    timeout,
)
from plugwatch.suspension.policy import SuspendPolicies

T = 1_800_000_000_000
POLICIES = SuspendPolicies.shipped()
TENANT, PLUGIN = "acme", "payment-gateway"
SEC, OPS, DEV = ("security",), ("ops",), ("developer",)


# --- helpers -----------------------------------------------------------------------------------

def ask(existing=None, *, rid="r1", severity="high", requester="alice", at=T, mode=None, force=False,
        policy=POLICIES, plugin=PLUGIN):
    return request(existing, request_id=rid, tenant_id=TENANT, plugin_id=plugin, severity=severity, mode=mode,
                   requester=requester, reason="card data in logs", at_ms=at, policy=policy, force=force)


def ok(s: Suspension, status: str | None = None, at: int | None = None) -> dict:
    """An ack for the current command."""
    command = s.current_command
    assert command is not None
    return {"command_id": command["command_id"], "plugin_id": s.plugin_id, "instance_id": "rt-0",
            "status": status or ("forced" if command["action"] == "force_suspend" else "drained"),
            "in_flight": 2, "ts": at or T}


def of(effects, kind):
    return [e for e in effects if isinstance(e, kind)]


def commands(effects):
    return [e.command for e in of(effects, SendCommand)]


def requested() -> Suspension:
    return ask()[0]


def executing() -> Suspension:
    return approve(requested(), principal="sam", roles=SEC, at_ms=T + 1000)[0]


def suspended() -> Suspension:
    s = executing()
    return ack(s, ok(s), T + 5000)[0]


def failed() -> Suspension:  # low: no escalation and no lock
    s, _ = ask(severity="low")
    s, _ = approve(s, principal="sam", roles=SEC, at_ms=T + 1000)
    s, _ = approve(s, principal="otto", roles=OPS, at_ms=T + 2000)
    return timeout(s, s.current_command["command_id"], s.current_command["deadline"])[0]


def locked() -> Suspension:
    s, _ = ask(force=True)
    s, _ = approve(s, principal="sam", roles=SEC, at_ms=T + 1000)
    for i in range(3):
        s, _ = ack(s, ok(s, "failed"), T + 2000 + i)
    assert s.status == "locked"
    return s


def rejected() -> Suspension:
    return reject(requested(), principal="sam", roles=SEC, at_ms=T + 1000, reason="false positive")[0]


def approved() -> Suspension:  # passed through within a call; reachable at rest only from a record
    return dataclasses.replace(requested(), status="approved")


def res_requested() -> Suspension:
    return resume_request(suspended(), request_id="q1", tenant_id=TENANT, plugin_id=PLUGIN, requester="dana",
                          at_ms=T + 10_000, policy=POLICIES)[0]


def res_executing() -> Suspension:
    s, _ = approve(res_requested(), principal="sam", roles=SEC, at_ms=T + 11_000)
    return approve(s, principal="otto", roles=OPS, at_ms=T + 12_000)[0]


def res_resumed() -> Suspension:
    s = res_executing()
    return ack(s, ok(s), T + 13_000)[0]


def res_failed() -> Suspension:
    s = res_executing()
    for _ in range(2):
        s, _ = timeout(s, s.current_command["command_id"], s.current_command["deadline"])
    assert s.status == "failed"
    return s


def res_rejected() -> Suspension:
    return reject(res_requested(), principal="sam", roles=SEC, at_ms=T + 11_000)[0]


def res_approved() -> Suspension:
    return dataclasses.replace(res_requested(), status="approved")


BUILD: dict[tuple[str, str], Callable[[], Suspension]] = {
    ("suspend", "requested"): requested, ("suspend", "approved"): approved, ("suspend", "executing"): executing,
    ("suspend", "suspended"): suspended, ("suspend", "failed"): failed, ("suspend", "locked"): locked,
    ("suspend", "rejected"): rejected,
    ("resume", "requested"): res_requested, ("resume", "approved"): res_approved,
    ("resume", "executing"): res_executing, ("resume", "resumed"): res_resumed, ("resume", "failed"): res_failed,
    ("resume", "rejected"): res_rejected,
}

AT = T + 100_000  # every grid event happens after every fixture step


def ev_request(s):
    return ask(s, rid="r-new", requester="carol", at=AT)


def ev_force_request(s):
    return ask(s, rid="r-force", requester="carol", at=AT, force=True)


def ev_approve(s):
    return approve(s, principal="vic", roles=("security", "ops"), at_ms=AT)


def ev_reject(s):
    return reject(s, principal="vic", roles=SEC, at_ms=AT, reason="no")


def ev_lock(s):
    return lock(s, principal="otto", roles=OPS, at_ms=AT)


def ev_ack(s):
    if s.current_command is None:
        return ack(s, {"command_id": f"{s.suspension_id}-1-suspend", "status": "drained"}, AT)
    return ack(s, ok(s), AT)


def ev_ack_failed(s):
    if s.current_command is None:
        return ack(s, {"command_id": f"{s.suspension_id}-1-suspend", "status": "failed"}, AT)
    return ack(s, ok(s, "failed"), AT)


def ev_timeout(s):
    return timeout(s, s.current_command["command_id"] if s.current_command else "none", AT)


def ev_resume(s):
    return resume_request(s, request_id="q-new", tenant_id=TENANT, plugin_id=PLUGIN, requester="erin",
                          at_ms=AT, policy=POLICIES)


EVENTS = {"request": ev_request, "force_request": ev_force_request, "approve": ev_approve, "reject": ev_reject,
          "lock": ev_lock, "ack": ev_ack, "ack_failed": ev_ack_failed, "timeout": ev_timeout,
          "resume_request": ev_resume}

# Expected outcome: a status = the same suspension in that status; "=" = unchanged, no effects;
# "new:<status>" = a new record; "merged" = the same status with the request appended; an error class.
C = ConflictError
SUSPEND_GRID: dict[str, dict[str, object]] = {
    "requested": {"request": "merged", "force_request": "merged", "approve": "executing", "reject": "rejected",
                  "lock": C, "ack": "=", "ack_failed": "=", "timeout": "=", "resume_request": C},
    "approved": {"request": "merged", "force_request": "merged", "approve": C, "reject": "rejected",
                 "lock": C, "ack": "=", "ack_failed": "=", "timeout": "=", "resume_request": C},
    "executing": {"request": "merged", "force_request": "executing", "approve": C, "reject": C, "lock": C,
                  "ack": "suspended", "ack_failed": "executing", "timeout": "executing", "resume_request": C},
    "suspended": {"request": "merged", "force_request": "merged", "approve": C, "reject": C, "lock": "locked",
                  "ack": "=", "ack_failed": "=", "timeout": "=", "resume_request": "new:requested"},
    "failed": {"request": "new:requested", "force_request": "new:requested", "approve": C, "reject": C,
               "lock": "locked", "ack": "=", "ack_failed": "=", "timeout": "=", "resume_request": "new:requested"},
    "locked": {"request": "merged", "force_request": "merged", "approve": C, "reject": C, "lock": C,
               "ack": "locked", "ack_failed": "locked", "timeout": "=", "resume_request": "new:requested"},
    "rejected": {"request": "new:requested", "force_request": "new:requested", "approve": C, "reject": C,
                 "lock": C, "ack": "=", "ack_failed": "=", "timeout": "=", "resume_request": C},
}
RESUME_GRID: dict[str, dict[str, object]] = {
    "requested": {"request": C, "force_request": C, "approve": "requested", "reject": "rejected", "lock": C,
                  "ack": "=", "ack_failed": "=", "timeout": "=", "resume_request": "merged"},
    "approved": {"request": C, "force_request": C, "approve": C, "reject": "rejected", "lock": C,
                 "ack": "=", "ack_failed": "=", "timeout": "=", "resume_request": "merged"},
    "executing": {"request": C, "force_request": C, "approve": C, "reject": C, "lock": C,
                  "ack": "resumed", "ack_failed": "executing", "timeout": "executing", "resume_request": "merged"},
    "resumed": {"request": "new:requested", "force_request": "new:requested", "approve": C, "reject": C,
                "lock": C, "ack": "=", "ack_failed": "=", "timeout": "=", "resume_request": C},
    "failed": {"request": "new:requested", "force_request": "new:requested", "approve": C, "reject": C,
               "lock": C, "ack": "=", "ack_failed": "=", "timeout": "=", "resume_request": "new:requested"},
    "rejected": {"request": "new:requested", "force_request": "new:requested", "approve": C, "reject": C,
                 "lock": C, "ack": "=", "ack_failed": "=", "timeout": "=", "resume_request": "new:requested"},
}
GRID = {"suspend": SUSPEND_GRID, "resume": RESUME_GRID}


def test_grid_covers_every_status_and_event():
    assert set(SUSPEND_GRID) == set(SUSPEND_STATUSES) and set(RESUME_GRID) == set(RESUME_STATUSES)
    assert all(set(row) == set(EVENTS) for grid in GRID.values() for row in grid.values())
    assert all(BUILD[key]().status == key[1] and BUILD[key]().kind == key[0] for key in BUILD)


@pytest.mark.parametrize("kind, status, event", [
    (kind, status, event) for kind, grid in GRID.items() for status in grid for event in EVENTS])
def test_transition_grid(kind, status, event):
    before = BUILD[(kind, status)]()
    expected = GRID[kind][status][event]
    if isinstance(expected, type):
        with pytest.raises(expected) as info:
            EVENTS[event](before)
        assert isinstance(info.value, SuspensionError) and info.value.code in (
            "conflict", "forbidden", "self_approval", "not_allowed", "invalid")
        return
    after, effects = EVENTS[event](before)
    if expected == "=":
        assert after is before and effects == []
        return
    assert effects and all(isinstance(e, m.Effect) for e in effects)
    assert Suspension.from_dict(json.loads(json.dumps(after.as_dict()))) == after
    if isinstance(expected, str) and expected.startswith("new:"):
        assert after.suspension_id != before.suspension_id and after.status == expected[4:]
        assert len(after.requests) == 1 and after.history[0].status == "requested"
        return
    assert after.suspension_id == before.suspension_id
    assert after.history[: len(before.history)] == before.history and len(after.history) > len(before.history)
    if expected == "merged":
        assert after.status == before.status and len(after.requests) == len(before.requests) + 1
    else:
        assert after.status == expected


# --- requests and merging ------------------------------------------------------------------------

def test_a_request_opens_a_requested_suspension_with_a_deterministic_id():
    s, effects = ask()
    assert s.status == "requested" and s.kind == "suspend" and s.mode == "wait" and s.severity == "high"
    assert s.suspension_id == m.suspension_id_for("suspend", TENANT, PLUGIN, "r1") == ask()[0].suspension_id
    assert s.suspension_id.startswith("SUS-") and len(s.suspension_id) == 20
    assert s.requester == "alice" and s.requests == (m.Request("r1", "alice", T, "high", None, "card data in logs"),)
    assert s.commands == () and s.created_ms == s.updated_ms == T and s.finished_ms is None
    assert [e.action for e in of(effects, Audit)] == ["suspend.requested"]
    assert [e.kind for e in of(effects, Notify)] == ["suspend.requested"]
    assert of(effects, Notify)[0].details["needs"] == "1 of security"


def test_ten_concurrent_requests_merge_into_one_suspension():
    s = None
    for i in range(10):
        s, effects = ask(s, rid=f"r{i}", requester=f"user{i}", at=T + i)
        assert not commands(effects)
    assert s.suspension_id == m.suspension_id_for("suspend", TENANT, PLUGIN, "r0")
    assert [r.request_id for r in s.requests] == [f"r{i}" for i in range(10)]
    assert s.requesters == tuple(f"user{i}" for i in range(10)) and s.status == "requested"
    s, effects = approve(s, principal="sam", roles=SEC, at_ms=T + 50)
    assert s.status == "executing" and len(commands(effects)) == 1
    s, effects = ask(s, rid="r10", requester="late", at=T + 60)  # merged while executing: no second command
    assert s.status == "executing" and not commands(effects) and len(s.commands) == 1


def test_a_replayed_request_changes_nothing():
    s, _ = ask()
    again, effects = ask(s, at=T + 5)
    assert again is s and effects == []
    done = suspended()
    assert ask(done)[0] is done


def test_a_request_for_another_plugin_is_invalid():
    with pytest.raises(InvalidEventError, match="belongs to acme/payment-gateway") as info:
        ask(requested(), rid="x", plugin="other")
    assert info.value.code == "invalid" and info.value.http_status == 400


def test_force_request_switches_a_requested_suspension_to_force():
    s, _ = ask()
    s, _ = ask(s, rid="r2", requester="bob", force=True)
    assert s.mode == "force"
    s, effects = approve(s, principal="sam", roles=SEC, at_ms=T + 1)
    assert [c["action"] for c in commands(effects)] == ["force_suspend"]


def test_force_request_escalates_a_waiting_execution_at_once():
    s, effects = ask(executing(), rid="r2", requester="bob", force=True, at=T + 2000)
    assert s.mode == "force" and [c["action"] for c in commands(effects)] == ["force_suspend"]
    assert s.current_command["deadline"] == T + 2000 + 15_000
    assert [e.kind for e in of(effects, Notify)] == ["suspend.escalated"]


def test_force_is_refused_where_the_policy_forbids_it():
    for kwargs in ({"force": True}, {"mode": "force"}):
        with pytest.raises(ForbiddenError, match="low policy does not allow force") as info:
            ask(severity="low", **kwargs)
        assert info.value.code == "forbidden" and info.value.http_status == 403
    low, _ = ask(severity="low")
    with pytest.raises(ForbiddenError):
        ask(low, rid="r2", requester="bob", severity="low", force=True)


def test_a_more_severe_request_raises_the_severity_and_its_policy():
    s, _ = ask(severity="medium")
    s, _ = approve(s, principal="sam", roles=SEC, at_ms=T + 1)
    assert s.status == "requested"  # medium needs ops as well
    s, effects = ask(s, rid="r2", requester="bob", severity="high", at=T + 2)
    assert s.severity == "high" and s.policy == POLICIES.for_severity("high")
    assert s.status == "executing" and len(commands(effects)) == 1  # sam's approval suffices for high


def test_a_less_severe_request_keeps_the_severity():
    s, _ = ask(severity="high")
    s, _ = ask(s, rid="r2", requester="bob", severity="low")
    assert s.severity == "high" and s.policy == POLICIES.for_severity("high")


def test_invalid_requests():
    with pytest.raises(InvalidEventError, match="severity 'info'"):
        ask(severity="info")
    with pytest.raises(InvalidEventError, match="mode 'gentle'"):
        ask(mode="gentle")
    with pytest.raises(InvalidEventError, match="requester must be a non-empty string"):
        ask(requester="")
    with pytest.raises(InvalidEventError, match="at_ms"):
        ask(at=1.5)
    with pytest.raises(InvalidEventError, match="given the critical policy"):
        ask(severity="high", policy=POLICIES.for_severity("critical"))
    with pytest.raises(InvalidEventError):
        ask(existing={"status": "requested"})


def test_a_suspend_request_during_an_open_resume_conflicts():
    with pytest.raises(ConflictError, match="reject it before requesting"):
        ask(res_requested(), rid="r9")


# --- approvals -----------------------------------------------------------------------------------

def test_critical_from_the_risk_scanner_is_approved_and_executed_at_once():
    s, effects = ask(severity="critical", requester="secscan", mode="wait")
    assert s.status == "executing" and [h.status for h in s.history] == ["requested", "approved", "executing"]
    assert s.approvals == (m.Approval(AUTO_APPROVER, ("policy",), T),)
    [command] = commands(effects)
    assert command == {
        "command_id": f"{s.suspension_id}-1-suspend", "suspension_id": s.suspension_id, "tenant_id": TENANT,
        "plugin_id": PLUGIN, "action": "suspend", "mode": "wait", "deadline": T + 30_000, "requester": "secscan",
        "approvers": [AUTO_APPROVER], "attempt": 1, "issued_at_ms": T, "reason": "card data in logs"}
    assert of(effects, ScheduleTimeout) == [ScheduleTimeout(s.suspension_id, command["command_id"], T + 30_000)]
    assert [e.action for e in of(effects, Audit)] == [
        "suspend.requested", "suspend.approved", "suspend.command"]
    assert s.request_to_command_ms == 0 and s.approval_to_command_ms == 0


def test_critical_force_from_the_risk_scanner_sends_force_suspend():
    s, effects = ask(severity="critical", requester="secscan", force=True)
    assert [c["action"] for c in commands(effects)] == ["force_suspend"]
    assert s.current_command["deadline"] == T + 15_000


def test_critical_from_a_person_waits_for_a_security_approval():
    s, effects = ask(severity="critical", requester="alice")
    assert s.status == "requested" and not commands(effects)


def test_a_risk_signal_merged_into_a_pending_request_approves_it():
    s, _ = ask(severity="high", requester="alice")
    s, effects = ask(s, rid="sig-9", severity="critical", requester="secscan", at=T + 3)
    assert s.status == "executing" and s.severity == "critical" and len(commands(effects)) == 1


def test_high_needs_one_security_approver():
    s, _ = ask(severity="high", requester="alice")
    with pytest.raises(NotAllowedError, match="needs one of the roles security; olga has ops") as info:
        approve(s, principal="olga", roles=OPS, at_ms=T + 1)
    assert info.value.code == "not_allowed" and info.value.http_status == 403
    with pytest.raises(SelfApprovalError, match="alice requested") as info:
        approve(s, principal="alice", roles=SEC, at_ms=T + 1)
    assert info.value.code == "self_approval" and info.value.http_status == 403
    s, effects = approve(s, principal="sam", roles=["security", "auditor"], at_ms=T + 700)
    assert s.status == "executing" and s.approvers == ("sam",)
    assert commands(effects)[0]["approvers"] == ["sam"] and commands(effects)[0]["deadline"] == T + 700 + 30_000
    assert [e.kind for e in of(effects, Notify)] == ["suspend.executing"]
    assert s.request_to_approval_ms == 700 and s.approval_to_command_ms == 0 and s.request_to_command_ms == 700
    with pytest.raises(ConflictError, match="approvals are taken only while it is requested") as info:
        approve(s, principal="sid", roles=SEC, at_ms=T + 800)
    assert info.value.code == "conflict" and info.value.http_status == 409


def test_a_merged_requester_cannot_approve_either():
    s, _ = ask(requester="alice")
    s, _ = ask(s, rid="r2", requester="sam")
    with pytest.raises(SelfApprovalError):
        approve(s, principal="sam", roles=SEC, at_ms=T + 1)


def test_self_approval_when_the_policy_allows_it():
    data = json.loads(json.dumps(m.SuspendPolicy.as_dict(POLICIES.for_severity("high"))))
    data["self_approval"] = True
    policy = m.SuspendPolicy.from_dict(data)
    s, _ = ask(policy=policy)
    assert approve(s, principal="alice", roles=SEC, at_ms=T + 1)[0].status == "executing"


def test_medium_needs_a_security_and_a_different_ops_approver():
    s, _ = ask(severity="medium")
    s, effects = approve(s, principal="sam", roles=["security", "ops"], at_ms=T + 1)
    assert s.status == "requested" and not commands(effects)
    assert s.history[-1].details == {"step": "approval", "roles": ["security", "ops"], "approvals": 1, "needed": 2}
    with pytest.raises(ConflictError, match="sam has already approved"):
        approve(s, principal="sam", roles=OPS, at_ms=T + 2)
    with pytest.raises(NotAllowedError, match="needs one of the roles ops, security"):
        approve(s, principal="dev", roles=DEV, at_ms=T + 2)
    # sam (security + ops) takes whichever place is left: a second security person still completes it
    s2, effects = approve(s, principal="sid", roles=SEC, at_ms=T + 3)
    assert s2.status == "executing" and s2.approvers == ("sam", "sid") and len(commands(effects)) == 1
    s3, _ = approve(s, principal="otto", roles=OPS, at_ms=T + 3)
    assert s3.status == "executing"


def test_medium_refuses_a_second_person_of_a_filled_step():
    s, _ = ask(severity="medium")
    s, _ = approve(s, principal="sam", roles=SEC, at_ms=T + 1)
    with pytest.raises(NotAllowedError, match="still needed: 1 of ops"):
        approve(s, principal="sid", roles=SEC, at_ms=T + 2)
    assert approve(s, principal="otto", roles="ops", at_ms=T + 2)[0].status == "executing"


def test_approve_takes_all_policies_or_none():
    s, _ = ask(severity="medium")
    assert approve(s, principal="sam", roles=SEC, at_ms=T + 1, policy=POLICIES)[0].status == "requested"
    assert approve(s, principal="sam", roles=SEC, at_ms=T + 1,
                   policy=POLICIES.for_severity("high"))[0].status == "executing"
    with pytest.raises(InvalidEventError):
        approve(s, principal="sam", roles=SEC, at_ms=T + 1, policy=POLICIES.resume)
    with pytest.raises(InvalidEventError, match="roles must be a list"):
        approve(s, principal="sam", roles=5, at_ms=T + 1)


def test_reject_needs_an_approver_role_and_ends_the_request():
    with pytest.raises(NotAllowedError, match="rejecting"):
        reject(requested(), principal="dev", roles=DEV, at_ms=T + 1)
    s, effects = reject(requested(), principal="sam", roles=SEC, at_ms=T + 1, reason="false positive")
    assert s.status == "rejected" and s.finished_ms == T + 1
    assert s.rejections == (m.Rejection("sam", SEC, T + 1, "false positive"),)
    assert [e.kind for e in of(effects, Notify)] == ["suspend.rejected"] and of(effects, Completed)


# --- execution -----------------------------------------------------------------------------------

def test_wait_mode_success():
    s = executing()
    s, effects = ack(s, {**ok(s), "in_flight": 3, "ts": "2027-01-15T08:00:05Z"}, T + 4000)
    assert s.status == "suspended" and s.finished_ms == T + 4000
    assert s.acks[-1] == {"command_id": s.commands[0]["command_id"], "plugin_id": PLUGIN, "instance_id": "rt-0",
                          "status": "drained", "in_flight": 3, "ts": "2027-01-15T08:00:05Z",
                          "received_at_ms": T + 4000}
    assert s.elapsed() == {"request_to_approval_ms": 1000, "request_to_command_ms": 1000,
                           "approval_to_command_ms": 0, "command_to_completed_ms": 3000,
                           "request_to_completed_ms": 4000}
    assert [e.kind for e in of(effects, Notify)] == ["suspend.suspended"]
    assert of(effects, SnapshotEvidence)[0].status == "suspended"
    [done] = of(effects, Completed)
    assert done.record["status"] == "suspended" and done.record["forced"] is False
    assert done.record["elapsed_ms"]["request_to_completed_ms"] == 4000 and done.record["approvers"] == ["sam"]
    assert not commands(effects) and not of(effects, RaiseAlert)
    again, effects = ack(s, ok(s), T + 4001)  # redelivered
    assert again is s and effects == []


def test_wait_timeout_escalates_to_force():
    s = executing()
    wait = s.current_command
    early, effects = timeout(s, wait["command_id"], wait["deadline"] - 1)
    assert early is s and effects == []
    s, effects = timeout(s, wait["command_id"], wait["deadline"])
    [force] = commands(effects)
    assert s.status == "executing" and s.mode == "force"
    assert force["action"] == "force_suspend" and force["attempt"] == 2
    assert force["command_id"] == f"{s.suspension_id}-2-force_suspend" and force["deadline"] == wait["deadline"] + 15_000
    assert s.history[-1].details["step"] == "escalated" and "no ack for suspend within 30s" in s.history[-1].details["cause"]
    assert [e.action for e in of(effects, Audit)] == ["suspend.timeout", "suspend.command"]
    s, effects = ack(s, ok(s), wait["deadline"] + 2000)
    assert s.status == "suspended" and of(effects, Completed)[0].record["forced"] is True


def test_a_failed_wait_ack_escalates_too():
    s = executing()
    s, effects = ack(s, ok(s, "failed"), T + 2000)
    assert s.status == "executing" and [c["action"] for c in commands(effects)] == ["force_suspend"]


def test_force_failures_retry_then_lock_and_alert():
    s, _ = ask(force=True)
    s, _ = approve(s, principal="sam", roles=SEC, at_ms=T + 1000)
    first = s.current_command
    assert first["action"] == "force_suspend" and first["deadline"] == T + 1000 + 15_000
    s, effects = timeout(s, first["command_id"], first["deadline"])
    assert s.status == "executing" and commands(effects)[0]["attempt"] == 2
    s, effects = ack(s, ok(s, "failed"), first["deadline"] + 100)
    assert s.status == "executing" and commands(effects)[0]["attempt"] == 3 and s.force_attempts == 3
    s, effects = ack(s, ok(s, "failed"), first["deadline"] + 200)
    assert s.status == "locked" and s.finished_ms == first["deadline"] + 200
    [lock_command] = commands(effects)
    assert lock_command["action"] == "lock" and lock_command["command_id"] == f"{s.suspension_id}-4-lock"
    assert not of(effects, ScheduleTimeout)
    [alert] = of(effects, RaiseAlert)
    assert alert.kind == "suspension_locked" and alert.severity == "critical" and "locked" in alert.summary
    assert [e.kind for e in of(effects, Notify)] == ["suspend.locked"]
    assert of(effects, SnapshotEvidence) and of(effects, Completed)[0].record["status"] == "locked"
    assert "suspend.locked" in [e.action for e in of(effects, Audit)]
    # the lock's acks are recorded; a failed one raises another alert; redelivery is ignored
    s2, effects = ack(s, ok(s, "drained"), first["deadline"] + 300)
    assert s2.status == "locked" and len(s2.acks) == len(s.acks) + 1 and not of(effects, RaiseAlert)
    assert ack(s2, ok(s2, "drained"), first["deadline"] + 400) == (s2, [])
    _, effects = ack(s, ok(s, "failed"), first["deadline"] + 300)
    assert [a.kind for a in of(effects, RaiseAlert)] == ["lock_failed"]


def test_wait_timeout_without_escalation_fails_without_lock_and_alerts():
    s = failed()
    assert s.status == "failed" and s.mode == "wait" and len(s.commands) == 1
    assert s.finished_ms == s.commands[0]["deadline"]
    s2, effects = lock(s, principal="otto", roles=OPS, at_ms=T + 60_000, reason="decided by hand")
    assert s2.status == "locked" and commands(effects)[0]["action"] == "lock"
    assert s2.finished_ms == s.finished_ms
    with pytest.raises(NotAllowedError, match="locking needs"):
        lock(s, principal="dev", roles=DEV, at_ms=T + 60_000)


def test_failure_effects_of_a_low_suspension():
    s, _ = ask(severity="low")
    s, _ = approve(s, principal="sam", roles=SEC, at_ms=T + 1)
    s, _ = approve(s, principal="otto", roles=OPS, at_ms=T + 2)
    s, effects = ack(s, ok(s, "failed"), T + 3)
    assert s.status == "failed" and [a.kind for a in of(effects, RaiseAlert)] == ["suspension_failed"]
    assert not commands(effects) and of(effects, Completed)[0].record["status"] == "failed"


def test_stale_unknown_and_foreign_acks_and_timeouts_are_ignored():
    s = executing()
    wait_id = s.current_command["command_id"]
    s, _ = timeout(s, wait_id, s.current_command["deadline"])  # escalated: command 2 is current
    for stale in ({"command_id": wait_id, "status": "drained"},
                  {"command_id": "SUS-0000000000000000-1-suspend", "status": "drained"},
                  {**ok(s), "plugin_id": "other-plugin"},
                  {**ok(s), "tenant_id": "other-tenant"}):
        assert ack(s, stale, T + 40_000) == (s, [])
    assert timeout(s, wait_id, T + 10**9) == (s, [])
    assert timeout(s, "nope", T + 10**9) == (s, [])


@pytest.mark.parametrize("bad, message", [
    ("drained", "an ack must be a mapping"),
    ({"status": "drained"}, "needs its command_id"),
    ({"command_id": "", "status": "drained"}, "needs its command_id"),
    ({"command_id": "x", "status": "done"}, "ack status 'done'"),
])
def test_malformed_acks_are_invalid(bad, message):
    with pytest.raises(InvalidEventError, match=message):
        ack(executing(), bad, T)


# --- resume --------------------------------------------------------------------------------------

def test_resume_needs_two_distinct_approvers():
    target = suspended()
    s, effects = resume_request(target, request_id="q1", tenant_id=TENANT, plugin_id=PLUGIN, requester="dana",
                                reason="fixed in 2.4.1", at_ms=T + 10_000, policy=POLICIES.resume)
    assert s.kind == "resume" and s.status == "requested" and s.resumes == target.suspension_id
    assert s.suspension_id == m.suspension_id_for("resume", TENANT, PLUGIN, "q1") and s.suspension_id.startswith("RES-")
    assert [e.kind for e in of(effects, Notify)] == ["resume.requested"]
    with pytest.raises(SelfApprovalError):
        approve(s, principal="dana", roles=SEC, at_ms=T + 10_500)
    with pytest.raises(NotAllowedError):
        approve(s, principal="dev", roles=["developer", "tenant_admin"], at_ms=T + 10_500)
    s, effects = approve(s, principal="sam", roles=SEC, at_ms=T + 11_000)
    assert s.status == "requested" and not commands(effects)
    with pytest.raises(ConflictError, match="sam has already approved"):
        approve(s, principal="sam", roles=SEC, at_ms=T + 11_500)
    s, effects = approve(s, principal="sid", roles=SEC, at_ms=T + 12_000)  # two security people will do
    [command] = commands(effects)
    assert s.status == "executing" and command["action"] == "resume" and command["mode"] is None
    assert command["approvers"] == ["sam", "sid"] and command["deadline"] == T + 12_000 + 30_000
    assert command["command_id"] == f"{s.suspension_id}-1-resume"
    s, effects = ack(s, ok(s), T + 12_500)
    assert s.status == "resumed" and [e.kind for e in of(effects, Notify)] == ["resume.resumed"]
    assert not of(effects, SnapshotEvidence)
    assert s.request_to_approval_ms == 2000 and s.command_to_completed_ms == 500
    assert s.request_to_completed_ms == 2500
    assert of(effects, Completed)[0].record["resumes"] == target.suspension_id


def test_resume_failure_retries_then_fails_with_an_alert():
    s = res_executing()
    s, effects = timeout(s, s.current_command["command_id"], s.current_command["deadline"])
    assert s.status == "executing" and commands(effects)[0]["attempt"] == 2
    s, effects = ack(s, ok(s, "failed"), s.current_command["deadline"] - 1)
    assert s.status == "failed" and [a.kind for a in of(effects, RaiseAlert)] == ["resume_failed"]
    again, _ = resume_request(s, request_id="q2", tenant_id=TENANT, plugin_id=PLUGIN, requester="dana",
                              at_ms=T + 90_000, policy=POLICIES)
    assert again.resumes == s.resumes and again.suspension_id != s.suspension_id


def test_resume_requests_merge_and_conflict():
    s = res_requested()
    s2, _ = resume_request(s, request_id="q2", tenant_id=TENANT, plugin_id=PLUGIN, requester="erin",
                           at_ms=T + 10_100, policy=POLICIES)
    assert s2.suspension_id == s.suspension_id and s2.requesters == ("dana", "erin")
    assert resume_request(s2, request_id="q2", tenant_id=TENANT, plugin_id=PLUGIN, requester="erin",
                          at_ms=T + 10_200, policy=POLICIES) == (s2, [])
    with pytest.raises(SelfApprovalError):
        approve(s2, principal="erin", roles=SEC, at_ms=T + 10_300)
    with pytest.raises(ConflictError, match="no suspension to resume"):
        resume_request(None, request_id="q", tenant_id=TENANT, plugin_id=PLUGIN, requester="d", at_ms=T,
                       policy=POLICIES)
    with pytest.raises(InvalidEventError, match="resume policy"):
        resume_request(suspended(), request_id="q", tenant_id=TENANT, plugin_id=PLUGIN, requester="d", at_ms=T,
                       policy=POLICIES.for_severity("high"))


def test_a_locked_plugin_can_be_resumed():
    s, _ = resume_request(locked(), request_id="q1", tenant_id=TENANT, plugin_id=PLUGIN, requester="dana",
                          at_ms=T + 50_000, policy=POLICIES)
    assert s.status == "requested" and s.severity == "high"


# --- persistence, ids, errors --------------------------------------------------------------------

@pytest.mark.parametrize("key", list(BUILD), ids=lambda k: "-".join(k))
def test_as_dict_from_dict_round_trip(key):
    s = BUILD[key]()
    data = json.loads(json.dumps(s.as_dict()))
    assert Suspension.from_dict(data) == s
    assert data["elapsed_ms"] == s.elapsed()


@pytest.mark.parametrize("change, message", [
    ({"status": "paused"}, "status 'paused'"),
    ({"kind": "pause"}, "kind 'pause'"),
    ({"plugin_id": ""}, "lacks plugin_id"),
    ({"requests": [{"request_id": "r", "who": "x"}]}, "malformed"),
    ({"status": "suspended", "kind": "resume"}, "resume status 'suspended'"),
    ({"commands": [{"command_id": "c", "action": "explode"}]}, "needs command_id, action, deadline"),
    ({"policy": {"severity": "high"}}, "approvals is missing"),
])
def test_from_dict_errors(change, message):
    with pytest.raises(ValueError, match=message):
        Suspension.from_dict({**suspended().as_dict(), **change})


def test_replays_yield_identical_records():
    def run():
        s, _ = ask(force=True)
        s, _ = approve(s, principal="sam", roles=SEC, at_ms=T + 1)
        s, _ = ack(s, ok(s, "failed"), T + 2)
        return s
    assert run() == run()
    assert [c["command_id"] for c in run().commands] == [
        f"{run().suspension_id}-1-force_suspend", f"{run().suspension_id}-2-force_suspend"]


def test_error_codes():
    assert {cls.code for cls in (m.ForbiddenError, m.ConflictError, m.SelfApprovalError, m.NotAllowedError)} == {
        "forbidden", "conflict", "self_approval", "not_allowed"}
    assert all(issubclass(cls, ValueError) for cls in (SuspensionError, ForbiddenError, InvalidEventError))
    with pytest.raises(ConflictError) as info:
        approve(suspended(), principal="x", roles=SEC, at_ms=T)
    assert info.value.suspension_id == suspended().suspension_id and info.value.status == "suspended"


# --- property: random event sequences ------------------------------------------------------------

PEOPLE = ("alice", "bob", "sam", "otto", "secscan")
ROLE_SETS = ((), ("security",), ("ops",), ("developer",), ("security", "ops"), ("auditor", "tenant_admin"))
COMMAND = st.sampled_from((-1, -1, -1, -1, 0, 1, 2, 7))  # mostly the current command
STEP_MS = st.sampled_from((0, 1, 500, 15_000, 30_000, 31_000))  # often past a deadline

_approve = st.tuples(st.just("approve"), st.sampled_from(PEOPLE), st.sampled_from(ROLE_SETS))
_ack = st.tuples(st.just("ack"), COMMAND, st.sampled_from(("drained", "forced", "failed", "failed")))
_timeout = st.tuples(st.just("timeout"), COMMAND)
event = st.one_of(  # weighted by repetition: rejections end a record, so they come rarely
    st.tuples(st.just("request"), st.integers(0, 4), st.sampled_from(PEOPLE),
              st.sampled_from(("critical", "high", "medium", "low")), st.sampled_from((None, "wait", "force"))),
    _approve, _approve, _approve, _ack, _ack, _ack, _timeout, _timeout,
    st.tuples(st.just("resume"), st.integers(0, 4), st.sampled_from(PEOPLE)),
    st.tuples(st.just("lock"), st.sampled_from(PEOPLE), st.sampled_from(ROLE_SETS)),
    st.tuples(st.just("reject"), st.sampled_from(PEOPLE), st.sampled_from(ROLE_SETS)),
)


def apply_event(s: Suspension | None, e: tuple, at: int):
    name = e[0]
    if name == "request":
        return ask(s, rid=f"r{e[1]}", requester=e[2], severity=e[3], mode=e[4], at=at)
    if name == "resume":
        return resume_request(s, request_id=f"q{e[1]}", tenant_id=TENANT, plugin_id=PLUGIN, requester=e[2],
                              at_ms=at, policy=POLICIES)
    if s is None:
        return None, []
    if name in ("approve", "reject", "lock"):
        return {"approve": approve, "reject": reject, "lock": lock}[name](s, principal=e[1], roles=e[2], at_ms=at)

    def pick(index):  # -1: the current command; beyond the list: an unknown id
        if index == -1 and s.commands:
            return s.commands[-1]["command_id"]
        return s.commands[index]["command_id"] if 0 <= index < len(s.commands) else f"{s.suspension_id}-{index}-x"
    if name == "ack":
        return ack(s, {"command_id": pick(e[1]), "status": e[2], "plugin_id": PLUGIN}, at)
    return timeout(s, pick(e[1]), at)


def check(before: Suspension | None, after: Suspension, effects: list) -> None:
    """What holds after every event that was not refused."""
    assert after.status in (SUSPEND_STATUSES if after.kind == "suspend" else RESUME_STATUSES)
    assert after.status != "approved"  # passed through within a call, never left at rest
    if after is before:
        assert effects == []
    ids = [c["command_id"] for c in after.commands]
    assert len(ids) == len(set(ids)) and all(c["action"] in m.ACTIONS for c in after.commands)
    if after.kind == "suspend":
        assert after.force_attempts <= 1 + after.policy.force_retries
    if after.status in ("suspended", "resumed", "locked", "failed", "rejected"):
        assert after.finished_ms is not None
    if after.status in ("executing", "suspended", "resumed"):
        assert after.approvals and after.commands
    assert all(v is None or v >= 0 for v in after.elapsed().values())
    assert Suspension.from_dict(json.loads(json.dumps(after.as_dict()))) == after


def run(events) -> set[tuple[str, str]]:
    """Apply ``(event, step_ms)`` pairs; only SuspensionError may be raised. The statuses seen."""
    s: Suspension | None = None
    at, seen = T, set()
    for e, step in events:
        at += step
        if e[0] == "timeout" and s is not None and s.current_command and e[1] == -1:
            at = max(at, s.current_command["deadline"])  # mostly a timer that fires on time
        try:
            after, effects = apply_event(s, e, at)
        except SuspensionError as exc:
            assert exc.code in ("forbidden", "conflict", "self_approval", "not_allowed", "invalid")
            continue
        if after is not None:
            check(s, after, effects)
            seen.add((after.kind, after.status))
            s = after
    return seen


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(event, STEP_MS), min_size=5, max_size=40))
def test_random_event_sequences_stay_in_the_grid(events):
    run(events)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_random_walks_stay_in_the_grid(rnd):
    run([(_walk_event(rnd), rnd.choice((0, 1, 500, 31_000))) for _ in range(40)])


def test_the_random_walks_reach_every_status():
    """The property test's events can reach every status (a seeded walk, so this is deterministic)."""
    import random

    rnd = random.Random(7)
    seen: set[tuple[str, str]] = set()
    for _ in range(300):
        seen |= run([(_walk_event(rnd), rnd.choice((0, 1, 500, 31_000)))
                     for _ in range(40)])
    assert seen == {(k, st_) for k, sts in (("suspend", SUSPEND_STATUSES), ("resume", RESUME_STATUSES))
                    for st_ in sts} - {("suspend", "approved"), ("resume", "approved")}


def _walk_event(rnd) -> tuple:
    kind = rnd.choices(("request", "approve", "ack", "timeout", "resume", "lock", "reject"),
                       (3, 6, 5, 3, 2, 1, 1))[0]
    if kind == "request":
        return (kind, rnd.randrange(5), rnd.choice(PEOPLE), rnd.choice(("critical", "high", "medium", "low")),
                rnd.choice((None, "wait", "force")))
    if kind in ("approve", "lock", "reject"):
        return (kind, rnd.choice(PEOPLE), rnd.choice(ROLE_SETS))
    if kind == "ack":
        return (kind, rnd.choice((-1, -1, -1, 0, 7)), rnd.choice(("drained", "forced", "failed", "failed")))
    if kind == "timeout":
        return (kind, rnd.choice((-1, -1, -1, 0, 7)))
    return (kind, rnd.randrange(5), rnd.choice(PEOPLE))
