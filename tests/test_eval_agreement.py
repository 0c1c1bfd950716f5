"""Judge agreement: rank correlations, differences and order shares, computed by hand here."""

from __future__ import annotations

import io
import json
import math

import pytest
from rich.console import Console

from oresearch_cli.errors import InputError
from oresearch_cli.evaluation import OVERALL, compare_scores, correlations, judge_agreement


def _side(scores: dict[object, float], name: str = OVERALL) -> dict[object, dict[str, float]]:
    return {item: {name: value} for item, value in scores.items()}


def _render(table) -> str:
    console = Console(width=300, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def test_hand_computed_no_ties() -> None:
    # a = 1..5, b swaps the first two and the middle two:
    # Spearman: sum d^2 = 4, rho = 1 - 6*4 / (5*24) = 0.8
    # Kendall: 10 pairs, 2 discordant ((1,2) and (3,4)), tau = (8 - 2) / 10 = 0.6
    # |b - a| = 1, 1, 1, 1, 0: mean 0.8; b - a = 1, -1, 1, -1, 0: mean 0
    result = compare_scores("overall", [1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert result.n == 5 and result.item_pairs == 10
    assert result.spearman.value == pytest.approx(0.8)
    assert result.kendall.value == pytest.approx(0.6)
    assert result.mean_abs_diff == pytest.approx(0.8)
    assert result.mean_diff == pytest.approx(0.0)
    assert result.same_order == pytest.approx(0.8) and result.opposite_order == pytest.approx(0.2)
    assert result.spearman.p_value is not None and 0 < result.spearman.p_value < 1
    assert result.spearman.reason is None


def test_hand_computed_ties() -> None:
    # a = 1, 2, 2, 3 (a tie), b = 1, 2, 3, 4
    # Spearman on average ranks: ra = 1, 2.5, 2.5, 4; rb = 1..4; cov = 4.5, var a = 4.5, var b = 5:
    #   rho = 4.5 / sqrt(4.5 * 5) = 0.948683...
    # Kendall tau-b: 6 pairs, 1 tied in a, 5 concordant, 0 discordant: 5 / sqrt(5 * 6) = 0.912870...
    # order: the pair a ties and b does not is neither the same nor opposite: 5/6 and 0
    result = compare_scores("insight", [1, 2, 2, 3], [1, 2, 3, 4])
    assert result.spearman.value == pytest.approx(4.5 / math.sqrt(22.5))
    assert result.kendall.value == pytest.approx(5 / math.sqrt(30))
    assert result.same_order == pytest.approx(5 / 6) and result.opposite_order == 0
    assert result.mean_abs_diff == pytest.approx((0 + 0 + 1 + 1) / 4)
    assert result.mean_diff == pytest.approx(0.5)
    # ties on both sides count as the same order
    both = compare_scores("x", [1, 1, 2], [5, 5, 9])
    assert both.same_order == 1.0 and both.kendall.value == pytest.approx(1.0)


def test_constant_input_is_none_with_reason() -> None:
    rho, tau = correlations([3, 3, 3], [1, 2, 3], "cheap", "strong")
    assert rho.value is None and tau.value is None and rho.p_value is None
    assert rho.reason is not None and "cheap gave all 3 items the same score (3)" in rho.reason
    both, _ = correlations([2, 2], [7, 7], "A", "B")
    assert both.reason is not None and "A and B gave all 2 items the same score" in both.reason
    one, _ = correlations([1.0], [2.0])
    assert one.value is None and one.reason is not None and "at least 2" in one.reason
    none, _ = correlations([], [])
    assert none.value is None
    # the rest still computed, and nothing is NaN
    result = compare_scores("overall", [3, 3, 3], [1, 2, 3])
    assert result.mean_abs_diff == pytest.approx((2 + 1 + 0) / 3)
    assert result.same_order == 0.0  # A ties every pair, B orders every pair
    assert json.dumps(result.to_dict(), allow_nan=False)


def test_items_on_one_side_are_counted() -> None:
    a = _side({1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0})
    b = _side({2: 1.0, 3: 2.0, 4: 3.0, 5: 9.0, "x": 1.0})
    result = judge_agreement(a, b, label_a="strong", label_b="cheap")
    assert (result.n_a, result.n_b, result.common) == (4, 5, 3)
    assert result.only_a == ("1",) and result.only_b == ("5", "x")
    overall = result.get(OVERALL)
    assert overall.n == 3 and overall.spearman.value == pytest.approx(1.0)
    assert overall.mean_diff == pytest.approx(-1.0)
    text = _render(result.table())
    assert "Only A scored 1: 1." in text and "Only B scored 2: 5, x." in text
    assert "3 items scored by both; A scored 4, B 5." in text
    assert json.loads(json.dumps(result.to_dict()))["only_b"] == ["5", "x"]


def test_dimensions_missing_scores_and_overall_from_dimensions() -> None:
    a = {
        1: {"comprehensiveness": 40, "insight": 30, "overall": 35},
        2: {"comprehensiveness": 50, "insight": 60},
        3: {"comprehensiveness": 60, "insight": 50},
        4: {"comprehensiveness": 70, "insight": None},
    }
    b = {
        1: {"comprehensiveness": 45, "insight": 35, "overall": 41},
        2: {"comprehensiveness": 55, "insight": 50},
        3: {"comprehensiveness": 65, "insight": float("nan")},
        4: {"comprehensiveness": 60, "insight": 40},
    }
    result = judge_agreement(a, b)
    assert [s.name for s in result.scores] == ["comprehensiveness", "insight", "overall"]
    comp, insight, overall = result.scores
    assert comp.n == 4 and comp.missing == 0
    assert insight.n == 2 and insight.missing == 2  # None on A's side, NaN on B's
    # overall: item 1 its own (35 vs 41), item 2 the mean of dimensions (55 vs 52.5), 3 and 4 have none
    assert result.overall_from == {"given": 1, "mean": 1}
    assert overall.n == 2 and overall.missing == 2
    assert overall.mean_diff == pytest.approx(((41 - 35) + (52.5 - 55)) / 2)
    assert "plain mean of the dimensions" in _render(result.table())


def test_bad_scores_are_input_errors() -> None:
    with pytest.raises(InputError, match="judge B, item 1, overall: score 'high' is not a number"):
        judge_agreement(_side({1: 1.0}), {1: {"overall": "high"}})
    with pytest.raises(InputError, match="expected a mapping"):
        judge_agreement({1: 3.0}, _side({1: 1.0}))  # type: ignore[dict-item]


def test_verdict() -> None:
    a = _side({i: float(i) for i in range(12)})
    close = _side({i: float(i) + (0.5 if i % 2 else -0.5) for i in range(12)})
    good = judge_agreement(a, close, label_a="gpt-strong", label_b="qwen-cheap")
    assert good.verdict().startswith("qwen-cheap can stand in for gpt-strong for ranking")
    assert "heuristic" in good.verdict()
    shuffled = _side({i: float((i * 5) % 12) for i in range(12)})
    bad = judge_agreement(a, shuffled, label_a="A", label_b="B")
    assert bad.verdict().startswith("B should not stand in for A")
    few = judge_agreement(_side({1: 1.0, 2: 2.0, 3: 3.0}), _side({1: 1.0, 2: 2.0, 3: 3.0}))
    assert few.verdict().startswith("Too few items")
    assert few.verdict(min_items=3).startswith("B can stand in for A")
    flat = judge_agreement(a, _side(dict.fromkeys(range(12), 5.0)))
    assert flat.verdict().startswith("No verdict") and "same score" in flat.verdict()
    for sentence in (good.verdict(), bad.verdict(), few.verdict(), flat.verdict()):
        assert sentence.endswith(".") and "\n" not in sentence


def test_table_shows_reasons_not_nan() -> None:
    result = judge_agreement(_side({1: 3.0, 2: 3.0, 3: 3.0}), _side({1: 1.0, 2: 2.0, 3: 3.0}))
    text = _render(result.table())
    assert "nan" not in text.lower()
    assert "No correlation for overall: A gave all 3 items the same score (3)" in text
