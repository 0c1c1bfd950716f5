"""Each validation rule: the fixture passes it, a small change to the fixture breaks it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from oresearch_cli.trace import CODES, Bounds, is_valid, parse, validate, validate_report

FIXTURE = Path(__file__).parent / "fixtures" / "trace_example.txt"
DRB = Path(__file__).parent.parent / "data" / "deepresearch_bench" / "sample_reports_claude-3-7-sonnet.jsonl"
EXAMPLE = FIXTURE.read_text(encoding="utf-8")
SUBTASK_2 = EXAMPLE.index("<subtask>\nHow does")
REPORT = EXAMPLE.index("<suggested_answer>")


def codes(text: str, bounds: Bounds | None = None, **kwargs: bool) -> set[str]:
    return {p.code for p in validate(text, bounds, **kwargs)}


def first_block(text: str, tag: str, start: int = 0) -> tuple[int, int]:
    begin = text.index(f"<{tag}>", start)
    return begin, text.index(f"</{tag}>", begin) + len(f"</{tag}>")


def cut(text: str, tag: str, start: int = 0) -> str:
    begin, end = first_block(text, tag, start)
    return text[:begin] + text[end:].removeprefix("\n")


def in_report(old: str, new: str) -> Callable[[str], str]:
    return lambda t: t[:REPORT] + t[REPORT:].replace(old, new, 1)


# code -> a change to the valid fixture that must raise exactly that problem (among possibly others)
BREAKERS: dict[str, Callable[[str], str]] = {
    "unclosed-tag": lambda t: t.replace("</think>", "", 1),
    "missing-opener": lambda t: t.replace("<suggested_answer>", "", 1),
    "repeated-closer": lambda t: t.replace(
        "</subtask_answer>", "</subtask_answer>\nmore\n</subtask_answer>", 1
    ),
    "orphan-closer": lambda t: t.replace("</plan>\n", "</plan>\n</think>\n", 1),
    "tag-in-think": lambda t: t.replace("An overview article", "An <plan> overview article", 1),
    "nested-tag": lambda t: t.replace("2. Read the most", "2. <think> Read the most", 1),
    "tag-spelling": lambda t: t.replace("<think>", "< Think >", 1),
    "repeated-report": lambda t: t[:REPORT] + "<suggested_answer>\ndraft\n</suggested_answer>\n" + t[REPORT:],
    "content-after-report": lambda t: t + "<think>\nafterthought\n</think>\n",
    "missing-subtask-list": lambda t: cut(t, "subtask_list"),
    "no-subtasks": lambda t: re.sub(r"<subtask>\n.*?\n</subtask>\n", "", t),
    "subtask-count-mismatch": lambda t: t.replace(
        "2. How does the Calvin", "2. a\n3. How does the Calvin", 1
    ),
    "think-before-action": lambda t: cut(t, "think"),
    "tool-call-without-observation": lambda t: cut(t, "observation"),
    "observation-without-tool-call": lambda t: t.replace(
        "</plan>\n", "</plan>\n<observation>\nmade up\n</observation>\n", 1
    ),
    "tool-calls-above-max": lambda t: (
        t[:SUBTASK_2] + t[SUBTASK_2:].replace("<subtask_answer>", _calls(8) + "<subtask_answer>", 1)
    ),
    "tool-calls-below-min": lambda t: cut(
        cut(t, "crawl_page", SUBTASK_2), "observation", t.index("<think>\nThe snippet")
    ),
    "empty-tool-call": lambda t: t.replace(
        "<crawl_page>https://en.wikipedia.org/wiki/Calvin_cycle</crawl_page>", "<crawl_page></crawl_page>"
    ),
    "invalid-url": lambda t: t.replace(
        "<crawl_page>https://en.wikipedia.org/wiki/Calvin_cycle", "<crawl_page>calvin cycle page"
    ),
    "missing-subtask-answer": lambda t: cut(t, "subtask_answer"),
    "empty-step": lambda t: t.replace("Now the second half: how ATP and NADPH drive carbon fixation.", "", 1),
    "text-outside-tags": lambda t: t.replace("</plan>\n", "</plan>\nsome stray words\n", 1),
    "missing-report": lambda t: t[:REPORT],
    "report-missing-section": in_report("## Conclusion\n", ""),
    "citation-unresolved": in_report("in two linked stages [2]", "in two linked stages [2][9]"),
    "citation-malformed": in_report("in two linked stages [2]", "in two linked stages [2][7-3]"),
    "reference-url-not-observed": in_report(
        "https://en.wikipedia.org/wiki/Thylakoid - ", "https://made.up/page - "
    ),
    "reference-without-url": in_report(
        "[4]. https://en.wikipedia.org/wiki/Thylakoid - Thylakoid", "[4]. Thylakoid, a textbook"
    ),
    "reference-duplicate": in_report(
        "[4]. https://en.wikipedia.org/wiki/Thylakoid", "[3]. https://en.wikipedia.org/wiki/Thylakoid"
    ),
    "reference-uncited": in_report("[1][4]", "[1]"),
    "report-no-citations": lambda t: (
        re.sub(r"\[\d\]", "", t[: t.index("## References")]) + t[t.index("## References") :]
    ),
}


def _calls(n: int) -> str:
    return "".join(
        f"<think>\nmore\n</think>\n<web_search>q{i}&serp_num=1</web_search>\n<observation>\nresult {i}\n</observation>\n"
        for i in range(n)
    )


def test_fixture_has_no_problems() -> None:
    assert validate(EXAMPLE) == []
    assert validate(parse(EXAMPLE)) == []


def test_every_code_has_a_breaking_case() -> None:
    assert set(BREAKERS) == set(CODES)


@pytest.mark.parametrize("code", sorted(BREAKERS))
def test_rule_catches_its_case(code: str) -> None:
    broken = BREAKERS[code](EXAMPLE)
    assert broken != EXAMPLE
    assert code in codes(broken)
    assert code not in codes(EXAMPLE)


@pytest.mark.parametrize("code", sorted(BREAKERS))
def test_problems_have_severity_message_and_position(code: str) -> None:
    for problem in validate(BREAKERS[code](EXAMPLE)):
        assert problem.severity == CODES[problem.code][0]
        assert problem.message
        if problem.offset is not None:
            assert problem.line == BREAKERS[code](EXAMPLE).count("\n", 0, problem.offset) + 1


def test_think_before_action_names_line_and_subtask() -> None:
    broken = cut(EXAMPLE, "think", SUBTASK_2)
    # One missing think is one problem, at the plan, not one more at the search the plan leads to.
    [problem] = [p for p in validate(broken) if p.code == "think-before-action"]
    assert problem.subtask == 2
    assert problem.severity == "error"
    assert broken.splitlines()[problem.line - 1] == "<plan>"
    assert problem.to_dict()["code"] == "think-before-action"


def test_think_is_needed_again_after_each_observation() -> None:
    broken = EXAMPLE.replace("<think>\nThe first result answers", "<plan>\nThe first result answers", 1)
    broken = broken.replace("oxygen released.\n</think>", "oxygen released.\n</plan>", 1)
    [problem] = [p for p in validate(broken) if p.code == "think-before-action"]
    assert problem.subtask == 1


def test_bounds_are_configurable() -> None:
    # Each fixture subtask makes 2 calls.
    assert "tool-calls-below-min" in codes(EXAMPLE, Bounds(min_tool_calls=3))
    assert "tool-calls-above-max" in codes(EXAMPLE, Bounds(max_tool_calls=1))
    assert codes(EXAMPLE, Bounds(min_tool_calls=2, max_tool_calls=2)) == set()
    below = [p for p in validate(EXAMPLE, Bounds(min_tool_calls=3)) if p.code == "tool-calls-below-min"]
    assert [p.subtask for p in below] == [1, 2]


def test_crawled_pages_count_as_observed() -> None:
    # The crawl's observation need not repeat its URL for the reference to be grounded.
    text = EXAMPLE.replace(
        "1. [Calvin cycle](https://en.wikipedia.org/wiki/Calvin_cycle)\n", "1. Calvin cycle\n"
    )
    assert "reference-url-not-observed" not in codes(text)


def test_observed_url_match_ignores_spelling() -> None:
    text = EXAMPLE[:REPORT] + EXAMPLE[REPORT:].replace(
        "https://en.wikipedia.org/wiki/Thylakoid", "http://www.en.wikipedia.org/wiki/Thylakoid/"
    )
    assert "reference-url-not-observed" not in codes(text)


def test_is_valid_ignores_warnings() -> None:
    warned = validate(BREAKERS["text-outside-tags"](EXAMPLE))
    assert warned and is_valid(warned)
    assert not is_valid(validate(BREAKERS["missing-report"](EXAMPLE)))


ZH_REPORT = """# 报告标题

## 一、引言
背景介绍 [1]。

## 二、主要发现
内容【2】，以及更多 [1, 2]。

## 三、结论与展望
总结 [1-2]。

参考文献：
[1] https://a.example.org/x - 甲
[2] https://b.example.org/y - 乙
"""


@pytest.mark.parametrize(
    ("intro", "body", "conclusion", "references"),
    [
        ("## Introduction", "## Body", "## Conclusion", "## References"),
        ("## 1. Introduction", "## 2. Findings", "## 3. Conclusions", "## Sources"),
        ("## I. Executive Summary", "## II. Market", "## VI. Summary and Outlook", "**References**"),
        ("## 简介", "## 一、现状", "## 总结", "## 参考资料"),
        ("## 概述", "## 正文", "## 结论", "引用："),
        ("# Overview", "# Analysis", "# Final Thoughts", "# Bibliography"),
    ],
)
def test_section_heading_variants(intro: str, body: str, conclusion: str, references: str) -> None:
    report = f"{intro}\nintro [1]\n\n{body}\nbody [1]\n\n{conclusion}\nend [1]\n\n{references}\n[1]. https://a.example.org - A\n"
    assert validate_report(report) == []


def test_zh_report_is_complete() -> None:
    assert validate_report(ZH_REPORT) == []


@pytest.mark.parametrize(
    ("remove", "missing"),
    [("## 一、引言\n", "Introduction"), ("## 二、主要发现\n", "Body"), ("## 三、结论与展望\n", "Conclusion")],
)
def test_zh_report_missing_section(remove: str, missing: str) -> None:
    problems = [
        p for p in validate_report(ZH_REPORT.replace(remove, "")) if p.code == "report-missing-section"
    ]
    assert [missing in p.message for p in problems] == [True]


def test_heading_that_only_mentions_sources_is_body() -> None:
    report = "## Introduction\na [1]\n## Sources of Funding\nb [1]\n## Conclusion\nc [1]\n## References\n[1] https://a.org - A\n"
    assert validate_report(report) == []


def test_report_only_mode_skips_trace_rules() -> None:
    assert validate(ZH_REPORT, report_only=True) == []
    assert "missing-subtask-list" in codes(ZH_REPORT)
    # A trace validated report-only: only its report is checked, without the observed-URL rule.
    broken = BREAKERS["reference-url-not-observed"](cut(EXAMPLE, "think"))
    assert codes(broken, report_only=True) == set()


def test_drb_articles_report_only() -> None:
    articles = [json.loads(line)["article"] for line in DRB.read_text(encoding="utf-8").splitlines()]
    found = [{p.code for p in validate(a, report_only=True)} for a in articles]
    # Claude's DRB reports cite consistently; some lack an introduction and one cites chunk ids like [41-23].
    allowed = {"report-missing-section", "citation-malformed", "citation-unresolved"}
    assert all(codes_ <= allowed for codes_ in found)
    assert sum(not codes_ for codes_ in found) >= 6
