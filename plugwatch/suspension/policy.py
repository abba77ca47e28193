"""Suspension policies from ``config/plugins/suspend_policies.yaml`` (DESIGN §7).

Per severity (critical, high, medium, low): the approval steps (each step is ``count`` distinct people
holding any of ``roles``; all steps together, no person filling two places), the requesters whose
requests are approved at once, whether force is allowed, the default mode, the wait and force
timeouts, the force retries, whether a wait timeout escalates to force and whether a final failure
locks the plugin. Resume has its own approval steps (at least two distinct approvers). A missing file
means the shipped defaults (``SHIPPED``, the same as the shipped YAML).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SEVERITIES = ("critical", "high", "medium", "low")  # most severe first
MODES = ("wait", "force")
ROLES = ("security", "ops", "developer", "tenant_admin", "auditor")
MIN_RESUME_APPROVERS = 2  # DESIGN §7: resume needs two distinct approvers

_STEP_KEYS = frozenset({"roles", "count"})
_SEVERITY_KEYS = frozenset({
    "approvals", "auto_approve_requesters", "may_force", "default_mode", "wait_timeout_s",
    "force_timeout_s", "force_retries", "escalate_to_force", "lock_on_failure"})
_RESUME_KEYS = frozenset({"approvals", "timeout_s", "retries"})
_TOP_KEYS = frozenset({"self_approval", "defaults", "severities", "resume"})

_SECURITY = [{"roles": ["security"], "count": 1}]
_SECURITY_AND_OPS = [{"roles": ["security"], "count": 1}, {"roles": ["ops"], "count": 1}]

# The shipped policy: config/plugins/suspend_policies.yaml says the same, with comments.
SHIPPED: dict[str, Any] = {
    "self_approval": False,
    "defaults": {
        "default_mode": "wait", "wait_timeout_s": 30, "force_timeout_s": 15, "force_retries": 2,
        "lock_on_failure": True,
    },
    "severities": {
        "critical": {"approvals": _SECURITY, "auto_approve_requesters": ["secscan"],
                     "may_force": True, "escalate_to_force": True},
        "high": {"approvals": _SECURITY, "may_force": True, "escalate_to_force": True},
        "medium": {"approvals": _SECURITY_AND_OPS, "may_force": True, "escalate_to_force": True},
        "low": {"approvals": _SECURITY_AND_OPS, "may_force": False, "escalate_to_force": False,
                "lock_on_failure": False},
    },
    "resume": {"approvals": [{"roles": ["security", "ops"], "count": 2}], "timeout_s": 30, "retries": 1},
}


class SuspendPolicyError(ValueError):
    """The policy file (or data) is wrong; the message names the file and the key."""


@dataclass(frozen=True)
class ApprovalStep:
    """``count`` distinct approvers, each holding at least one of ``roles``."""

    roles: tuple[str, ...]
    count: int = 1

    def admits(self, roles: Iterable[str]) -> bool:
        return not set(self.roles).isdisjoint(roles)

    def as_dict(self) -> dict[str, Any]:
        return {"roles": list(self.roles), "count": self.count}


@dataclass(frozen=True)
class SuspendPolicy:
    severity: str
    approvals: tuple[ApprovalStep, ...]
    auto_approve_requesters: tuple[str, ...] = ()
    may_force: bool = False
    default_mode: str = "wait"
    wait_timeout_s: float = 30.0
    force_timeout_s: float = 15.0
    force_retries: int = 2
    escalate_to_force: bool = False
    lock_on_failure: bool = True
    self_approval: bool = False  # the file's global switch, copied so a suspension carries all it needs

    kind = "suspend"

    @property
    def approvers_needed(self) -> int:
        return sum(step.count for step in self.approvals)

    @property
    def approver_roles(self) -> frozenset[str]:
        return frozenset(role for step in self.approvals for role in step.roles)

    def timeout_ms(self, mode: str) -> int:
        return round(1000 * (self.force_timeout_s if mode == "force" else self.wait_timeout_s))

    def auto_approves(self, requester: str) -> bool:
        return requester in self.auto_approve_requesters

    def as_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity, "approvals": [s.as_dict() for s in self.approvals],
            "auto_approve_requesters": list(self.auto_approve_requesters), "may_force": self.may_force,
            "default_mode": self.default_mode, "wait_timeout_s": self.wait_timeout_s,
            "force_timeout_s": self.force_timeout_s, "force_retries": self.force_retries,
            "escalate_to_force": self.escalate_to_force, "lock_on_failure": self.lock_on_failure,
            "self_approval": self.self_approval,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "suspend policy") -> SuspendPolicy:
        """The inverse of ``as_dict`` (a policy kept with a suspension); validated like the file."""
        if not isinstance(data, Mapping) or data.get("severity") not in SEVERITIES:
            raise SuspendPolicyError(f"{source}: severity must be one of {', '.join(SEVERITIES)}")
        body = {k: v for k, v in data.items() if k not in ("severity", "self_approval")}
        return _severity(source, f"severities.{data['severity']}", data["severity"], body,
                         _bool(source, "self_approval", data.get("self_approval", False)))


@dataclass(frozen=True)
class ResumePolicy:
    approvals: tuple[ApprovalStep, ...] = (ApprovalStep(("security", "ops"), 2),)
    timeout_s: float = 30.0
    retries: int = 1
    self_approval: bool = False

    kind = "resume"
    auto_approve_requesters = ()  # a resume is always approved by people

    @property
    def approvers_needed(self) -> int:
        return sum(step.count for step in self.approvals)

    @property
    def approver_roles(self) -> frozenset[str]:
        return frozenset(role for step in self.approvals for role in step.roles)

    def timeout_ms(self, mode: str | None = None) -> int:
        return round(1000 * self.timeout_s)

    def auto_approves(self, requester: str) -> bool:
        return False

    def as_dict(self) -> dict[str, Any]:
        return {"approvals": [s.as_dict() for s in self.approvals], "timeout_s": self.timeout_s,
                "retries": self.retries, "self_approval": self.self_approval}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "resume policy") -> ResumePolicy:
        if not isinstance(data, Mapping):
            raise SuspendPolicyError(f"{source}: resume must be a mapping")
        body = {k: v for k, v in data.items() if k != "self_approval"}
        return _resume(source, body, _bool(source, "self_approval", data.get("self_approval", False)))


@dataclass(frozen=True)
class SuspendPolicies:
    policies: Mapping[str, SuspendPolicy]
    resume: ResumePolicy
    self_approval: bool = False
    source: str = "<shipped defaults>"

    @classmethod
    def shipped(cls) -> SuspendPolicies:
        return cls.from_data(SHIPPED, "<shipped defaults>")

    @classmethod
    def from_file(cls, path: Path | str) -> SuspendPolicies:
        """The policy file; a missing file means the shipped defaults."""
        path = Path(path)
        if not path.exists():
            return cls.shipped()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SuspendPolicyError(f"{path}: not valid YAML: {exc}") from None
        return cls.from_data(data, str(path))

    @classmethod
    def from_data(cls, data: Any, source: str = "suspend policies") -> SuspendPolicies:
        """Validated policies from parsed YAML; errors name ``source`` and the key."""
        if not isinstance(data, Mapping):
            raise SuspendPolicyError(f"{source}: expected a mapping with severities, resume, self_approval")
        _no_unknown(source, "", data, _TOP_KEYS)
        self_approval = _bool(source, "self_approval", data.get("self_approval", False))
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, Mapping):
            raise SuspendPolicyError(f"{source}: defaults must be a mapping")
        _no_unknown(source, "defaults", defaults, _SEVERITY_KEYS)
        severities = data.get("severities")
        if not isinstance(severities, Mapping):
            raise SuspendPolicyError(f"{source}: severities must be a mapping of {', '.join(SEVERITIES)}")
        _no_unknown(source, "severities", severities, frozenset(SEVERITIES))
        policies = {}
        for severity in SEVERITIES:
            if severity not in severities:
                raise SuspendPolicyError(f"{source}: severities.{severity} is missing; every severity needs a policy")
            body = severities[severity] or {}
            if not isinstance(body, Mapping):
                raise SuspendPolicyError(f"{source}: severities.{severity} must be a mapping")
            policies[severity] = _severity(source, f"severities.{severity}", severity,
                                           {**defaults, **body}, self_approval)
        resume = data.get("resume")
        if resume is None:
            resume = SHIPPED["resume"]
        if not isinstance(resume, Mapping):
            raise SuspendPolicyError(f"{source}: resume must be a mapping")
        return cls(policies, _resume(source, resume, self_approval), self_approval, source)

    def for_severity(self, severity: str) -> SuspendPolicy:
        key = str(severity).lower()
        if key not in self.policies:
            raise SuspendPolicyError(f"no suspension policy for severity {severity!r}; "
                                     f"expected one of {', '.join(SEVERITIES)}")
        return self.policies[key]


def _severity(source: str, where: str, severity: str, body: Mapping[str, Any], self_approval: bool) -> SuspendPolicy:
    _no_unknown(source, where, body, _SEVERITY_KEYS)
    if "approvals" not in body:
        raise SuspendPolicyError(f"{source}: {where}.approvals is missing (a list of {{roles, count}}; [] approves at once)")
    approvals = _steps(source, f"{where}.approvals", body["approvals"])
    auto = body.get("auto_approve_requesters") or []
    if not isinstance(auto, list) or not all(isinstance(r, str) and r for r in auto):
        raise SuspendPolicyError(f"{source}: {where}.auto_approve_requesters must be a list of requester names")
    may_force = _bool(source, f"{where}.may_force", body.get("may_force", False))
    mode = body.get("default_mode", "wait")
    if mode not in MODES:
        raise SuspendPolicyError(f"{source}: {where}.default_mode must be wait or force, not {mode!r}")
    escalate = _bool(source, f"{where}.escalate_to_force", body.get("escalate_to_force", False))
    if mode == "force" and not may_force:
        raise SuspendPolicyError(f"{source}: {where}.default_mode is force but may_force is false")
    if escalate and not may_force:
        raise SuspendPolicyError(f"{source}: {where}.escalate_to_force needs may_force: true")
    return SuspendPolicy(
        severity=severity, approvals=approvals, auto_approve_requesters=tuple(auto), may_force=may_force,
        default_mode=mode,
        wait_timeout_s=_seconds(source, f"{where}.wait_timeout_s", body.get("wait_timeout_s", 30)),
        force_timeout_s=_seconds(source, f"{where}.force_timeout_s", body.get("force_timeout_s", 15)),
        force_retries=_count(source, f"{where}.force_retries", body.get("force_retries", 2), minimum=0),
        escalate_to_force=escalate,
        lock_on_failure=_bool(source, f"{where}.lock_on_failure", body.get("lock_on_failure", True)),
        self_approval=self_approval)


def _resume(source: str, body: Mapping[str, Any], self_approval: bool) -> ResumePolicy:
    _no_unknown(source, "resume", body, _RESUME_KEYS)
    approvals = _steps(source, "resume.approvals", body.get("approvals", SHIPPED["resume"]["approvals"]))
    if sum(step.count for step in approvals) < MIN_RESUME_APPROVERS:
        raise SuspendPolicyError(f"{source}: resume.approvals must need at least {MIN_RESUME_APPROVERS} "
                                 "distinct approvers in total")
    return ResumePolicy(approvals, _seconds(source, "resume.timeout_s", body.get("timeout_s", 30)),
                        _count(source, "resume.retries", body.get("retries", 1), minimum=0), self_approval)


def _steps(source: str, where: str, raw: Any) -> tuple[ApprovalStep, ...]:
    if not isinstance(raw, list):
        raise SuspendPolicyError(f"{source}: {where} must be a list of {{roles: [...], count: n}}")
    steps = []
    for index, step in enumerate(raw):
        here = f"{where}[{index}]"
        if not isinstance(step, Mapping):
            raise SuspendPolicyError(f"{source}: {here} must be a mapping with roles and count")
        _no_unknown(source, here, step, _STEP_KEYS)
        roles = step.get("roles")
        if isinstance(roles, str):
            roles = [roles]
        if not isinstance(roles, list) or not roles:
            raise SuspendPolicyError(f"{source}: {here}.roles must be a non-empty list of roles ({', '.join(ROLES)})")
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            raise SuspendPolicyError(f"{source}: {here}.roles has unknown role {unknown[0]!r}; "
                                     f"roles are {', '.join(ROLES)}")
        steps.append(ApprovalStep(tuple(dict.fromkeys(roles)), _count(source, f"{here}.count", step.get("count", 1))))
    return tuple(steps)


def _no_unknown(source: str, where: str, data: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise SuspendPolicyError(f"{source}: unknown key {prefix}{unknown[0]}; "
                                 f"expected {', '.join(sorted(allowed))}")


def _bool(source: str, where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SuspendPolicyError(f"{source}: {where} must be true or false, not {value!r}")
    return value


def _seconds(source: str, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise SuspendPolicyError(f"{source}: {where} must be a positive number of seconds, not {value!r}")
    return float(value)


def _count(source: str, where: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SuspendPolicyError(f"{source}: {where} must be a whole number >= {minimum}, not {value!r}")
    return value
