"""Canonical rendering and the round trip parse(render(t)) == t."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings

from oresearch_cli.trace import (
    CrawlPage,
    Observation,
    Report,
    Subtask,
    SubtaskList,
    Think,
    Trace,
    WebSearch,
    observation_block,
    parse,
    render,
    render_search,
)
from test_trace_strategies import traces

FIXTURE = Path(__file__).parent / "fixtures" / "trace_example.txt"


def test_fixture_renders_back_byte_for_byte() -> None:
    text = FIXTURE.read_text(encoding="utf-8")
    trace = parse(text)
    assert render(trace) == text
    assert parse(render(trace)) == trace


def test_messy_text_renders_canonically() -> None:
    messy = (
        "< Subtask_List >1. a</subtask_list><subtask>a</subtask><think>t<web_search>query=x|y&num=3</web_search>"
        "<observation>o</observation><subtask_answer>ans</subtask_answer></subtask_answer>done</suggested_answer>"
    )
    assert render(parse(messy)) == (
        "<subtask_list>\n1. a\n</subtask_list>\n\n"
        "<subtask>\na\n</subtask>\n<think>\nt\n</think>\n<web_search>x | y&serp_num=3</web_search>\n"
        "<observation>\no\n</observation>\n<subtask_answer>\nans\n</subtask_answer>\n\n"
        "<suggested_answer>\ndone\n</suggested_answer>\n"
    )


def test_built_trace_renders_in_the_fixture_layout() -> None:
    trace = Trace(
        preamble=[SubtaskList("1. q")],
        subtasks=[
            Subtask(
                "q", [Think("t"), WebSearch(("a", "b"), 5), Observation("o"), CrawlPage(("https://x.org",))]
            )
        ],
        report=Report("r"),
    )
    assert render(trace) == (
        "<subtask_list>\n1. q\n</subtask_list>\n\n<subtask>\nq\n</subtask>\n<think>\nt\n</think>\n"
        "<web_search>a | b&serp_num=5</web_search>\n<observation>\no\n</observation>\n"
        "<crawl_page>https://x.org</crawl_page>\n\n<suggested_answer>\nr\n</suggested_answer>\n"
    )


def test_search_rendering_is_canonical() -> None:
    assert render_search(["q1", "q2"], 7) == "<web_search>q1 | q2&serp_num=7</web_search>"


def test_observation_block_is_what_render_writes() -> None:
    assert observation_block("o") in render(Trace(preamble=[WebSearch(("q",)), Observation("o")]))


def test_empty_trace_renders_empty() -> None:
    assert render(Trace()) == ""
    assert parse("") == Trace()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces())
def test_round_trip(trace: Trace) -> None:
    text = render(trace)
    parsed = parse(text)
    assert parsed == trace
    assert render(parsed) == text
    assert {n.code for n in parsed.notes} <= {"content-after-report", "repeated-report"}
