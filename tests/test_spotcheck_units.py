"""The stratified sample and the gate arithmetic."""

from __future__ import annotations

from collections import Counter

from oresearch_cli.review.gate import agreement, evaluate_gate
from oresearch_cli.review.sample import band, draw_sample


def test_sample_is_stratified_stable_and_covers_small_strata() -> None:
    records = [{"id": f"e{i}", "language": "en", "judge_overall": 6.5 + (i % 3)} for i in range(90)]
    records += [{"id": f"z{i}", "language": "zh", "judge_overall": 9.2} for i in range(3)]
    sample = draw_sample(records, 10, seed=1)
    assert len(sample) == 10 and len({r["id"] for r in sample}) == 10
    strata = Counter((band(r["judge_overall"]), r["language"]) for r in sample)
    assert strata[("9-10", "zh")] >= 1 and len(strata) == 4
    assert [r["id"] for r in draw_sample(records, 10, seed=1)] == [r["id"] for r in sample]
    assert len(draw_sample(records, 500)) == 93


def test_gate_passes_holds_and_waits() -> None:
    ids = [str(i) for i in range(10)]
    v = [{"id": str(i), "human_verdict": "accept", "judge_overall": 8.0} for i in range(10)]
    assert evaluate_gate(ids, v).status == "passed"
    v[0]["human_verdict"] = "reject"
    assert evaluate_gate(ids, v).status == "held"  # 10% is not under 10%
    assert evaluate_gate([str(i) for i in range(20)], v[:5]).status == "pending"  # could still pass
    early = [{"id": str(i), "human_verdict": "reject", "judge_overall": 8.0} for i in range(2)]
    assert evaluate_gate(ids, early).status == "held"  # cannot pass any more


def test_agreement_between_human_and_judge() -> None:
    v = [
        {"id": "a", "human_verdict": "accept", "judge_overall": 9.0},
        {"id": "b", "human_verdict": "accept", "judge_overall": 7.0},
        {"id": "c", "human_verdict": "reject", "judge_overall": 6.0},
    ]
    a = agreement(v, judge_threshold=6.5)
    assert a.agree == 1.0 and a.auc == 1.0 and a.mean_judge_rejected == 6.0
    assert agreement(v).agree == round(2 / 3, 3)  # every sampled trace passed the judge
