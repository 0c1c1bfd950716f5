"""DeepResearchGym-style quality: lenient reading of judge replies, re-asks, failures, the cache,
log-prob weighted scores through the stand-in endpoint, and one run through the embedded SmolLM2."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest

from oresearch_cli.errors import ConfigError, InputError
from oresearch_cli.filtering.judge import JudgeCache
from oresearch_cli.llm import LLMClient, load_config
from oresearch_cli.scoring.quality import (
    CONTRADICTED,
    OMITTED,
    QUALITY_DIMENSIONS,
    SUPPORTED,
    DimensionScore,
    KeyPointResult,
    QualityItem,
    QualityReplyError,
    QualityResult,
    QualitySettings,
    build_messages,
    parse_scores,
    parse_verdicts,
    quality_all,
    summarize_quality,
)

from standin_llm import Received, Reply, StandinLLM, error, ok, raw

DIMS = list(QUALITY_DIMENSIONS)
SIX = dict(zip(DIMS, [7, 6, 8, 5, 4, 9], strict=True))
LINES = "\n".join(f"{d.capitalize()}: {s}" for d, s in SIX.items())


# --- reading the six scores ------------------------------------------------------------------------

GOOD_REPLIES = {
    "lines": LINES,
    "json": json.dumps(SIX),
    "fenced json amid prose": f"Here are my scores:\n```json\n{json.dumps(SIX, indent=2)}\n```\nHope it helps.",
    "markdown, x/10": "\n".join(f"- **{d.capitalize()}**: {s}/10" for d, s in SIX.items()),
    "upper case, out of 10": "\n".join(f"{d.upper()} - {s} out of 10" for d, s in SIX.items()),
    "numbered, words around": "\n".join(
        f"{n}. {d.capitalize()} score is {s} because of reasons."
        for n, (d, s) in enumerate(SIX.items(), start=1)
    ),
    "nested objects": json.dumps({d: {"score": s, "reason": "ok"} for d, s in SIX.items()}),
    "range label": "\n".join(f"{d.capitalize()} (0-10): {s}" for d, s in SIX.items()),
    "thinking first": "<think>Clarity: 2? Depth: 1? no.</think>\n" + LINES,
    "reasoning then final list": "Clarity: 3 at first sight, but on reflection higher.\n\nFinal:\n" + LINES,
    "one-line JSON after prose with a number": "The report cites 3 sources. " + json.dumps(SIX),
    "alias insight": LINES.replace("Insightfulness: 9", "Insight: 9"),
}


@pytest.mark.parametrize("reply", GOOD_REPLIES.values(), ids=GOOD_REPLIES.keys())
def test_lenient_reading_of_the_six_scores(reply: str) -> None:
    scores = parse_scores(reply)
    assert {d: m.value for d, m in scores.items()} == SIX
    for match in scores.values():  # each position points at the digits as written
        assert reply[match.start : match.start + len(match.number)] == match.number


def test_decimals_are_read_and_positions_kept() -> None:
    scores = parse_scores(LINES.replace("Clarity: 7", "Clarity: 7.5"))
    assert scores["clarity"].value == 7.5 and scores["clarity"].number == "7.5"


BAD_REPLIES = {
    "prose only": ("The report is quite good overall.", "no score for Clarity, Depth, Balance, Breadth"),
    "the template copied": ("\n".join(f"{d.capitalize()}: <0-10>" for d in DIMS), "no score for Clarity"),
    "one missing": ("\n".join(LINES.splitlines()[:-1]), "no score for Insightfulness"),
    "out of range": (LINES.replace("Depth: 6", "Depth: 60"), "Depth 60 is outside 0-10"),
    "a range": (LINES.replace("Balance: 8", "Balance: 7-8"), "no score for Balance"),
    "negative": (LINES.replace("Breadth: 5", "Breadth: -5"), "no score for Breadth"),
    "empty": ("", "no score for Clarity"),
}


@pytest.mark.parametrize(("reply", "message"), BAD_REPLIES.values(), ids=BAD_REPLIES.keys())
def test_unusable_replies_say_what_is_missing(reply: str, message: str) -> None:
    with pytest.raises(QualityReplyError, match=message.replace("(", r"\(")):
        parse_scores(reply)


# --- reading key-point verdicts --------------------------------------------------------------------

VERDICT_REPLIES = {
    "lines": "1: supported\n2: omitted\n3: contradicted",
    "json": json.dumps({"1": "supported", "2": "omitted", "3": "contradicted"}),
    "words around": "Point 1 - Supported: the report says so.\nPoint 2: Omitted (not mentioned)\n"
    "Point 3: **Contradicted**, it claims the opposite.",
    "synonyms": "1. covered\n2. missing\n3. contradicts",
    "not covered": "1: yes\n2: not covered\n3: contradiction",
}


@pytest.mark.parametrize("reply", VERDICT_REPLIES.values(), ids=VERDICT_REPLIES.keys())
def test_lenient_reading_of_verdicts(reply: str) -> None:
    assert parse_verdicts(reply, 3) == [SUPPORTED, OMITTED, CONTRADICTED]


def test_verdicts_missing_are_named() -> None:
    with pytest.raises(QualityReplyError, match="no verdict for key points 2, 3 of 3"):
        parse_verdicts("1: supported\n4: omitted", 3)
    with pytest.raises(QualityReplyError, match="key point 1 of 1"):
        parse_verdicts("1: <verdict>", 1)


# --- settings and inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be an integer of at least 1"),
        ({"concurrency": 0}, "concurrency must be"),
        ({"top_logprobs": 0}, "top_logprobs must be an integer from 1 to 20"),
        ({"top_logprobs": 50}, "top_logprobs must be an integer from 1 to 20"),
    ],
)
def test_bad_settings_are_one_clear_line(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        QualitySettings(**kwargs)


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ("one point", "key_points must be a list of strings, got str"),
        (["fine", ""], r"key_points\[2\] must be a non-empty string"),
        (["fine", 3], r"key_points\[2\] must be a non-empty string, got 3"),
    ],
)
def test_bad_key_points_name_the_item_and_the_fix(tmp_path: Path, points: Any, message: str) -> None:
    item = QualityItem("q7", "Q?", "A report.", points)
    with StandinLLM() as srv, pytest.raises(InputError, match=f"quality item 'q7': {message}"):
        run_quality(srv.url, [item], QualitySettings(), tmp_path)
    assert not srv.chat_requests()


# --- orchestration through the stand-in endpoint ---------------------------------------------------


def llm_config(url: str, **extra: Any):
    return load_config(
        overrides={"judge.model": "judge-test", "judge.base_url": url, "judge.api_key_env": "",
                   "judge.max_attempts": 1, **extra},
    )  # fmt: skip


def run_quality(
    url: str, items: list[QualityItem], settings: QualitySettings, tmp_path: Path, **extra: Any
) -> list[QualityResult]:
    async def go() -> list[QualityResult]:
        cache = JudgeCache(tmp_path / "judge.sqlite")
        try:
            async with LLMClient(llm_config(url, **extra)) as llm:
                return await quality_all(llm, items, settings, cache)
        finally:
            cache.close()

    return asyncio.run(go())


def is_keypoint_call(request: Received) -> bool:
    return any("## Key points" in m["content"] for m in request.json()["messages"])


def judge_script(scores: str = LINES, verdicts: str = "1: supported\n2: omitted") -> Any:
    def script(request: Received) -> Reply:
        return ok(verdicts if is_keypoint_call(request) else scores)

    return script


ITEMS = [
    QualityItem("a", "Why do rivers flood?", "## Intro\nRain [1].\n## References\n[1] http://x.org"),
    QualityItem("b", "Why is the sky blue?", "Rayleigh scattering.", ["Rayleigh scattering", "Ozone"]),
]


def test_scores_verdicts_cache_and_a_rerun_without_calls(tmp_path: Path) -> None:
    with StandinLLM(judge_script()) as srv:
        first = run_quality(srv.url, ITEMS, QualitySettings(concurrency=2), tmp_path)
        calls = len(srv.chat_requests())
        again = run_quality(srv.url, ITEMS, QualitySettings(concurrency=2), tmp_path)
        assert len(srv.chat_requests()) == calls == 3  # two reports, one set of key points; then none
        body = srv.chat_requests()[0].json()
    assert "response_format" not in body  # json_mode none: the judge writes lines
    assert [r.id for r in first] == ["a", "b"]
    for result in first:
        assert result.dimensions is not None and result.error is None and not result.cached
        assert {d: s.score for d, s in result.dimensions.items()} == SIX
        assert result.score_source == "text" and result.weighted_overall is None
        assert result.overall == pytest.approx(sum(SIX.values()) / 6)
    assert first[0].key_points is None and first[0].recall is None
    kp = first[1].key_points
    assert kp is not None and kp.verdicts == [SUPPORTED, OMITTED] and kp.recall == 0.5
    assert kp.contradiction == 0.0
    assert all(r.cached for r in again) and again[1].key_points is not None and again[1].key_points.cached
    assert [r.dimensions for r in again] == [r.dimensions for r in first]
    assert again[1].recall == 0.5


def test_schema_goes_to_endpoints_that_enforce_one(tmp_path: Path) -> None:
    with StandinLLM(judge_script(json.dumps(SIX), json.dumps({"1": "supported", "2": "supported"}))) as srv:
        mode = {"judge.json_mode": "json_schema"}
        [result] = run_quality(srv.url, ITEMS[1:], QualitySettings(), tmp_path, **mode)
        bodies = {is_keypoint_call(r): r.json() for r in srv.chat_requests()}
    schema = bodies[False]["response_format"]["json_schema"]["schema"]
    assert schema["required"] == DIMS
    assert schema["properties"]["depth"] == {"type": "integer", "minimum": 0, "maximum": 10}
    kp_schema = bodies[True]["response_format"]["json_schema"]["schema"]
    assert kp_schema["required"] == ["1", "2"]
    assert kp_schema["properties"]["2"]["enum"] == [SUPPORTED, OMITTED, CONTRADICTED]
    assert result.dimensions is not None and result.recall == 1.0


def test_an_unusable_reply_is_asked_again_strictly_once(tmp_path: Path) -> None:
    with StandinLLM() as srv:
        srv.push(ok("A fine report, I would say."), ok("```json\n" + json.dumps(SIX) + "\n```"))
        [result] = run_quality(srv.url, ITEMS[:1], QualitySettings(), tmp_path)
        reask = srv.chat_requests()[1].json()["messages"]
    assert result.attempts == 2 and result.error is None and result.dimensions is not None
    assert result.raw == ["A fine report, I would say."]
    assert reask[-2] == {"role": "assistant", "content": "A fine report, I would say."}
    assert "not usable: no score for Clarity" in reask[-1]["content"]
    assert "ONLY a JSON object" in reask[-1]["content"] and '"clarity": <0-10>' in reask[-1]["content"]


def test_failures_are_counted_never_zero_and_not_cached(tmp_path: Path) -> None:
    bad = judge_script(scores="no scores here", verdicts="I cannot tell.")
    with StandinLLM(bad) as srv:
        results = run_quality(srv.url, ITEMS, QualitySettings(), tmp_path)
        assert len(srv.chat_requests()) == 6  # each judgement asked twice
        run_quality(srv.url, ITEMS, QualitySettings(), tmp_path)
        assert len(srv.chat_requests()) == 12  # nothing was cached: asked again
    for result in results:
        assert result.dimensions is None and result.overall is None and result.score_source is None
        assert result.error is not None and result.error.startswith("malformed output: no score for Clarity")
        assert result.attempts == 2
    kp = results[1].key_points
    assert kp is not None and kp.verdicts is None and kp.recall is None
    assert kp.error is not None and "no verdict for key points 1, 2 of 2" in kp.error
    summary = summarize_quality(results)
    assert summary.scored == 0 and summary.failed == 2
    assert summary.overall is None and summary.dimensions == {}
    assert summary.key_points_failed == 1 and summary.key_point_recall is None


def test_an_endpoint_error_is_a_failure_with_its_reason(tmp_path: Path) -> None:
    with StandinLLM(lambda r: error(400, "context too long")) as srv:
        [result] = run_quality(srv.url, ITEMS[:1], QualitySettings(), tmp_path)
    assert result.dimensions is None and result.error is not None and result.error.startswith("endpoint:")
    assert "context too long" in result.error


# --- log-prob weighted scores through the stand-in -------------------------------------------------

L = math.log


def weighted_reply(alternatives: dict[str, float] | None, *, send: bool = True) -> Reply:
    """Six lines whose "Clarity" score token " 7" has the given alternatives; other tokens sure."""
    pieces = []
    for line in LINES.splitlines():
        name, _, score = line.partition(": ")
        sure: dict[str, float] | None = None
        pieces += [(name, sure), (":", sure), (" " + score, alternatives if name == "Clarity" else sure)]
        pieces.append(("\n", sure))
    pieces.pop()
    content = []
    for text, alts in pieces:
        top = [{"token": t, "logprob": L(p)} for t, p in (alts or {text: 1.0}).items()]
        entry = {"token": text, "logprob": top[0]["logprob"], "bytes": list(text.encode())}
        content.append({**entry, "top_logprobs": top})
    text = "".join(t for t, _ in pieces)
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
              "logprobs": {"content": content} if send else None}  # fmt: skip
    return raw(json.dumps({"id": "x", "object": "chat.completion", "model": "m", "choices": [choice]}))


def test_weighted_scores_from_top_logprobs(tmp_path: Path) -> None:
    alternatives = {" 7": 0.5, " 8": 0.3, " 6": 0.1, " Good": 0.1}
    with StandinLLM() as srv:
        srv.push(weighted_reply(alternatives))
        [result] = run_quality(srv.url, ITEMS[:1], QualitySettings(weighted=True, top_logprobs=4), tmp_path)
        body = srv.chat_requests()[0].json()
        # the same report unweighted is another cache entry: judged again, without log probs
        srv.push(weighted_reply(alternatives))
        [plain] = run_quality(srv.url, ITEMS[:1], QualitySettings(), tmp_path)
        assert "logprobs" not in srv.chat_requests()[1].json()
        [cached] = run_quality(srv.url, ITEMS[:1], QualitySettings(weighted=True, top_logprobs=4), tmp_path)
        assert len(srv.chat_requests()) == 2
    assert body["logprobs"] is True and body["top_logprobs"] == 4
    assert result.dimensions is not None
    clarity = result.dimensions["clarity"]
    assert clarity.score == 7 and clarity.weighted_score == pytest.approx(round(6.5 / 0.9, 4))
    assert clarity.source == "logprobs" and clarity.value == clarity.weighted_score
    # the other dimensions were certain: their weighted score is the written one
    assert all(result.dimensions[d].weighted_score == SIX[d] for d in DIMS[1:])
    assert result.score_source == "logprobs" and result.weighted_overall is not None
    assert plain.dimensions is not None and plain.score_source == "text"
    assert cached.cached and cached.dimensions == result.dimensions


def test_weighted_without_logprobs_from_the_endpoint_keeps_the_written_scores(tmp_path: Path) -> None:
    with StandinLLM() as srv:
        srv.push(weighted_reply(None, send=False))
        [result] = run_quality(srv.url, ITEMS[:1], QualitySettings(weighted=True), tmp_path)
    assert result.dimensions is not None and result.score_source == "text"
    assert all(s.weighted_score is None and s.value == s.score for s in result.dimensions.values())


def test_an_endpoint_refusing_logprobs_is_asked_without_them_from_then_on(tmp_path: Path) -> None:
    def script(request: Received) -> Reply:
        if request.json().get("logprobs"):
            return error(400, "logprobs: not supported by this server; leave it out")
        return ok(LINES)

    items = [QualityItem(str(i), f"Q{i}?", f"Report {i}.") for i in range(3)]
    with StandinLLM(script) as srv:
        results = run_quality(srv.url, items, QualitySettings(weighted=True, concurrency=1), tmp_path)
        asked = [bool(r.json().get("logprobs")) for r in srv.chat_requests()]
    assert asked == [True, False, False, False]
    assert all(r.dimensions is not None and r.score_source == "text" for r in results)


# --- the summary -----------------------------------------------------------------------------------


def test_summary_means_over_scored_reports_only() -> None:
    def dims(base: float, weighted: float | None = None) -> dict[str, DimensionScore]:
        extra = [None if weighted is None else weighted + i for i in range(6)]
        return {d: DimensionScore(base + i, extra[i]) for i, d in enumerate(DIMS)}

    results = [
        QualityResult("a", dims(2), KeyPointResult(("p", "q"), [SUPPORTED, CONTRADICTED])),
        QualityResult("b", dims(4, 3.5), KeyPointResult(("p", "q", "r", "s"), [SUPPORTED] * 3 + [OMITTED])),
        QualityResult("c", None, KeyPointResult(("p",), None, error="x"), error="malformed output: x"),
    ]
    summary = summarize_quality(results)
    assert summary.scored == 2 and summary.failed == 1
    assert summary.dimensions["clarity"] == 3.0 and summary.dimensions["insightfulness"] == 8.0
    assert summary.overall == pytest.approx(5.5) and summary.normalized == pytest.approx(55.0)
    assert summary.weighted_dimensions["clarity"] == 3.5 and summary.weighted == 1
    assert summary.weighted_overall == pytest.approx(6.0)
    assert summary.key_point_recall == pytest.approx((0.5 + 0.75) / 2)
    assert summary.key_point_contradiction == pytest.approx((0.5 + 0.0) / 2)
    assert summary.key_points_scored == 2 and summary.key_points_failed == 1
    lines = summary.lines()
    assert "Clarity: 3.00" in lines and "Overall: 5.50 (normalized 55.0/100)" in lines
    assert "Scored: 2, failed: 1" in lines and "Key-point recall: 0.6250" in lines


def test_prompt_cuts_the_report_and_lists_the_lines_to_write() -> None:
    [system, user] = build_messages("", "x" * 500, 300)
    assert system["role"] == "system" and "(not given)" in user["content"]
    assert "x" * 300 in user["content"] and "x" * 301 not in user["content"]
    assert user["content"].endswith("\n".join(f"{d.capitalize()}: <0-10>" for d in DIMS))


# --- through a real model --------------------------------------------------------------------------


def test_quality_through_the_embedded_model(embedded_server: tuple[str, str], tmp_path: Path) -> None:
    """The embedded SmolLM2 behind `ores serve`, the schema enforced while decoding and top log
    probs asked for: six integer scores, each with a probability-weighted score read from the
    server's log probs, key-point verdicts for both points, and the same item again from the cache."""
    base_url, model_name = embedded_server
    overrides = {"judge.base_url": base_url, "judge.model": model_name, "judge.api_key_env": "",
                 "judge.temperature": 0.0, "judge.max_tokens": 120, "judge.json_mode": "json_schema"}  # fmt: skip
    item = QualityItem(
        "real",
        "Why is the sky blue?",
        "## Introduction\nSunlight scatters off air molecules; blue light scatters most (Rayleigh "
        "scattering) [1].\n\n## Conclusion\nThe sky looks blue.\n\n## References\n[1] http://example.org/sky\n",
        [
            "Rayleigh scattering makes short wavelengths scatter most",
            "The ocean reflects its colour onto the sky",
        ],
    )
    settings = QualitySettings(max_chars=2000, concurrency=2, weighted=True, top_logprobs=20)

    async def go() -> tuple[list[QualityResult], list[QualityResult], int]:
        cache = JudgeCache(tmp_path / "judge.sqlite")
        try:
            async with LLMClient(load_config(None, overrides, require=["judge"])) as llm:
                first = await quality_all(llm, [item], settings, cache)
                calls = llm.totals.calls
                again = await quality_all(llm, [item], settings, cache)
                assert llm.totals.calls == calls  # from the cache: no call
                return first, again, calls
        finally:
            cache.close()

    [result], [again], calls = asyncio.run(go())
    assert result.error is None and result.dimensions is not None, (result.error, result.raw)
    assert 2 <= calls <= 4
    for dim, score in result.dimensions.items():
        assert score.score == int(score.score) and 0 <= score.score <= 10, dim
        assert score.weighted_score is not None, f"{dim}: no weighted score from the server's log probs"
        assert 0 <= score.weighted_score <= 10
    assert result.score_source == "logprobs"
    kp = result.key_points
    assert kp is not None and kp.error is None and kp.verdicts is not None and len(kp.verdicts) == 2
    assert kp.recall in (0.0, 0.5, 1.0)
    assert again.cached and again.dimensions == result.dimensions
    assert again.key_points is not None and again.key_points.verdicts == kp.verdicts
