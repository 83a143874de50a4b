"""Plans in code review: the cost and capacity change between two scenarios (`diff` -> `PlanDiff`) and
guardrails on a plan or a diff (`check` -> `CheckResult`, or `PolicyViolation`), for pull-request comments and
CI gates."""

from kimiplan.review.diff import PlanDiff, diff
from kimiplan.review.policy import CheckResult, Policy, PolicyFile, PolicyViolation, Verdict, check, load_policy
from kimiplan.review.snapshot import Snapshot, evaluate

__all__ = [
    "CheckResult",
    "PlanDiff",
    "Policy",
    "PolicyFile",
    "PolicyViolation",
    "Snapshot",
    "Verdict",
    "check",
    "diff",
    "evaluate",
    "load_policy",
]
