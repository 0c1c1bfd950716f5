"""DRB's RACE arithmetic on fixed judge replies for real tasks, DRB's edge cases, lenient reply
parsing, and the loaders' errors. Expected numbers are worked out here, by hand or from the raw
criteria.jsonl rows, never taken from the code under test."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from oresearch_cli.errors import InputError
from oresearch_cli.scoring.drb import (
    DIMENSIONS,
    Criterion,
    DrbTask,
    TaskCriteria,
    default_data_dir,
    load_benchmark,
    load_criteria,
    load_tasks,
)
from oresearch_cli.scoring.drb_race import (
    DrbReplyError,
    DrbScore,
    build_messages,
    coverage_problems,
    judge_task,
    parse_reply,
    score_reply,
    summarize,
    task_schema,
    weighted_scores,
)

ZH_ID, EN_ID = 1, 51


def raw_rows() -> dict[int, dict[str, Any]]:
    path = default_data_dir() / "criteria.jsonl"
    return {row["id"]: row for row in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def reply_for(row: dict[str, Any], pick: Any) -> dict[str, Any]:
    """A judge reply scoring every criterion of `row`: pick(dim, i) -> (target, reference)."""
    out: dict[str, Any] = {}
    for dim in DIMENSIONS:
        out[dim] = []
        for i, c in enumerate(row["criterions"][dim]):
            t, r = pick(dim, i)
            out[dim].append(
                {"criterion": c["criterion"], "analysis": "...", "article_1_score": t, "article_2_score": r}
            )
    return out


def expected(row: dict[str, Any], reply: dict[str, Any]) -> tuple[dict[str, float], float]:
    """RACE by the book, from the raw row: weighted criterion means, weighted dimension sums."""
    weight_of = {d: {c["criterion"]: c["weight"] for c in row["criterions"][d]} for d in DIMENSIONS}
    t_total = r_total = 0.0
    shares = {}
    for dim in DIMENSIONS:
        items = reply[dim]
        w = [weight_of[dim][it["criterion"]] for it in items]
        t = sum(wi * float(it["article_1_score"]) for wi, it in zip(w, items, strict=True)) / sum(w)
        r = sum(wi * float(it["article_2_score"]) for wi, it in zip(w, items, strict=True)) / sum(w)
        shares[dim] = t / (t + r)
        t_total += row["dimension_weight"][dim] * t
        r_total += row["dimension_weight"][dim] * r
    return shares, t_total / (t_total + r_total)


def fenced(reply: dict[str, Any]) -> str:
    return (
        "Here is my evaluation.\n```json\n" + json.dumps(reply, ensure_ascii=False, indent=1) + "\n```\nDone."
    )


# --- real tasks ---------------------------------------------------------------------------------


def test_shipped_benchmark_loads_and_matches_the_raw_rows() -> None:
    tasks = load_tasks()
    assert len(tasks) == 100
    assert sum(t.language == "zh" for t in tasks) == 50 and sum(t.language == "en" for t in tasks) == 50
    criteria, rows = load_criteria(), raw_rows()
    for task_id in (ZH_ID, EN_ID):
        row, c = rows[task_id], criteria[task_id]
        assert dict(c.dimension_weights) == row["dimension_weight"]
        for dim in DIMENSIONS:
            assert [(x.text, x.weight) for x in c.criteria[dim]] == [
                (x["criterion"], x["weight"]) for x in row["criterions"][dim]
            ]
    pairs = load_benchmark()
    assert [t.id for t, _ in pairs] == [c.id for _, c in pairs]


# Uniform scores within a dimension make each dimension mean that score whatever the criterion
# weights, so the totals can be done by hand from the task's four dimension weights:
# task 1 (zh), weights comp .30, insight .36, instr .20, read .14, scores comp 7/5, insight 4/6,
#   instr 8/8, read 6/3: T = 2.1+1.44+1.6+0.84 = 5.98, R = 1.5+2.16+1.6+0.42 = 5.68,
#   overall 5.98/11.66 = 0.5129; dims 7/12, 4/10, 8/16, 6/9.
# task 51 (en), weights comp .30, insight .33, instr .22, read .15, scores comp 8/6, insight 6/6,
#   instr 9/7, read 5/5: T = 2.4+1.98+1.98+0.75 = 7.11, R = 1.8+1.98+1.54+0.75 = 6.07,
#   overall 7.11/13.18 = 0.5395; dims 8/14, 6/12, 9/16, 5/10.
HAND = {
    ZH_ID: (
        {
            "comprehensiveness": (7, 5),
            "insight": (4, 6),
            "instruction_following": (8, 8),
            "readability": (6, 3),
        },
        {"comprehensiveness": 0.5833, "insight": 0.4, "instruction_following": 0.5, "readability": 0.6667},
        0.5129,
    ),
    EN_ID: (
        {
            "comprehensiveness": (8, 6),
            "insight": (6, 6),
            "instruction_following": (9, 7),
            "readability": (5, 5),
        },
        {"comprehensiveness": 0.5714, "insight": 0.5, "instruction_following": 0.5625, "readability": 0.5},
        0.5395,
    ),
}


@pytest.mark.parametrize("task_id", [ZH_ID, EN_ID])
def test_hand_computed_scores_on_real_tasks(task_id: int) -> None:
    per_dim, dims, overall = HAND[task_id]
    reply = reply_for(raw_rows()[task_id], lambda dim, i: per_dim[dim])
    score = score_reply(parse_reply(fenced(reply)), load_criteria()[task_id])
    assert round(score.overall, 4) == overall
    assert {d: round(v, 4) for d, v in score.dimensions.items()} == dims


@pytest.mark.parametrize("task_id", [ZH_ID, EN_ID])
def test_varied_scores_follow_the_criterion_weights(task_id: int) -> None:
    row = raw_rows()[task_id]
    # different scores per criterion, some as strings and decimals, so the weights matter
    reply = reply_for(row, lambda dim, i: ((3 * i + len(dim)) % 11, str((7 * i + 2) % 10 + 0.5)))
    want_dims, want_overall = expected(row, reply)
    score = score_reply(parse_reply(fenced(reply)), load_criteria()[task_id])
    assert round(score.overall, 4) == round(want_overall, 4)
    assert {d: round(v, 4) for d, v in score.dimensions.items()} == {
        d: round(v, 4) for d, v in want_dims.items()
    }
    # sanity of the fixture itself: the weights do move the result away from a plain mean
    plain = [sum(float(it["article_1_score"]) for it in reply[d]) / len(reply[d]) for d in DIMENSIONS]
    weighted = weighted_scores(reply, load_criteria()[task_id])
    assert [round(weighted.target[d], 6) for d in DIMENSIONS] != [round(p, 6) for p in plain]


# --- DRB's edge cases, on a small hand-made task --------------------------------------------------


def small_task() -> TaskCriteria:
    def crits(*pairs: tuple[str, float]) -> tuple[Criterion, ...]:
        return tuple(Criterion(text, "why", w) for text, w in pairs)

    return TaskCriteria(
        7,
        "q",
        {"comprehensiveness": 0.4, "insight": 0.3, "instruction_following": 0.2, "readability": 0.1},
        {
            "comprehensiveness": crits(("Alpha Coverage", 0.5), ("Beta Depth", 0.3), ("Gamma Data", 0.2)),
            "insight": crits(("Delta", 1.0)),
            "instruction_following": crits(("Epsilon", 1.0)),
            "readability": crits(("Zeta", 1.0)),
        },
    )


def item(text: str, t: Any, r: Any = None) -> dict[str, Any]:
    out = {"criterion": text, "article_1_score": t}
    if r is not None:
        out["article_2_score"] = r
    return out


def even(**comprehensiveness: Any) -> dict[str, Any]:
    """Comprehensiveness as given, the other three dimensions 5 vs 5."""
    reply = {d: [item(c.text, 5, 5)] for d, cs in small_task().criteria.items() for c in cs[:1]}
    reply["comprehensiveness"] = comprehensiveness["items"]
    return reply


def test_a_missing_criterion_leaves_both_sums() -> None:
    # Beta (0.3) not scored: t = (.5*8 + .2*2)/.7 = 6.2857, r = (.5*4 + .2*6)/.7 = 4.5714
    reply = even(items=[item("Alpha Coverage", 8, 4), item("Gamma Data", 2, 6)])
    w = weighted_scores(reply, small_task())
    assert round(w.target["comprehensiveness"], 4) == 6.2857
    assert round(w.reference["comprehensiveness"], 4) == 4.5714
    assert round(score_reply(reply, small_task()).dimensions["comprehensiveness"], 4) == round(4.4 / 7.6, 4)
    # T = .4*6.2857 + .6*5 = 5.5143, R = .4*4.5714 + 3 = 4.8286
    assert round(score_reply(reply, small_task()).overall, 4) == round(5.514286 / (5.514286 + 4.828571), 4)
    assert "comprehensiveness: criterion 'Beta Depth' was not scored" in coverage_problems(
        reply, small_task()
    )


def test_an_unknown_criterion_gets_the_mean_weight_and_loose_texts_match() -> None:
    # "Omega" matches nothing: weight (.5+.3+.2)/3; t = (.5*8 + 10/3)/(.5+1/3) = 8.8, r = 2/(5/6) = 2.4
    reply = even(items=[item("Alpha Coverage", 8, 4), item("Omega", 10, 0)])
    w = weighted_scores(reply, small_task())
    assert round(w.target["comprehensiveness"], 4) == 8.8
    assert round(w.reference["comprehensiveness"], 4) == 2.4
    assert w.unmatched == ("comprehensiveness:Omega",)
    # case-insensitive and substring matches get the criterion's own weight: same as exact text
    exact = even(items=[item("Alpha Coverage", 8, 4), item("Beta Depth", 2, 6)])
    loose = even(items=[item("  alpha coverage ", 8, 4), item("Beta Depth (and detail)", 2, 6)])
    assert weighted_scores(loose, small_task()) == weighted_scores(exact, small_task())


def test_case_insensitive_match_comes_before_substring() -> None:
    # "data quality" holds "Data" (listed first) as a substring, but matches "Data Quality" by case:
    # DRB tries case first, so its weight 0.9 applies, t = (.9*10 + .1*0) / 1 = 9 with "Data" at 0
    base = small_task()
    crits = (Criterion("Data", "", 0.1), Criterion("Data Quality", "", 0.9))
    task = TaskCriteria(8, "q", base.dimension_weights, {**base.criteria, "comprehensiveness": crits})
    reply = even(items=[item("data quality", 10, 0), item("Data", 0, 10)])
    w = weighted_scores(reply, task)
    assert round(w.target["comprehensiveness"], 4) == 9.0
    assert round(w.reference["comprehensiveness"], 4) == 1.0


def test_reference_scores_missing_as_drb_handles_them() -> None:
    # no reference score on a middle item: it adds to the target sum and the weight, not to R
    middle = even(items=[item("Alpha Coverage", 8, 4), item("Beta Depth", 6), item("Gamma Data", 2, 6)])
    w = weighted_scores(middle, small_task())
    assert round(w.target["comprehensiveness"], 4) == round(0.5 * 8 + 0.3 * 6 + 0.2 * 2, 4)
    assert round(w.reference["comprehensiveness"], 4) == round(0.5 * 4 + 0.2 * 6, 4)
    # none on the last item: DRB's check reads the last item, so the reference mean is 0
    last = even(items=[item("Alpha Coverage", 8, 4), item("Gamma Data", 2)])
    w = weighted_scores(last, small_task())
    assert w.reference["comprehensiveness"] == 0
    assert score_reply(last, small_task()).dimensions["comprehensiveness"] == 1.0


def test_unreadable_scores_and_non_list_dimensions_are_skipped() -> None:
    reply = even(items=[item("Alpha Coverage", 8, 4), item("Beta Depth", "n/a", 6)])
    w = weighted_scores(reply, small_task())
    assert w.target["comprehensiveness"] == 8 and w.reference["comprehensiveness"] == 4
    assert "comprehensiveness[2] article_1_score 'n/a' is not a number" in coverage_problems(
        reply, small_task()
    )
    # a dimension that is not a list: no mean, share 0, nothing in the totals
    reply["insight"] = "very insightful"
    score = score_reply(reply, small_task())
    assert score.dimensions["insight"] == 0.0
    # T = .4*8 + .2*5 + .1*5 = 4.7, R = .4*4 + .2*5 + .1*5 = 3.1
    assert round(score.overall, 4) == round(4.7 / 7.8, 4)


def test_zero_totals_score_zero_not_an_error() -> None:
    reply = reply_for(raw_rows()[EN_ID], lambda dim, i: (0, 0))
    score = score_reply(reply, load_criteria()[EN_ID])
    assert score.overall == 0.0
    assert score.dimensions == dict.fromkeys(DIMENSIONS, 0.0)
    # the target at 0 against a scoring reference is a real 0, too
    reply = reply_for(raw_rows()[EN_ID], lambda dim, i: (0, 4))
    assert score_reply(reply, load_criteria()[EN_ID]).overall == 0.0


def test_summary_is_the_plain_mean_over_scored_tasks() -> None:
    def s(x: float, overall: float) -> DrbScore:
        return DrbScore(dict.fromkeys(DIMENSIONS, x), overall)

    summary = summarize([s(0.4, 0.5), None, s(0.3, 0.25), s(0.45, 0.6)])
    assert summary is not None
    assert (summary.scored, summary.failed) == (3, 1)
    assert round(summary.overall, 4) == 0.45  # (0.5 + 0.25 + 0.6) / 3, the failed task left out
    assert summary.lines() == [
        "Comprehensiveness: 0.3833",
        "Insight: 0.3833",
        "Instruction Following: 0.3833",
        "Readability: 0.3833",
        "Overall Score: 0.4500",
    ]
    assert summarize([None, None]) is None


# --- reading replies -------------------------------------------------------------------------------


def test_lenient_parsing_of_untidy_replies() -> None:
    reply = reply_for(raw_rows()[EN_ID], lambda dim, i: (7, 6))
    body = json.dumps(reply)
    want = score_reply(reply, load_criteria()[EN_ID])
    for text in (
        body,
        f"```json\n{body}\n```",
        f"```\n{body}\n```",
        f"{body}\n\nOverall, article 1 is stronger {{in my view}}.",
        f"<think>I should compare {{carefully}}.</think>\nSure! {body}",
        json.dumps(reply_for(raw_rows()[EN_ID], lambda dim, i: ("7", " 6.0 "))),  # numeric strings
    ):
        got = score_reply(parse_reply(text), load_criteria()[EN_ID])
        assert got == want, text[:80]


def test_unusable_replies_say_what_is_wrong() -> None:
    reply = reply_for(raw_rows()[ZH_ID], lambda dim, i: (7, 6))
    del reply["insight"], reply["readability"]
    with pytest.raises(DrbReplyError, match="missing dimension\\(s\\): insight, readability"):
        parse_reply(f"```json\n{json.dumps(reply, ensure_ascii=False)}\n```")
    with pytest.raises(DrbReplyError, match="no JSON object"):
        parse_reply("I cannot judge these articles.")
    with pytest.raises(DrbReplyError, match="no complete, valid JSON"):
        parse_reply('{"comprehensiveness": [{"criterion": "x", "article_1_score": 7')
    with pytest.raises(DrbReplyError):
        parse_reply("")


def test_coverage_problems_name_each_gap() -> None:
    reply = even(items=[item("Alpha Coverage", 8, 11), item("Alpha Coverage", 8, 4), {"analysis": "?"}])
    problems = coverage_problems(reply, small_task())
    assert "comprehensiveness[1] article_2_score 11 is outside 0-10" in problems
    assert "comprehensiveness[2] criterion 'Alpha Coverage' is scored twice (counted twice)" in problems
    assert "comprehensiveness[3] has no criterion text" in problems
    assert "comprehensiveness: criterion 'Gamma Data' was not scored" in problems
    complete = even(items=[item(c.text, 5, 5) for c in small_task().criteria["comprehensiveness"]])
    assert coverage_problems(complete, small_task()) == []


# --- the prompt and the judge call ------------------------------------------------------------------


def test_prompt_language_articles_and_hidden_weights() -> None:
    tasks, criteria = {t.id: t for t in load_tasks()}, load_criteria()
    zh = build_messages(tasks[ZH_ID], criteria[ZH_ID], "TARGET-TEXT", "REFERENCE-TEXT")[-1]["content"]
    en = build_messages(tasks[EN_ID], criteria[EN_ID], "TARGET-TEXT", "REFERENCE-TEXT")[-1]["content"]
    assert "评估标准" in zh and "Criteria" not in zh and "## Criteria" in en and "评估" not in en
    for text, task_id in ((zh, ZH_ID), (en, EN_ID)):
        assert tasks[task_id].prompt in text
        assert text.index("<article_1>\nTARGET-TEXT") < text.index("<article_2>\nREFERENCE-TEXT")
        listed = json.loads(text[text.index("<criteria_list>") + 15 : text.index("</criteria_list>")])
        assert list(listed) == list(DIMENSIONS)
        assert all(set(c) == {"criterion", "explanation"} for d in DIMENSIONS for c in listed[d])
        row = raw_rows()[task_id]
        assert [c["criterion"] for c in listed["insight"]] == [
            c["criterion"] for c in row["criterions"]["insight"]
        ]
        assert '"article_1_score"' in text and '"article_2_score"' in text


class ScriptedJudge:
    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.calls: list[list[dict[str, str]]] = []

    async def chat(self, role: str, messages: list[dict[str, str]], **_: Any) -> Any:
        self.calls.append(messages)
        return SimpleNamespace(text=self.replies.pop(0))


def test_judge_task_reasks_then_scores() -> None:
    task = next(t for t in load_tasks() if t.id == EN_ID)
    criteria = load_criteria()[EN_ID]
    good = reply_for(raw_rows()[EN_ID], lambda dim, i: (8, 6))
    partial = dict(good, insight=good["insight"][1:])
    judge = ScriptedJudge("no idea", fenced(partial), fenced(good))
    result = asyncio.run(judge_task(judge, task, criteria, "t", "r", complete=True))
    assert result.attempts == 3 and result.error is None and result.problems == []
    assert result.score is not None and round(result.score.overall, 4) == round(8 / 14, 4)
    assert "not usable: the answer holds no JSON object" in judge.calls[1][-1]["content"]
    assert "was not scored" in judge.calls[2][-1]["content"]
    # DRB's own acceptance takes the partial reply and records the gap
    result = asyncio.run(judge_task(ScriptedJudge(fenced(partial)), task, criteria, "t", "r"))
    assert result.attempts == 1 and result.score is not None
    assert any("was not scored" in p for p in result.problems)
    # nothing usable: a failure, not a number
    result = asyncio.run(judge_task(ScriptedJudge("x", "y"), task, criteria, "t", "r", max_attempts=2))
    assert result.score is None and result.error is not None and "no JSON object" in result.error


def test_pointwise_mode_is_the_weighted_mean_over_ten_without_a_reference() -> None:
    """No reference article: one article judged per criterion; the score is the criterion-weighted
    mean per dimension and the dimension-weighted total, / 10 (worked out from the raw row)."""
    task = next(t for t in load_tasks() if t.id == EN_ID)
    criteria = load_criteria()[EN_ID]
    row = raw_rows()[EN_ID]
    reply = {
        dim: [
            {"criterion": c["criterion"], "analysis": "...", "target_score": (i % 3) * 3 + 1}
            for i, c in enumerate(row["criterions"][dim])
        ]
        for dim in DIMENSIONS
    }
    judge = ScriptedJudge(fenced(reply))
    result = asyncio.run(judge_task(judge, task, criteria, "the article", None))
    assert result.error is None and result.score is not None and result.problems == []
    total = 0.0
    for dim in DIMENSIONS:
        weights = [c["weight"] for c in row["criterions"][dim]]
        mean = sum(w * ((i % 3) * 3 + 1) for i, w in enumerate(weights)) / sum(weights)
        assert round(result.score.dimensions[dim], 6) == round(mean / 10, 6)
        total += row["dimension_weight"][dim] * mean
    assert round(result.score.overall, 6) == round(total / 10, 6)
    # the prompt shows one article and asks for target_score only
    user = judge.calls[0][-1]["content"]
    assert "the article" in user and "article_2" not in user and "target_score" in user
    # a reply that scores pairs where one article was asked for misses every criterion's score
    assert any(
        "has no target_score" in p
        for p in coverage_problems(reply_for(row, lambda d, i: (5, 5)), criteria, pointwise=True)
    )


def test_the_task_schema_names_the_tasks_own_criteria() -> None:
    criteria = load_criteria()[ZH_ID]
    schema = task_schema(criteria, analysis_chars=40, integer_scores=True)
    for dim in DIMENSIONS:
        texts = [c.text for c in criteria.criteria[dim]]
        items = schema["properties"][dim]
        assert items["minItems"] == items["maxItems"] == len(texts)
        fields = items["items"]["properties"]
        assert fields["criterion"]["enum"] == texts and fields["analysis"]["maxLength"] == 40
        assert fields["article_1_score"] == {"type": "integer", "minimum": 0, "maximum": 10}
        assert set(items["items"]["required"]) == {
            "criterion",
            "analysis",
            "article_1_score",
            "article_2_score",
        }
    alone = task_schema(criteria, pointwise=True)
    props = alone["properties"]["insight"]["items"]["properties"]
    assert (
        "target_score" in props
        and "article_2_score" not in props
        and props["target_score"]["type"] == "number"
    )
    assert "maxLength" not in props["analysis"]


# --- loader errors ----------------------------------------------------------------------------------


def write_copy(
    tmp_path: Path, criteria_lines: list[str] | None = None, query_lines: list[str] | None = None
) -> Path:
    src = default_data_dir()
    crit = src.joinpath("criteria.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    query = src.joinpath("query.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    (tmp_path / "criteria.jsonl").write_text("\n".join(criteria_lines or crit) + "\n", encoding="utf-8")
    (tmp_path / "query.jsonl").write_text("\n".join(query_lines or query) + "\n", encoding="utf-8")
    return tmp_path


def broken_row(change: Any) -> str:
    row = raw_rows()[2]
    change(row)
    return json.dumps(row, ensure_ascii=False)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"id": 2, "prompt": "x", "dimension_weight": ', "criteria.jsonl:2: not valid JSON"),
        ("[1, 2]", "criteria.jsonl:2: a row must be a JSON object"),
        (
            broken_row(lambda r: r["dimension_weight"].pop("insight")),
            "criteria.jsonl:2: 'dimension_weight' must have exactly the dimensions .*missing insight",
        ),
        (
            broken_row(lambda r: r["criterions"]["readability"][1].update(weight="0.2")),
            r"criteria.jsonl:2: criterions.readability\[2\]: 'weight' must be a non-negative number, got '0.2'",
        ),
        (
            broken_row(lambda r: r["criterions"].update(insight=[])),
            "criterions.insight must be a non-empty list",
        ),
        (broken_row(lambda r: r.update(id=1)), "criteria.jsonl:2: id 1 repeats line 1"),
    ],
)
def test_malformed_criteria_lines_name_file_and_line(tmp_path: Path, bad_line: str, message: str) -> None:
    lines = default_data_dir().joinpath("criteria.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    folder = write_copy(tmp_path, criteria_lines=[lines[0], bad_line, lines[2]])
    with pytest.raises(InputError, match=message) as caught:
        load_criteria(folder)
    assert "\n" not in str(caught.value)


def test_malformed_query_and_missing_files(tmp_path: Path) -> None:
    good = default_data_dir().joinpath("query.jsonl").read_text(encoding="utf-8").splitlines()[:2]
    bad = json.dumps({"id": 3, "topic": "t", "language": "fr", "prompt": "p"})
    folder = write_copy(tmp_path, query_lines=[*good, bad])
    with pytest.raises(InputError, match="query.jsonl:3: 'language' must be one of en, zh, got 'fr'"):
        load_tasks(folder)
    with pytest.raises(InputError, match="no such file"):
        load_tasks(tmp_path / "nowhere")
    # a task whose prompt has no criteria row
    folder = write_copy(tmp_path, query_lines=[json.dumps({"id": 9, "language": "en", "prompt": "unknown"})])
    with pytest.raises(InputError, match="task 9 has no row with the same prompt"):
        load_benchmark(folder)
    assert DrbTask(1, "p", "en").topic == ""


def _tokens_for(text: str, alternatives: dict[int, list[tuple[str, float]]]) -> tuple[Any, ...]:
    """The reply's tokens: the text between scores as plain tokens, each score digit at offset o
    its own token with the top alternatives `alternatives[o]` (probabilities)."""
    import math

    from oresearch_cli.llm.logprob_scores import TokenLogprob

    tokens = []
    last = 0
    for offset in sorted(alternatives):
        if offset > last:
            tokens.append(TokenLogprob(text[last:offset], 0.0))
        top = tuple((t, math.log(p)) for t, p in alternatives[offset])
        tokens.append(TokenLogprob(text[offset], top[0][1], top))
        last = offset + 1
    tokens.append(TokenLogprob(text[last:], 0.0))
    return tuple(tokens)


def test_logprob_weighted_race_replaces_each_written_score_by_its_expectation() -> None:
    """G-Eval on a RACE reply: each score becomes sum(p*s)/sum(p) over its alternatives; the
    task's T/(T+R) is then computed from those, beside DRB's from the written integers."""
    task = small_task()
    reply = {
        "comprehensiveness": [
            {"criterion": "Alpha Coverage", "article_1_score": 7, "article_2_score": 5},
            {"criterion": "Beta Depth", "article_1_score": 6, "article_2_score": 6},
            {"criterion": "Gamma Data", "article_1_score": 8, "article_2_score": 4},
        ],
        "insight": [{"criterion": "Delta", "article_1_score": 5, "article_2_score": 5}],
        "instruction_following": [{"criterion": "Epsilon", "article_1_score": 9, "article_2_score": 3}],
        "readability": [{"criterion": "Zeta", "article_1_score": 4, "article_2_score": 6}],
    }
    text = json.dumps(reply)
    first = text.index('"article_1_score": 7') + len('"article_1_score": ')
    alternatives = {first: [("7", 0.6), ("8", 0.3), ("6", 0.1)]}  # 7.2 expected
    from oresearch_cli.scoring.drb_race import normalized, weighted_reply

    weighted = weighted_reply(reply, text, _tokens_for(text, alternatives))
    assert weighted is not None
    assert round(weighted["comprehensiveness"][0]["article_1_score"], 6) == 7.2
    # a score whose token has no alternatives keeps its written value
    assert weighted["comprehensiveness"][1]["article_1_score"] == 6
    t = (0.5 * 7.2 + 0.3 * 6 + 0.2 * 8) * 0.4 + 5 * 0.3 + 9 * 0.2 + 4 * 0.1
    r = (0.5 * 5 + 0.3 * 6 + 0.2 * 4) * 0.4 + 5 * 0.3 + 3 * 0.2 + 6 * 0.1
    assert round(normalized(weighted_scores(weighted, task)).overall, 6) == round(t / (t + r), 6)
    # a reply that does not line up with its text is not weighted at all
    assert weighted_reply(reply, text.replace('"article_1_score": 7', '"article_1_score": 3'), ()) is None
