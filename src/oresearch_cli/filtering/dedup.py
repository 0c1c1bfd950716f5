"""Near-duplicate questions and reports among the traces the rules kept.

MinHash LSH with an exact Jaccard check (`oresearch_cli.textutil.near_duplicates`), over the
questions and then the reports. Of a group of near-duplicates the best-scored trace stays. Dedup
runs before the judge (no judge call for a trace that goes anyway), so the score is what is known
then (`oresearch_cli.stages.filter.dedup_scores`): judge scores cached by an earlier run (a trace
they pass beats one not judged yet, which beats one they reject), then the rules' quality score
(distinct sources, fewer validator warnings, a longer report).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from oresearch_cli.textutil import near_duplicates

DUPLICATE_QUESTION = "duplicate-question"
DUPLICATE_REPORT = "duplicate-report"
CODES = {
    DUPLICATE_QUESTION: "a near-duplicate of another kept trace's question (the better-scored one stays)",
    DUPLICATE_REPORT: "a near-duplicate of another kept trace's report (the better-scored one stays)",
}


@dataclass(frozen=True)
class Duplicate:
    index: int  # into the texts given
    of: int
    code: str
    similarity: float


def find_duplicates(
    questions: Sequence[str],
    reports: Sequence[str],
    scores: Sequence[float],
    question_threshold: float = 0.9,
    report_threshold: float = 0.8,
) -> dict[int, Duplicate]:
    """Indices to drop, each with the index it duplicates. Questions first, then reports among the rest."""
    found: dict[int, Duplicate] = {}
    if len(questions) < 2:
        return found
    with_question = [i for i, q in enumerate(questions) if q.strip()]
    dropped = near_duplicates(
        [questions[i] for i in with_question], question_threshold, [scores[i] for i in with_question]
    )
    for local, (kept, similarity) in dropped.items():
        index = with_question[local]
        found[index] = Duplicate(index, with_question[kept], DUPLICATE_QUESTION, round(similarity, 3))
    rest = [i for i in range(len(reports)) if i not in found and reports[i].strip()]
    dropped = near_duplicates([reports[i] for i in rest], report_threshold, [scores[i] for i in rest])
    for local, (kept, similarity) in dropped.items():
        index = rest[local]
        found[index] = Duplicate(index, rest[kept], DUPLICATE_REPORT, round(similarity, 3))
    return found
