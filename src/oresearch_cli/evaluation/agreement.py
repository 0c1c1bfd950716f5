"""How far two judges agree on the same articles: can a cheap judge stand in for a strong one?

Input: two mappings `item id -> {score name -> score}`, the same articles scored by judge A and
judge B (or twice by one judge). Score names are RACE's dimensions and "overall", or anything
else both sides use. For each score, over the items both sides scored:

- n: the items with that score on both sides; `missing`: items both judges returned where one
  side lacks that score (None, NaN or absent);
- Spearman's rho and Kendall's tau-b (scipy.stats; ties get average ranks / the tau-b
  correction), each with its p-value. A rank correlation is undefined when either side gives all
  items the same score or fewer than two items are scored: then its value is None and `reason`
  says why, never NaN;
- the mean absolute difference and the mean signed difference (B - A: B's bias), in the
  scores' own units;
- `same_order`: over all pairs of items, the share that both judges order the same way (both
  say i > j, both j > i, or both tie them); `opposite_order`: the share they order oppositely
  (a pair one judge ties and the other does not is in neither).

"overall" is the items' own "overall" score where both sides give one, else the plain mean of
the compared dimensions where both sides have all of them (RACE's overall weights dimensions per
task, so that mean is an approximation; `overall_from` counts which was used). Items present on
one side only are listed in `only_a`/`only_b`, never silently dropped.

`Agreement.verdict` words the answer in one sentence: B can stand in for A when Spearman's rho
on overall is at least STAND_IN_RHO over at least MIN_ITEMS items. Both numbers are heuristics
(a strong rank agreement by the usual reading of a correlation, and a sample below which a
correlation says little), not a statistical test; pass your own.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rich.table import Table

from oresearch_cli.errors import InputError
from oresearch_cli.scoring.drb import DIMENSIONS

OVERALL = "overall"
STAND_IN_RHO = 0.8  # heuristic: Spearman's rho on overall at or above which B may replace A for ranking
MIN_ITEMS = 10  # heuristic: below this many common items no verdict is given
_SHOWN_IDS = 5  # ids listed in the table's caption before "..."


@dataclass(frozen=True)
class Correlation:
    """A rank correlation; `value` None (with `reason`) when it is undefined for these scores."""

    value: float | None
    p_value: float | None = None
    reason: str | None = None

    def __str__(self) -> str:
        return "-" if self.value is None else f"{self.value:.3f}"


@dataclass(frozen=True)
class ScoreAgreement:
    """Agreement on one score (a dimension or overall) over the items both judges scored."""

    name: str
    n: int
    missing: int
    spearman: Correlation
    kendall: Correlation
    mean_abs_diff: float | None
    mean_diff: float | None  # mean of B - A
    same_order: float | None  # share of item pairs both judges order the same way (ties included)
    opposite_order: float | None  # share of item pairs they order oppositely
    item_pairs: int  # n * (n - 1) / 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Agreement:
    label_a: str
    label_b: str
    n_a: int  # items judge A scored
    n_b: int  # items judge B scored
    common: int  # items both scored
    only_a: tuple[str, ...]  # ids (as text) only A scored
    only_b: tuple[str, ...]
    scores: tuple[ScoreAgreement, ...]  # the dimensions in order, then overall
    overall_from: Mapping[str, int]  # {"given": items whose own overall was compared, "mean": ...}

    def get(self, name: str) -> ScoreAgreement:
        for score in self.scores:
            if score.name == name:
                return score
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label_a": self.label_a,
            "label_b": self.label_b,
            "n_a": self.n_a,
            "n_b": self.n_b,
            "common": self.common,
            "only_a": list(self.only_a),
            "only_b": list(self.only_b),
            "scores": {s.name: s.to_dict() for s in self.scores},
            "overall_from": dict(self.overall_from),
            "verdict": self.verdict(),
        }

    def table(self, title: str | None = None) -> Table:
        """One row per score: n, Spearman, Kendall, mean |B - A|, mean B - A, same-order share;
        the caption gives why a correlation is missing and which items only one side scored."""
        table = Table(
            title=title or f"Judge agreement: {self.label_a} (A) vs {self.label_b} (B)",
            title_justify="left",
            header_style="bold",
            caption_justify="left",
        )
        for column in ("score", "n", "missing", "Spearman ρ", "Kendall τ", "mean |B-A|", "mean B-A",
                       "same order", "opposite"):  # fmt: skip
            table.add_column(column, justify="left" if column == "score" else "right")
        reasons: list[str] = []
        for s in self.scores:
            for corr in (s.spearman, s.kendall):
                if corr.reason and f"{s.name}: {corr.reason}" not in reasons:
                    reasons.append(f"{s.name}: {corr.reason}")
            table.add_row(
                s.name,
                str(s.n),
                str(s.missing),
                str(s.spearman),
                str(s.kendall),
                _fmt(s.mean_abs_diff),
                _fmt(s.mean_diff, signed=True),
                _pct(s.same_order),
                _pct(s.opposite_order),
                style="bold" if s.name == OVERALL else None,
            )
        caption = [f"{self.common} items scored by both; A scored {self.n_a}, B {self.n_b}."]
        for side, ids in (("A", self.only_a), ("B", self.only_b)):
            if ids:
                shown = ", ".join(ids[:_SHOWN_IDS]) + (", ..." if len(ids) > _SHOWN_IDS else "")
                caption.append(f"Only {side} scored {len(ids)}: {shown}.")
        if self.overall_from.get("mean"):
            caption.append(
                f"overall of {self.overall_from['mean']} items is the plain mean of the dimensions "
                "(no overall on both sides)."
            )
        caption += [f"No correlation for {r}." for r in reasons]
        caption.append(self.verdict())
        table.caption = "\n".join(caption)
        return table

    def verdict(self, threshold: float = STAND_IN_RHO, on: str = OVERALL, min_items: int = MIN_ITEMS) -> str:
        """One sentence: whether B can stand in for A for ranking, judged on Spearman's rho of
        score `on` (a heuristic threshold, see the module's docstring)."""
        try:
            score = self.get(on)
        except KeyError:
            return f"No verdict: neither judge gave a {on!r} score."
        a, b, rho = self.label_a, self.label_b, score.spearman
        if rho.value is None:
            return f"No verdict on whether {b} can stand in for {a}: Spearman's rho on {on} is undefined ({rho.reason})."
        said = f"Spearman's rho on {on} is {rho.value:.2f} over {score.n} items"
        if score.mean_abs_diff is not None:
            said += f", mean absolute difference {score.mean_abs_diff:.2f}"
        if score.n < min_items:
            return (
                f"Too few items to tell whether {b} can stand in for {a}: {said}; score at least {min_items}."
            )
        if rho.value >= threshold:
            return f"{b} can stand in for {a} for ranking: {said} (at least {threshold:g}, a heuristic threshold)."
        return f"{b} should not stand in for {a}: {said}, below {threshold:g} (a heuristic threshold)."


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


# --- computing it -------------------------------------------------------------------------------


def _score(value: object, where: str) -> float | None:
    """A score as float; None for a missing one (None or NaN); InputError for a non-number."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(
            f"{where}: score {value!r} is not a number; pass numbers (or None for a missing score)"
        )
    if math.isnan(value):
        return None
    if math.isinf(value):
        raise InputError(f"{where}: score {value!r} is not finite; pass finite numbers")
    return float(value)


def _constant(values: Sequence[float]) -> bool:
    return all(v == values[0] for v in values)


def correlations(
    a: Sequence[float], b: Sequence[float], label_a: str = "A", label_b: str = "B"
) -> tuple[Correlation, Correlation]:
    """Spearman's rho and Kendall's tau-b of paired scores, None with a reason where undefined."""
    n = len(a)
    if n != len(b):
        raise ValueError(f"paired scores of unequal length: {n} and {len(b)}")
    reason = None
    if n < 2:
        reason = f"{n} item{'' if n == 1 else 's'} scored by both; a rank correlation needs at least 2"
    elif _constant(a) or _constant(b):
        same = [label for label, values in ((label_a, a), (label_b, b)) if _constant(values)]
        value = a[0] if _constant(a) else b[0]
        who = " and ".join(same)
        reason = (
            f"{who} gave all {n} items the same score"
            + (f" ({value:g})" if len(same) == 1 else "")
            + ", so their order is undefined"
        )
    if reason:
        return Correlation(None, None, reason), Correlation(None, None, reason)
    from scipy import stats  # type: ignore[import-untyped]  # scipy ships no type information

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input is handled above; keep scipy quiet anyway
        rho = stats.spearmanr(a, b)
        tau = stats.kendalltau(a, b)
    return _correlation(rho.statistic, rho.pvalue), _correlation(tau.statistic, tau.pvalue)


def _correlation(value: Any, p: Any) -> Correlation:
    value, p = float(value), float(p)
    if not math.isfinite(value):
        return Correlation(None, None, "scipy found it undefined (NaN)")
    return Correlation(value, p if math.isfinite(p) else None)


def _orders(a: Sequence[float], b: Sequence[float]) -> tuple[float | None, float | None, int]:
    n = len(a)
    pairs = n * (n - 1) // 2
    if not pairs:
        return None, None, 0
    same = opposite = 0
    for i in range(n):
        for j in range(i + 1, n):
            sa = (a[i] > a[j]) - (a[i] < a[j])
            sb = (b[i] > b[j]) - (b[i] < b[j])
            same += sa == sb
            opposite += sa * sb < 0
    return same / pairs, opposite / pairs, pairs


def compare_scores(
    name: str,
    a: Sequence[float],
    b: Sequence[float],
    *,
    missing: int = 0,
    label_a: str = "A",
    label_b: str = "B",
) -> ScoreAgreement:
    """Agreement on one score from paired values (a[i] and b[i] belong to the same item)."""
    spearman, kendall = correlations(a, b, label_a, label_b)
    n = len(a)
    same, opposite, pairs = _orders(a, b)
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    return ScoreAgreement(
        name=name,
        n=n,
        missing=missing,
        spearman=spearman,
        kendall=kendall,
        mean_abs_diff=sum(abs(d) for d in diffs) / n if n else None,
        mean_diff=sum(diffs) / n if n else None,
        same_order=same,
        opposite_order=opposite,
        item_pairs=pairs,
    )


def _key(item: object) -> tuple[int, Any]:
    # numeric ids in numeric order, the rest as text after them
    if isinstance(item, int) and not isinstance(item, bool):
        return (0, item)
    return (1, str(item))


def judge_agreement(
    a: Mapping[Any, Mapping[str, Any]],
    b: Mapping[Any, Mapping[str, Any]],
    *,
    label_a: str = "A",
    label_b: str = "B",
    dimensions: Sequence[str] | None = None,
) -> Agreement:
    """Compare judge A's and judge B's scores of the same items (see the module's docstring).
    `dimensions` (default: every score name either side uses but "overall", RACE's dimensions
    first) are the scores compared one by one; overall is always compared."""
    for label, side in ((label_a, a), (label_b, b)):
        for item, scores in side.items():
            if not isinstance(scores, Mapping):
                raise InputError(
                    f"judge {label}, item {item!r}: expected a mapping of score name to score, "
                    f"got {type(scores).__name__}"
                )
    if dimensions is None:
        names = {k for side in (a, b) for scores in side.values() for k in scores if k != OVERALL}
        dims = [d for d in DIMENSIONS if d in names] + sorted(n for n in names if n not in DIMENSIONS)
    else:
        dims = [d for d in dimensions if d != OVERALL]
    common = sorted(set(a) & set(b), key=_key)
    only_a = tuple(str(i) for i in sorted(set(a) - set(b), key=_key))
    only_b = tuple(str(i) for i in sorted(set(b) - set(a), key=_key))

    def read(label: str, item: Any, scores: Mapping[str, Any], name: str) -> float | None:
        return _score(scores.get(name), f"judge {label}, item {item!r}, {name}")

    results: list[ScoreAgreement] = []
    for dim in dims:
        xs, ys, missing = [], [], 0
        for item in common:
            x, y = read(label_a, item, a[item], dim), read(label_b, item, b[item], dim)
            if x is None or y is None:
                missing += 1
            else:
                xs.append(x)
                ys.append(y)
        results.append(compare_scores(dim, xs, ys, missing=missing, label_a=label_a, label_b=label_b))

    xs, ys, missing = [], [], 0
    used = {"given": 0, "mean": 0}
    for item in common:
        x, y = read(label_a, item, a[item], OVERALL), read(label_b, item, b[item], OVERALL)
        if x is None or y is None:
            x = y = None
            if dims:
                da = [read(label_a, item, a[item], d) for d in dims]
                db = [read(label_b, item, b[item], d) for d in dims]
                if all(v is not None for v in (*da, *db)):
                    x = sum(v for v in da if v is not None) / len(dims)
                    y = sum(v for v in db if v is not None) / len(dims)
                    used["mean"] += 1
        else:
            used["given"] += 1
        if x is None or y is None:
            missing += 1
        else:
            xs.append(x)
            ys.append(y)
    results.append(compare_scores(OVERALL, xs, ys, missing=missing, label_a=label_a, label_b=label_b))
    return Agreement(
        label_a=label_a,
        label_b=label_b,
        n_a=len(a),
        n_b=len(b),
        common=len(common),
        only_a=only_a,
        only_b=only_b,
        scores=tuple(results),
        overall_from=used,
    )
