"""The agent section of a route: a request that is a run of steps.

Each step is one API call. Its prompt is the previous step's prompt plus what that step added: the assistant's
message (its output, plus its reasoning: Kimi reads reasoning sent back within a turn of tool calls) and the tool
result. So the context grows
step by step and the input billed over a run grows roughly with the square of the number of steps. A run ends
when the agent is done (its drawn number of steps), at the step cap, at a per-run budget, or when the context
would pass its limit and the policy says stop. Figures published for agent runs are in
shared/reference/agent-workloads.md; they describe other harnesses too, so defaults here are assumptions.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kimiplan.model.dists import Dist, Fixed
from kimiplan.model.units import Share

# Why a run stopped, in the order of the codes the draws store (`stop_reason` column).
STOP_REASONS = ("done", "max_steps", "budget_tokens", "budget_cost", "context")


class Agent(BaseModel):
    """A route whose request is an agent run. The route's `system`, `rag`, `documents` and `user` make the head
    of every step's prompt; its `reasoning` and `output` are per step; its `max_completion_tokens` is the
    per-step budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: Dist = Field(description="Steps the agent needs to finish the task (model calls), before the cap")
    max_steps: int = Field(default=300, gt=0, le=10_000, description="Step cap; a run cut here is unresolved")
    tool_result_tokens: Dist = Field(
        default=Fixed(value=0), description="Tokens of the tool result each step appends to the context"
    )
    think_time_s: Dist = Field(
        default=Fixed(value=0), description="Seconds between a step's answer and the next call (tool execution)"
    )
    preserve_thinking: bool = Field(
        default=True,
        description="Earlier steps' reasoning is re-sent and billed as input. Kimi's rule: a run's steps are one "
        "turn of tool calls, within which reasoning_content must be sent back (thinking on: a tool-call message "
        "without it is a 400) and is read as input whatever thinking.keep says (keep=null ignores only earlier "
        "turns'). False: a harness that strips it, which Kimi refuses with thinking on",
    )
    web_search_per_step: Dist = Field(
        default=Fixed(value=0),
        description="$web_search calls per step, each priced per call (needs thinking off on K2.6; the results "
        "are the step's tool result, billed as input)",
    )
    cache_retention: Literal["5m", "1h"] = Field(
        default="5m",
        description="Models with paid cache writes (K3 family): each step writes its uncached prompt with this "
        "retention (5 min at 1x input, 1 h at 2x); a read after the retention has lapsed misses",
    )
    context_limit_tokens: int | None = Field(
        default=None,
        gt=0,
        description="Context budget of the harness (e.g. 256k); the model's window applies when smaller or unset",
    )
    context_policy: Literal["truncate_oldest", "summarise", "stop"] = Field(
        default="truncate_oldest",
        description="When the next prompt plus the step budget would pass the context limit: drop the oldest "
        "steps' messages, summarise the history in one extra call, or stop. A compaction breaks the cached prefix",
    )
    truncate_to: Share = Field(
        default=0.5,
        gt=0,
        le=1,
        description="truncate_oldest keeps at most this fraction of the room for history: dropping more than the "
        "minimum at once lets the next steps read the cache again before the next truncation",
    )
    summary_tokens: Dist = Field(
        default=Fixed(value=2000), description="Length of a summary (context_policy summarise)"
    )
    run_budget_tokens: int | None = Field(
        default=None, gt=0, description="Per-run budget of billed tokens (input + output); the run stops when reached"
    )
    run_budget_cost: float | None = Field(
        default=None, gt=0, description="Per-run budget in the card's currency; the run stops when reached"
    )
