"""Plugin suspension (DESIGN §7): policies (``policy``) and the pure per-plugin state machine
(``machine``). The service wires them to topics, timers and sinks; nothing here does I/O except
reading the policy file."""

from plugwatch.suspension.machine import (
    ACK_STATUSES,
    ACTIONS,
    AUTO_APPROVER,
    EXECUTOR,
    RESUME_STATUSES,
    STATUSES,
    SUSPEND_STATUSES,
    Approval,
    Audit,
    Completed,
    ConflictError,
    Effect,
    ForbiddenError,
    InvalidEventError,
    NotAllowedError,
    Notify,
    RaiseAlert,
    Rejection,
    Request,
    ScheduleTimeout,
    SelfApprovalError,
    SendCommand,
    SnapshotEvidence,
    Step,
    Suspension,
    SuspensionError,
    ack,
    approve,
    command_id_for,
    lock,
    reject,
    request,
    resume_request,
    suspension_id_for,
    timeout,
)
from plugwatch.suspension.policy import (
    ApprovalStep,
    ResumePolicy,
    SuspendPolicies,
    SuspendPolicy,
    SuspendPolicyError,
)

__all__ = [
    "ACK_STATUSES", "ACTIONS", "AUTO_APPROVER", "EXECUTOR", "RESUME_STATUSES", "STATUSES", "SUSPEND_STATUSES",
    "Approval", "ApprovalStep", "Audit", "Completed", "ConflictError", "Effect", "ForbiddenError",
    "InvalidEventError", "NotAllowedError", "Notify", "RaiseAlert", "Rejection", "Request", "ResumePolicy",
    "ScheduleTimeout", "SelfApprovalError", "SendCommand", "SnapshotEvidence", "Step", "SuspendPolicies",
    "SuspendPolicy", "SuspendPolicyError", "Suspension", "SuspensionError", "ack", "approve",
    "command_id_for", "lock", "reject", "request", "resume_request", "suspension_id_for", "timeout",
]
