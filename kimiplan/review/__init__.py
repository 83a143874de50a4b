"""Plans in code review: the cost and capacity change between two scenarios (`diff` -> `PlanDiff`) and
guardrails on a plan or a diff (`check`), for pull-request comments and CI gates."""

from kimiplan.review.diff import PlanDiff, diff
from kimiplan.review.snapshot import Snapshot, evaluate

__all__ = ["PlanDiff", "Snapshot", "diff", "evaluate"]
