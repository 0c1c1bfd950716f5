"""Near-duplicate removal: positive and negative cases, and which of two duplicates stays."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from oresearch_cli.filtering.config import FilterConfig, JudgeSettings
from oresearch_cli.filtering.dedup import DUPLICATE_QUESTION, DUPLICATE_REPORT, find_duplicates
from oresearch_cli.filtering.judge import CRITERIA, JudgeCache, cache_key
from oresearch_cli.filtering.rules import Outcome
from oresearch_cli.stages.filter import FilterOptions, dedup_scores, run_filter

from filter_support import variant, write_jsonl
from standin_llm import StandinLLM, ok

QUESTIONS = [
    "What do the light-dependent reactions and the Calvin cycle of photosynthesis produce?",
    "What do the light dependent reactions and the Calvin cycle of photosynthesis produce ?",  # reworded
    "How did the printing press change literacy rates in sixteenth-century Europe?",
]


def _report(i: int) -> str:
    return variant(i)[1].split("<suggested_answer>")[1].split("</suggested_answer>")[0]


def test_near_duplicate_questions_are_found_and_distinct_ones_kept() -> None:
    reports = [_report(0), _report(1), _report(2)]
    found = find_duplicates(QUESTIONS, reports, [1.0, 2.0, 0.0])
    assert set(found) == {0}  # the lower-scored of the two near-identical questions goes
    assert found[0].of == 1 and found[0].code == DUPLICATE_QUESTION and found[0].similarity >= 0.9
    # negative: the same questions scored the other way keep the other one; the third is never touched
    assert set(find_duplicates(QUESTIONS, reports, [2.0, 1.0, 0.0])) == {1}
    assert find_duplicates(QUESTIONS[:1] + QUESTIONS[2:], [reports[0], reports[2]], [0.0, 0.0]) == {}


def test_the_same_report_under_different_questions_is_a_report_duplicate() -> None:
    report = _report(0)
    edited = report.replace("## Conclusion", "One more sentence on the stroma [3].\n\n## Conclusion")
    found = find_duplicates([QUESTIONS[0], QUESTIONS[2]], [report, edited], [0.0, 1.0])
    assert list(found) == [0] and found[0].code == DUPLICATE_REPORT
    # negative: different reports under different questions
    assert find_duplicates([QUESTIONS[0], QUESTIONS[2]], [report, _report(5)], [0.0, 1.0]) == {}


def _scores(value: int) -> dict:
    return {c: {"score": float(value), "reason": "r"} for c in CRITERIA}


def test_dedup_scores_rank_judge_pass_over_unjudged_over_judge_reject() -> None:
    outcomes = [Outcome(id=str(i), quality=q) for i, q in enumerate((1.0, 9.0, 5.0, 2.0))]
    cached = [_scores(8), None, _scores(2), _scores(9)]
    ranks = dedup_scores(outcomes, cached, JudgeSettings())
    order = sorted(range(4), key=lambda i: -ranks[i])
    assert order == [3, 0, 1, 2]  # passing (9 then 8), then the unjudged one, then the rejected one


def test_a_cached_judge_score_decides_which_duplicate_stays(tmp_path: Path) -> None:
    question, trace = variant(0)
    longer = trace.replace(
        "## Conclusion", "A further sentence on RuBisCO in the stroma [3].\n\n## Conclusion"
    )
    rows = [
        {"id": "short", "question": question, "language": "en", "trace": trace},
        {"id": "long", "question": question + " ", "language": "en", "trace": longer},
    ]
    src = write_jsonl(tmp_path / "t.jsonl", rows)
    ws = tmp_path / "ws"

    rules_only = asyncio.run(run_filter(ws, str(src), FilterOptions(judge=False)))
    by_id = {r["id"]: r for r in rules_only.records}
    assert by_id["short"]["duplicate_of"] == "long"  # by the rules' quality: the longer report stays

    # An earlier judge run scored the short one well: now it stays and the long one goes.
    cache = JudgeCache(ws / "cache" / JudgeCache.FILE)
    cache.put(cache_key("judge-test", rows[0]["question"], trace), "judge-test", _scores(9))
    cache.close()
    with StandinLLM(lambda request: ok(json.dumps(_scores(8)))) as srv:
        options = FilterOptions(
            config=FilterConfig(),
            llm_overrides={"judge.model": "judge-test", "judge.base_url": srv.url, "judge.api_key_env": ""},
        )
        judged = asyncio.run(run_filter(ws, str(src), options))
        assert not srv.chat_requests()  # the kept one was cached; the duplicate is never judged
    by_id = {r["id"]: r for r in judged.records}
    assert by_id["long"]["duplicate_of"] == "short" and by_id["short"]["verdict"] == "accepted"
    assert json.loads(by_id["long"]["reasons"]) == [DUPLICATE_QUESTION]


def test_dedup_ignores_the_fixture_question_variants() -> None:
    rows = [variant(i) for i in range(4)]
    assert find_duplicates([q for q, _ in rows], [_report(i) for i in range(4)], [0.0] * 4) == {}


def test_equal_scores_keep_the_first_trace() -> None:
    outcomes = [Outcome(id=str(i), quality=3.0) for i in range(3)]
    ranks = dedup_scores(outcomes, [None] * 3, JudgeSettings())
    assert ranks[0] == ranks[1] == ranks[2]
    found = find_duplicates([QUESTIONS[0]] * 3, [_report(0)] * 3, ranks)
    assert sorted(found) == [1, 2] and {d.of for d in found.values()} == {0}
