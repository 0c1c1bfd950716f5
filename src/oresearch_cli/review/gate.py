"""The spot-check gate, and how far the human reviewer agrees with the judge.

The batch passes when the sample's reject rate (rejects / decided, skips left out) is under
`max_reject` once every sampled trace has a verdict; it is held as soon as the rejects already
seen make passing impossible, or when the finished sample's rate is too high; else it is pending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

PASSED = "passed"
HELD = "held"
PENDING = "pending"


@dataclass
class Agreement:
    decided: int
    agree: float | None  # share of decided traces where the human agrees with the judge
    mean_judge_accepted: float | None
    mean_judge_rejected: float | None
    auc: float | None  # P(judge scores a human-accepted trace above a human-rejected one)


@dataclass
class Gate:
    status: str
    sample: int
    reviewed: int  # accept + reject + skip
    accepted: int
    rejected: int
    skipped: int
    reject_rate: float | None
    max_reject: float
    agreement: Agreement

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def agreement(verdicts: Sequence[dict[str, Any]], judge_threshold: float | None = None) -> Agreement:
    """Judge verdict per trace: accept (every sampled trace passed the judge, or its score reaches
    `judge_threshold` when given)."""
    decided = [v for v in verdicts if v.get("human_verdict") in ("accept", "reject")]
    scored = [v for v in decided if v.get("judge_overall") is not None]
    agree = None
    if scored:
        hits = 0
        for v in scored:
            judge_accepts = judge_threshold is None or v["judge_overall"] >= judge_threshold
            hits += (v["human_verdict"] == "accept") == judge_accepts
        agree = round(hits / len(scored), 3)
    acc = [float(v["judge_overall"]) for v in scored if v["human_verdict"] == "accept"]
    rej = [float(v["judge_overall"]) for v in scored if v["human_verdict"] == "reject"]
    auc = None
    if acc and rej:
        wins = sum((a > r) + 0.5 * (a == r) for a in acc for r in rej)
        auc = round(wins / (len(acc) * len(rej)), 3)
    return Agreement(len(decided), agree, _mean(acc), _mean(rej), auc)


def evaluate_gate(
    sample_ids: Sequence[str], verdicts: Sequence[dict[str, Any]], max_reject: float = 0.10
) -> Gate:
    ids = set(sample_ids)
    latest = {v["id"]: v for v in verdicts if v["id"] in ids}
    values = [v["human_verdict"] for v in latest.values()]
    accepted, rejected, skipped = values.count("accept"), values.count("reject"), values.count("skip")
    decided = accepted + rejected
    rate = rejected / decided if decided else None
    sample = len(ids)
    if len(latest) >= sample:
        status = PENDING if decided == 0 else (PASSED if rate is not None and rate < max_reject else HELD)
    elif sample and rejected / max(1, sample - skipped) >= max_reject and rejected / sample >= max_reject:
        status = HELD  # even accepting every remaining trace cannot bring the rate under the bar
    else:
        status = PENDING
    return Gate(
        status, sample, len(latest), accepted, rejected, skipped,
        None if rate is None else round(rate, 4), max_reject, agreement(list(latest.values())),
    )  # fmt: skip
