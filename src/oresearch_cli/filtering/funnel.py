"""The funnel: how many traces are left after each rule, after dedup and after the judge.

Stages are cumulative: "after rule k" counts traces that fail none of rules 1..k, so each row's
drop is the number of traces that rule is the *first* to reject, and the drops add up to
`in - accepted`. Top reasons count every reason of every rejected trace (a trace can have several).
`authorship` says who wrote the input's pieces, the model or the orchestrator's fallbacks, summed
over the traces that have synth's steps log (`oresearch_cli.agent.authorship`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oresearch_cli.filtering.rules import RULE_ORDER

if TYPE_CHECKING:
    from oresearch_cli.agent.authorship import Authorship


@dataclass
class FunnelRow:
    stage: str
    left: int
    dropped: int


@dataclass
class Funnel:
    n_in: int
    rows: list[FunnelRow] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    authorship: Authorship | None = None  # of the input; None when no trace has a steps log

    @property
    def accepted(self) -> int:
        return self.rows[-1].left if self.rows else self.n_in

    def to_dict(self) -> dict[str, Any]:
        return {
            "in": self.n_in,
            "stages": [{"stage": r.stage, "left": r.left, "dropped": r.dropped} for r in self.rows],
            "accepted": self.accepted,
            "reasons": dict(self.reasons.most_common()),
            "authorship": self.authorship.to_dict() if self.authorship is not None else None,
        }


def build_funnel(
    fails: Sequence[dict[str, list[str]]],
    duplicate: Sequence[bool],
    judge_rejected: Sequence[bool],
    judge_ran: bool,
    enabled_rules: Sequence[str] = RULE_ORDER,
    reasons: Sequence[list[str]] = (),
    authorship: Authorship | None = None,
) -> Funnel:
    """`fails[i]`: rule -> codes of trace i; `duplicate[i]`, `judge_rejected[i]`: later stages;
    `authorship`: of the whole input (`total_authorship`)."""
    n = len(fails)
    funnel = Funnel(n_in=n, authorship=authorship)
    alive = [True] * n
    left = n
    for rule in RULE_ORDER:
        if rule not in enabled_rules:
            continue
        for i in range(n):
            if alive[i] and fails[i].get(rule):
                alive[i] = False
        now = sum(alive)
        funnel.rows.append(FunnelRow(f"rule {rule}", now, left - now))
        left = now
    for stage, flags in (("dedup", duplicate), ("judge", judge_rejected)):
        if stage == "judge" and not judge_ran:
            continue
        for i in range(n):
            if alive[i] and flags[i]:
                alive[i] = False
        now = sum(alive)
        funnel.rows.append(FunnelRow(stage, now, left - now))
        left = now
    for codes in reasons:
        funnel.reasons.update(codes)
    return funnel
