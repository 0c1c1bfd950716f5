"""Validation of a trace written without `<subtask>` blocks (a flat rollout): every step sits in the
preamble, and the rules still apply to it as to one group: tool-call bounds counted over the
preamble, the order rules (think first, every call answered, no observation without a call), the
tool-call contents, and the report's sections and citations against what the preamble observed.
Each rule is counted once: the preamble is one group, not checked twice."""

from __future__ import annotations

from collections import Counter

import pytest

from oresearch_cli.trace import Bounds, parse, validate

LIGHT = "https://en.wikipedia.org/wiki/Light-dependent_reactions"
CALVIN = "https://en.wikipedia.org/wiki/Calvin_cycle"
STROMA = "https://en.wikipedia.org/wiki/Stroma_(fluid)"

SEARCH = f"""<think>
I need where the light reactions happen and what the Calvin cycle does with their products.
</think>
<web_search>light-dependent reactions | Calvin cycle&serp_num=3</web_search>
<observation>
1. [Light-dependent reactions]({LIGHT})
The light-dependent reactions make ATP and NADPH on the thylakoid membranes.
2. [Stroma]({STROMA})
The stroma is the fluid around the thylakoids.
</observation>
"""
CRAWL = f"""<think>
The Calvin cycle page should say how ATP and NADPH are used.
</think>
<crawl_page>{CALVIN}</crawl_page>
<observation>
Calvin cycle
In the stroma RuBisCO fixes carbon dioxide; ATP and NADPH reduce the product to sugar.
</observation>
"""
REPORT = f"""<suggested_answer>
## Introduction
Photosynthesis runs in two linked stages [1].

## Body
The light reactions make ATP and NADPH on the thylakoid membranes [1], and the Calvin cycle uses
them in the stroma to fix carbon dioxide into sugar [2].

## Conclusion
Light energy becomes chemical energy through both stages working together [1][2].

## References
[1]. {LIGHT} - Light-dependent reactions
[2]. {CALVIN} - Calvin cycle
</suggested_answer>
"""
FLAT = SEARCH + CRAWL + REPORT  # two tool calls, no <subtask_list>, no <subtask>
STRUCTURE = {"missing-subtask-list", "no-subtasks"}  # what a flat trace is always told


def _extra_calls(n: int) -> str:
    return "".join(
        f"<think>\nstep {i}\n</think>\n<web_search>query {i}&serp_num=1</web_search>\n"
        f"<observation>\nresult {i}\n</observation>\n"
        for i in range(n)
    )


def _codes(text: str, bounds: Bounds | None = None) -> Counter[str]:
    return Counter(p.code for p in validate(text, bounds))


def test_the_flat_trace_is_all_preamble() -> None:
    trace = parse(FLAT)
    assert trace.subtasks == [] and len(trace.tool_calls) == 2 and trace.report is not None


def test_a_well_formed_flat_trace_has_only_the_structure_errors() -> None:
    # Two calls meet the default minimum: counting them as 0 (or skipping them) would add problems.
    assert set(_codes(FLAT)) == STRUCTURE


def test_too_few_tool_calls_counted_over_the_preamble() -> None:
    problems = [p for p in validate(SEARCH + REPORT) if p.code == "tool-calls-below-min"]
    assert len(problems) == 1
    assert problems[0].subtask is None
    assert "makes 1 tool calls" in problems[0].message
    assert problems[0].offset == SEARCH.index("<web_search>")


def test_too_many_tool_calls_counted_over_the_preamble() -> None:
    text = SEARCH + CRAWL + _extra_calls(7) + REPORT  # 9 calls, over the maximum of 8
    problems = [p for p in validate(text) if p.code == "tool-calls-above-max"]
    assert len(problems) == 1
    assert "makes 9 tool calls" in problems[0].message
    ninth = parse(text).tool_calls[8]
    assert problems[0].offset == ninth.offset
    assert "tool-calls-above-max" not in _codes(SEARCH + CRAWL + _extra_calls(6) + REPORT)  # 8 is fine


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        (Bounds(min_tool_calls=3), "tool-calls-below-min"),
        (Bounds(min_tool_calls=1, max_tool_calls=1), "tool-calls-above-max"),
        (Bounds(min_tool_calls=2, max_tool_calls=2), None),
    ],
)
def test_bounds_apply_to_a_flat_trace(bounds: Bounds, expected: str | None) -> None:
    found = set(_codes(FLAT, bounds)) - STRUCTURE
    assert found == ({expected} if expected else set())


def test_an_observation_must_follow_a_tool_call_in_the_preamble() -> None:
    made_up = "<observation>\nmade up by the model\n</observation>\n"
    text = SEARCH + made_up + CRAWL + REPORT  # an observation right after an observation
    problems = [p for p in validate(text) if p.code == "observation-without-tool-call"]
    assert len(problems) == 1
    assert problems[0].offset == text.index(made_up)
    assert problems[0].subtask is None


def test_a_tool_call_must_be_answered_in_the_preamble() -> None:
    unanswered = CRAWL[: CRAWL.index("<observation>")]
    problems = [
        p for p in validate(SEARCH + unanswered + REPORT) if p.code == "tool-call-without-observation"
    ]
    assert len(problems) == 1
    assert problems[0].offset == len(SEARCH) + unanswered.index("<crawl_page>")


def test_think_before_action_in_the_preamble() -> None:
    no_think = SEARCH.replace(SEARCH[: SEARCH.index("<web_search>")], "", 1)
    assert _codes(no_think + CRAWL + REPORT)["think-before-action"] == 1


def test_tool_call_contents_are_checked_in_the_preamble() -> None:
    empty = FLAT.replace(f"<crawl_page>{CALVIN}</crawl_page>", "<crawl_page></crawl_page>")
    assert _codes(empty)["empty-tool-call"] == 1
    bad_url = FLAT.replace(f"<crawl_page>{CALVIN}", "<crawl_page>calvin-cycle-page")
    assert _codes(bad_url)["invalid-url"] == 1


def test_report_references_are_checked_against_preamble_observations() -> None:
    # Both reference URLs were observed in the preamble (one in a search result, one crawled).
    assert "reference-url-not-observed" not in _codes(FLAT)
    made_up = FLAT.replace(f"[2]. {CALVIN}", "[2]. https://made.up/calvin")
    problems = [p for p in validate(made_up) if p.code == "reference-url-not-observed"]
    assert len(problems) == 1 and "https://made.up/calvin" in problems[0].message


def test_report_sections_and_citations_in_a_flat_trace() -> None:
    no_conclusion = FLAT.replace("## Conclusion\n", "", 1)
    assert _codes(no_conclusion)["report-missing-section"] == 1
    unresolved = FLAT.replace("two linked stages [1]", "two linked stages [7]", 1)
    assert _codes(unresolved)["citation-unresolved"] == 1
    assert "missing-report" in _codes(SEARCH + CRAWL)
