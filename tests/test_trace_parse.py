"""Lenient parsing: the canonical fixture, the messy forms real models write, and never raising."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oresearch_cli.trace import (
    CrawlPage,
    Observation,
    Plan,
    SubtaskAnswer,
    Text,
    Think,
    WebSearch,
    escape_tags,
    observation_block,
    parse,
    parse_search,
    parse_urls,
    pending_tool_call,
    render,
)
from oresearch_cli.trace.tags import contains_tag
from test_trace_strategies import soup

FIXTURE = Path(__file__).parent / "fixtures" / "trace_example.txt"


@pytest.fixture(scope="module")
def example() -> str:
    return FIXTURE.read_text(encoding="utf-8")


def codes(trace) -> list[str]:
    return [n.code for n in trace.notes]


def test_fixture_parses_into_subtasks_and_steps(example: str) -> None:
    trace = parse(example)
    assert trace.notes == []
    assert trace.subtask_list is not None
    assert len(trace.subtask_list.items) == 2
    assert [s.question for s in trace.subtasks] == [
        "What do the light-dependent reactions of photosynthesis produce, and where do they happen?",
        "How does the Calvin cycle use those products to fix carbon dioxide?",
    ]
    kinds = [
        "think",
        "plan",
        "web_search",
        "observation",
        "think",
        "crawl_page",
        "observation",
        "subtask_answer",
    ]
    assert [s.kind for s in trace.subtasks[0].steps] == kinds
    assert [s.kind for s in trace.subtasks[1].steps] == kinds
    search = trace.subtasks[0].steps[2]
    assert search == WebSearch(("light-dependent reactions products", "thylakoid membrane photosynthesis"), 4)
    assert trace.subtasks[0].steps[5] == CrawlPage(
        ("https://en.wikipedia.org/wiki/Light-dependent_reactions",)
    )
    assert trace.report is not None and trace.report.text.startswith("## Introduction")
    assert trace.subtasks[1].answer is not None and trace.subtasks[1].answer.endswith("[3].")


def test_offsets_point_at_each_step(example: str) -> None:
    trace = parse(example)
    for _, step in trace.steps():
        assert example[step.offset :].startswith(f"<{step.kind}>")
    for subtask in trace.subtasks:
        assert example[subtask.offset :].startswith("<subtask>")
    assert trace.report is not None
    assert example[trace.report.text_offset :].startswith("## Introduction")


@pytest.mark.parametrize(
    ("content", "queries", "count"),
    [
        ("a | b&serp_num=10", ("a", "b"), 10),
        ("query=a | b | c&num=10", ("a", "b", "c"), 10),
        ("query=a|b", ("a", "b"), 10),
        ("just one query", ("just one query",), 10),
        ("a | b & serp_num = 4 ", ("a", "b"), 4),
        ("\"quoted a\" | 'quoted b'&serp_num=3", ("quoted a", "quoted b"), 3),
        ("first\nsecond&num=5", ("first", "second"), 5),
        ('{"query": ["a", "b"], "num": 7}', ("a", "b"), 7),
        ("AT&T revenue 2024", ("AT&T revenue 2024",), 10),
        ("", (), 10),
    ],
)
def test_search_forms(content: str, queries: tuple[str, ...], count: int) -> None:
    assert parse_search(content) == (queries, count)
    trace = parse(f"<web_search>{content}</web_search>")
    assert trace.preamble == [WebSearch(queries, count)]


@pytest.mark.parametrize(
    ("content", "urls"),
    [
        ("https://a.org", ("https://a.org",)),
        ("https://a.org | https://b.org", ("https://a.org", "https://b.org")),
        ("https://a.org|https://b.org", ("https://a.org", "https://b.org")),
        ("https://a.org https://b.org\nhttps://c.org", ("https://a.org", "https://b.org", "https://c.org")),
        ("url=https://a.org", ("https://a.org",)),
        ('["https://a.org", "https://b.org"]', ("https://a.org", "https://b.org")),
        ("<https://a.org>, https://b.org", ("https://a.org", "https://b.org")),
    ],
)
def test_crawl_forms(content: str, urls: tuple[str, ...]) -> None:
    assert parse_urls(content) == urls


def test_paper_form_query_equals_pipe_count() -> None:
    # The released model writes `query=a | b | c&num=10`; it means the same call as the canonical form.
    messy = parse("<web_search>query=a | b | c&num=10</web_search>")
    canonical = parse("<web_search>a | b | c&serp_num=10</web_search>")
    assert messy == canonical
    assert render(messy) == "<web_search>a | b | c&serp_num=10</web_search>\n"


def test_unclosed_tag_is_closed_by_the_next_tag() -> None:
    trace = parse("<think>reasoning<web_search>q</web_search>")
    assert trace.preamble == [Think("reasoning"), WebSearch(("q",))]
    assert codes(trace) == ["unclosed-tag"]
    assert trace.notes[0].offset == 0


def test_unclosed_report_runs_to_the_end() -> None:
    trace = parse("<suggested_answer>\n## Introduction\ntruncated")
    assert trace.report is not None and trace.report.text == "## Introduction\ntruncated"
    assert codes(trace) == ["unclosed-tag"]


def test_closer_after_an_observation_does_not_close_an_earlier_think() -> None:
    # The environment answered the tool call, so the think must have ended before it.
    text = "<think>a<web_search>q</web_search>\n<observation>o</observation></think>"
    trace = parse(text)
    assert trace.preamble == [Think("a"), WebSearch(("q",)), Observation("o")]
    assert codes(trace) == ["unclosed-tag", "orphan-closer"]


def test_missing_suggested_answer_opener_reads_the_text_before_as_the_report() -> None:
    text = "<subtask_answer>A [1]</subtask_answer>\n## Introduction\nintro\n## References\n[1]. https://x.org - X\n</suggested_answer>"
    trace = parse(text)
    assert trace.preamble == [SubtaskAnswer("A [1]")]
    assert trace.report is not None
    assert trace.report.text.startswith("## Introduction") and trace.report.text.endswith("- X")
    assert codes(trace) == ["missing-opener"]
    assert trace.notes[0].offset == text.index("\n## Introduction")


def test_subtask_answer_closed_several_times_is_one_answer() -> None:
    text = (
        "<subtask_answer>\nfirst part\n</subtask_answer>\nsecond part\n</subtask_answer>\n</subtask_answer>"
    )
    trace = parse(text)
    assert trace.preamble == [SubtaskAnswer("first part\n\nsecond part")]
    assert codes(trace) == ["repeated-closer", "repeated-closer"]
    assert [n.offset for n in trace.notes] == [
        text.index("</subtask_answer>\n</sub"),
        text.rindex("</subtask_answer>"),
    ]


@pytest.mark.parametrize("opener", ["< Think >", "<THINK>", "<think >", "< think>"])
def test_tag_spelling_variants(opener: str) -> None:
    trace = parse(f"{opener}x</Think><subtask-answer>y</subtask answer>")
    assert trace.preamble == [Think("x"), SubtaskAnswer("y")]
    assert set(codes(trace)) == {"tag-spelling"}


def test_tag_inside_think_is_kept_as_text_and_noted() -> None:
    trace = parse("<think>I will call <web_search>x</web_search> next</think>")
    assert trace.preamble == [Think("I will call <web_search>x</web_search> next")]
    assert codes(trace) == ["tag-in-think"]


def test_observation_may_quote_tags() -> None:
    # A crawled page about traces can contain tag names; only </observation> ends it.
    trace = parse("<crawl_page>https://a.org</crawl_page>\n<observation>see <think> and <plan></observation>")
    assert trace.preamble[1] == Observation("see <think> and <plan>")
    assert trace.notes == []


def test_subtask_wrapping_its_steps_keeps_the_question() -> None:
    text = (
        "<subtask>Q?\n<think>t</think>\n<web_search>q</web_search>\n<observation>o</observation>\n</subtask>"
    )
    trace = parse(text)
    assert trace.subtasks[0].question == "Q?"
    assert [s.kind for s in trace.subtasks[0].steps] == ["think", "web_search", "observation"]
    assert codes(trace) == ["unclosed-tag", "orphan-closer"]


def test_text_outside_tags_is_kept() -> None:
    trace = parse("hello\n<think>t</think>\nstray words\n<plan>p</plan>")
    assert trace.preamble == [Text("hello"), Think("t"), Text("stray words"), Plan("p")]


def test_trace_without_subtasks_keeps_steps_in_the_preamble() -> None:
    trace = parse(
        "<think>t</think><web_search>q</web_search><observation>o</observation><suggested_answer>r</suggested_answer>"
    )
    assert trace.subtasks == []
    assert [s.kind for s in trace.preamble] == ["think", "web_search", "observation"]


def test_steps_after_the_report_are_kept_and_noted() -> None:
    trace = parse("<suggested_answer>r</suggested_answer>\n<think>more</think>\n<subtask>late</subtask>")
    assert trace.trailer == [Think("more")]
    assert trace.subtasks[0].question == "late"
    assert codes(trace) == ["content-after-report", "content-after-report"]


def test_second_report_supersedes_the_first() -> None:
    trace = parse("<suggested_answer>draft</suggested_answer><suggested_answer>final</suggested_answer>")
    assert trace.report is not None and trace.report.text == "final"
    assert [r.text for r in trace.superseded_reports] == ["draft"]
    assert codes(trace) == ["repeated-report"]


def test_pending_tool_call_is_the_unanswered_last_call() -> None:
    assert pending_tool_call("<think>t</think><web_search>a | b&serp_num=5</web_search>") == WebSearch(
        ("a", "b"), 5
    )
    # vLLM drops the stop string: an unclosed call at the end still counts.
    assert pending_tool_call("<think>t</think><crawl_page>https://a.org") == CrawlPage(("https://a.org",))
    assert pending_tool_call("<web_search>a</web_search>\n<observation>o</observation>") is None
    assert pending_tool_call("<suggested_answer>done</suggested_answer>") is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "<",
        "</",
        "<<think>>",
        "</think>",
        "<think>",
        "\x00",
        "<web_search>&serp_num=99999999999</web_search>",
    ],
)
def test_edge_inputs_do_not_raise(value: str) -> None:
    render(parse(value))


def test_non_string_input_does_not_raise() -> None:
    assert parse(None).preamble == []  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), soup))
def test_parse_never_raises_and_render_is_a_fixed_point(text: str) -> None:
    trace = parse(text)
    rendered = render(trace)
    again = parse(rendered)
    assert again == trace
    assert render(again) == rendered


def test_subtask_list_items_inline_or_per_line() -> None:
    assert parse("<subtask_list> 1. What is X? 2. How does Y work? </subtask_list>").subtask_list.items == [
        "What is X?",
        "How does Y work?",
    ]
    assert parse("<subtask_list>\n- a\n- b\n</subtask_list>").subtask_list.items == ["a", "b"]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), soup))
def test_escaped_tool_output_stays_one_observation(page: str) -> None:
    safe = escape_tags(page)
    assert not contains_tag(safe)
    trace = parse(f"<crawl_page>https://a.org</crawl_page>{observation_block(safe)}")
    assert [s.kind for s in trace.preamble] == ["crawl_page", "observation"]
    assert trace.notes == []


def test_escape_tags_covers_lenient_spellings() -> None:
    assert escape_tags("a </ Observation > b <THINK>") == "a &lt;/ Observation &gt; b &lt;THINK&gt;"
