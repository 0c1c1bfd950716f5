"""Training views of a trace (segments, messages) and its stats."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from oresearch_cli.trace import (
    STOP_STRINGS,
    Trace,
    TraceStats,
    parse,
    render,
    to_messages,
    to_segments,
    total_stats,
    trace_stats,
    trainable_spans,
)
from test_trace_strategies import traces

FIXTURE = Path(__file__).parent / "fixtures" / "trace_example.txt"
DRB = Path(__file__).parent.parent / "data" / "deepresearch_bench" / "sample_reports_claude-3-7-sonnet.jsonl"
EXAMPLE = parse(FIXTURE.read_text(encoding="utf-8"))


def test_segments_alternate_and_mask_observations() -> None:
    segments = to_segments(EXAMPLE)
    assert "".join(s.text for s in segments) == render(EXAMPLE)
    assert [s.trainable for s in segments] == [True, False] * 4 + [True]
    for segment in segments:
        if segment.trainable:
            assert "<observation>" not in segment.text and "</observation>" not in segment.text
        else:
            assert segment.text.startswith("\n<observation>\n") and segment.text.endswith("\n</observation>")
    # Each model turn before an observation ends where generation stops.
    for model, env in zip(segments, segments[1:], strict=False):
        if not env.trainable:
            assert model.text.endswith(STOP_STRINGS[:2])


def test_messages_roles_and_contents() -> None:
    messages = to_messages(EXAMPLE, "How does photosynthesis work?", system_prompt="You research.")
    assert messages[0] == {"role": "system", "content": "You research."}
    assert messages[1] == {"role": "user", "content": "How does photosynthesis work?"}
    assert [m["role"] for m in messages[2:]] == ["assistant", "tool"] * 4 + ["assistant"]
    assert "".join(m["content"] for m in messages[2:]) == render(EXAMPLE)
    assert to_messages(EXAMPLE, "q")[0]["role"] == "user"


def test_trainable_spans_cover_everything_but_observations() -> None:
    text = render(EXAMPLE)
    spans = trainable_spans(EXAMPLE)
    model_text = "".join(text[a:b] for a, b in spans)
    assert "<observation>" not in model_text
    assert model_text.count("<think>") == text.count("<think>")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces())
def test_segments_concatenate_to_render(trace: Trace) -> None:
    segments = to_segments(trace)
    assert "".join(s.text for s in segments) == render(trace)
    assert all(a.trainable != b.trainable for a, b in zip(segments, segments[1:], strict=False))


def test_fixture_stats() -> None:
    stats = trace_stats(EXAMPLE)
    assert stats == TraceStats(
        mode="trace",
        subtasks=2,
        steps=18,
        tool_calls=4,
        searches=2,
        crawls=2,
        search_queries=3,
        observations=4,
        observed_urls=4,
        citations=6,
        distinct_citations=4,
        references=4,
        report_chars=len(EXAMPLE.report.text),
        parse_notes=0,
    )


def test_bare_text_stats_as_report() -> None:
    articles = [json.loads(line)["article"] for line in DRB.read_text(encoding="utf-8").splitlines()]
    all_stats = [trace_stats(a) for a in articles]
    assert all(s.mode == "report" and s.references > 0 and s.citations > 0 for s in all_stats)
    total = total_stats(all_stats)
    assert total.references == sum(s.references for s in all_stats) == 148
    assert total.mode == "total"
    # Forced trace mode on a bare text finds no report.
    assert trace_stats(articles[0], report_only=False).references == 0
