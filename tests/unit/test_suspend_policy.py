"""config/plugins/suspend_policies.yaml: the shipped file, defaults, and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from plugwatch.suspension.policy import (
    SEVERITIES,
    SHIPPED,
    ApprovalStep,
    ResumePolicy,
    SuspendPolicies,
    SuspendPolicy,
    SuspendPolicyError,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED_FILE = REPO / "config" / "plugins" / "suspend_policies.yaml"

SECURITY = (ApprovalStep(("security",), 1),)
SECURITY_AND_OPS = (ApprovalStep(("security",), 1), ApprovalStep(("ops",), 1))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config" / "plugins" / "suspend_policies.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def minimal(**overrides: object) -> dict:
    """Valid data: every severity needs one security approver; ``overrides`` go into ``high``."""
    data = {"severities": {sev: {"approvals": [{"roles": ["security"], "count": 1}]} for sev in SEVERITIES}}
    data["severities"]["high"].update(overrides)
    return data


def test_shipped_file_loads_and_matches_the_builtin_defaults():
    from_file = SuspendPolicies.from_file(SHIPPED_FILE)
    shipped = SuspendPolicies.shipped()
    assert from_file.policies == shipped.policies
    assert from_file.resume == shipped.resume
    assert from_file.self_approval is shipped.self_approval is False
    assert from_file.source == str(SHIPPED_FILE)


def test_missing_file_means_the_shipped_defaults(tmp_path):
    loaded = SuspendPolicies.from_file(tmp_path / "nope.yaml")
    assert loaded.policies == SuspendPolicies.from_file(SHIPPED_FILE).policies
    assert loaded.resume == SuspendPolicies.from_file(SHIPPED_FILE).resume


def test_shipped_policy_per_severity():
    policies = SuspendPolicies.from_file(SHIPPED_FILE)
    critical = policies.for_severity("critical")
    assert critical.auto_approve_requesters == ("secscan",) and critical.auto_approves("secscan")
    assert not critical.auto_approves("alice")
    assert critical.approvals == SECURITY and critical.may_force and critical.escalate_to_force
    high = policies.for_severity("HIGH")
    assert high.approvals == SECURITY and high.approvers_needed == 1 and high.auto_approve_requesters == ()
    assert policies.for_severity("medium").approvals == SECURITY_AND_OPS
    assert policies.for_severity("medium").approvers_needed == 2
    low = policies.for_severity("low")
    assert low.approvals == SECURITY_AND_OPS
    assert (low.may_force, low.escalate_to_force, low.lock_on_failure) == (False, False, False)
    for severity in SEVERITIES:
        policy = policies.for_severity(severity)
        assert policy.severity == severity and policy.default_mode == "wait"
        assert (policy.wait_timeout_s, policy.force_timeout_s, policy.force_retries) == (30.0, 15.0, 2)
        assert policy.timeout_ms("wait") == 30_000 and policy.timeout_ms("force") == 15_000
        assert policy.self_approval is False
    assert policies.resume == ResumePolicy((ApprovalStep(("security", "ops"), 2),), 30.0, 1, False)
    assert policies.resume.approvers_needed == 2 and policies.resume.approver_roles == {"security", "ops"}


def test_unknown_severity_is_refused():
    with pytest.raises(SuspendPolicyError, match="severity 'info'.*critical, high, medium, low"):
        SuspendPolicies.shipped().for_severity("info")


def test_field_defaults_when_a_severity_names_only_its_approvals():
    policy = SuspendPolicies.from_data(minimal(), "t").for_severity("high")
    assert policy == SuspendPolicy("high", SECURITY)
    assert (policy.may_force, policy.default_mode, policy.wait_timeout_s, policy.force_timeout_s,
            policy.force_retries, policy.escalate_to_force, policy.lock_on_failure) == (
        False, "wait", 30.0, 15.0, 2, False, True)


def test_defaults_section_applies_to_every_severity_and_severities_override_it():
    data = minimal(wait_timeout_s=5)
    data["defaults"] = {"wait_timeout_s": 60, "force_retries": 0, "may_force": True}
    policies = SuspendPolicies.from_data(data, "t")
    assert policies.for_severity("high").wait_timeout_s == 5.0
    assert policies.for_severity("low").wait_timeout_s == 60.0
    assert all(policies.for_severity(s).force_retries == 0 and policies.for_severity(s).may_force
               for s in SEVERITIES)


def test_self_approval_is_copied_into_every_policy():
    data = minimal()
    data["self_approval"] = True
    policies = SuspendPolicies.from_data(data, "t")
    assert policies.self_approval and policies.resume.self_approval
    assert all(policies.for_severity(s).self_approval for s in SEVERITIES)


def test_empty_approvals_and_roles_as_a_single_string(tmp_path):
    data = minimal(approvals=[{"roles": "ops"}])
    data["severities"]["low"]["approvals"] = []
    policies = SuspendPolicies.from_data(data, "t")
    assert policies.for_severity("high").approvals == (ApprovalStep(("ops",), 1),)
    assert policies.for_severity("low").approvers_needed == 0


def test_policies_round_trip_through_as_dict():
    policies = SuspendPolicies.shipped()
    for severity in SEVERITIES:
        policy = policies.for_severity(severity)
        assert SuspendPolicy.from_dict(yaml.safe_load(yaml.safe_dump(policy.as_dict()))) == policy
    assert ResumePolicy.from_dict(policies.resume.as_dict()) == policies.resume


def test_shipped_data_and_file_say_the_same():
    assert SuspendPolicies.from_data(yaml.safe_load(SHIPPED_FILE.read_text()), "f").policies == \
        SuspendPolicies.from_data(SHIPPED, "d").policies


BAD = [
    ("severities: [", "not valid YAML"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("severity: {}\n", "unknown key severity"),
    ("severities: {critical: {approvals: []}}\n", "severities.high is missing"),
    ("severities: {high: {}, extreme: {}}\n", "unknown key severities.extreme"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_file_errors_name_the_file_and_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SuspendPolicyError) as info:
        SuspendPolicies.from_file(path)
    assert str(path) in str(info.value) and message in str(info.value)


BAD_HIGH = [
    ({"approvals": None}, "severities.high.approvals must be a list"),
    ({"approvals": [{"roles": ["root"]}]}, "severities.high.approvals[0].roles has unknown role 'root'"),
    ({"approvals": [{"roles": []}]}, "severities.high.approvals[0].roles must be a non-empty list"),
    ({"approvals": [{"roles": ["ops"], "count": 0}]}, "severities.high.approvals[0].count must be a whole number >= 1"),
    ({"approvals": [{"roles": ["ops"], "count": "2"}]}, "severities.high.approvals[0].count"),
    ({"approvals": [{"roles": ["ops"], "people": 2}]}, "unknown key severities.high.approvals[0].people"),
    ({"approvals": ["security"]}, "severities.high.approvals[0] must be a mapping"),
    ({"auto_approve_requesters": "secscan"}, "severities.high.auto_approve_requesters must be a list"),
    ({"may_force": "yes"}, "severities.high.may_force must be true or false"),
    ({"default_mode": "gentle"}, "severities.high.default_mode must be wait or force"),
    ({"default_mode": "force"}, "severities.high.default_mode is force but may_force is false"),
    ({"escalate_to_force": True}, "severities.high.escalate_to_force needs may_force: true"),
    ({"wait_timeout_s": 0}, "severities.high.wait_timeout_s must be a positive number"),
    ({"force_timeout_s": -1}, "severities.high.force_timeout_s must be a positive number"),
    ({"force_timeout_s": float("inf")}, "severities.high.force_timeout_s must be a positive number"),
    ({"force_retries": -1}, "severities.high.force_retries must be a whole number >= 0"),
    ({"lock_on_failure": 1}, "severities.high.lock_on_failure must be true or false"),
    ({"retries": 3}, "unknown key severities.high.retries"),
]


@pytest.mark.parametrize("override, message", BAD_HIGH)
def test_severity_errors_name_the_key(override, message):
    with pytest.raises(SuspendPolicyError) as info:
        SuspendPolicies.from_data(minimal(**override), "policies.yaml")
    assert str(info.value).startswith("policies.yaml: ") and message in str(info.value)


def test_a_severity_without_approvals_is_refused():
    data = minimal()
    del data["severities"]["medium"]["approvals"]
    with pytest.raises(SuspendPolicyError, match=r"t: severities.medium.approvals is missing"):
        SuspendPolicies.from_data(data, "t")


@pytest.mark.parametrize("extra, message", [
    ({"self_approval": "no"}, "self_approval must be true or false"),
    ({"defaults": [1]}, "defaults must be a mapping"),
    ({"defaults": {"wait_timeout": 3}}, "unknown key defaults.wait_timeout"),
    ({"resume": {"approvals": [{"roles": ["security"], "count": 1}]}}, "resume.approvals must need at least 2"),
    ({"resume": {"approvals": [{"roles": ["security", "boss"], "count": 2}]}}, "resume.approvals[0].roles has unknown role"),
    ({"resume": {"timeout_s": 0}}, "resume.timeout_s must be a positive number"),
    ({"resume": {"retries": -1}}, "resume.retries must be a whole number >= 0"),
    ({"resume": {"approvers": 2}}, "unknown key resume.approvers"),
    ({"resume": "two people"}, "resume must be a mapping"),
])
def test_global_and_resume_errors_name_the_key(extra, message):
    with pytest.raises(SuspendPolicyError) as info:
        SuspendPolicies.from_data({**minimal(), **extra}, "t")
    assert message in str(info.value)


def test_resume_defaults_when_the_file_has_no_resume_section():
    assert SuspendPolicies.from_data(minimal(), "t").resume == SuspendPolicies.shipped().resume
