"""Regression checks after a fix (DESIGN §6 step 5) and the alert lifecycle they end.

``config`` and ``alerts`` are pure; ``runner`` runs subprocesses and HTTP requests (asyncio + httpx).
"""

from plugwatch.regression.alerts import AlertLifecycle, AlertTransitionError, Fix, apply
from plugwatch.regression.config import (
    Check,
    CommandCheck,
    HttpCheck,
    RegressionConfig,
    RegressionConfigError,
)
from plugwatch.regression.runner import CheckResult, RegressionResult, run_checks

__all__ = [
    "AlertLifecycle", "AlertTransitionError", "Check", "CheckResult", "CommandCheck", "Fix", "HttpCheck",
    "RegressionConfig", "RegressionConfigError", "RegressionResult", "apply", "run_checks",
]
