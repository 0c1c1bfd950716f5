"""The pieces' JSON schemas (filled per call) and how their JSON replies become trace pieces."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest

from oresearch_cli.agent.context import Context, Meter, ResearchOptions
from oresearch_cli.agent.pieces import PieceError, parse_answer, parse_step
from oresearch_cli.agent.prompts import phrase, prompt
from oresearch_cli.agent.schemas import PIECES, schema, step_schema
from oresearch_cli.agent.sources import SourceBook
from oresearch_cli.agent.summarizer import finalize_report
from oresearch_cli.llm import ChatResult
from oresearch_cli.llm.client import Usage
from oresearch_cli.trace import analyze_report


def test_every_schema_is_a_valid_json_schema_once_filled():
    bounds = {"n_sources": 4, "min_subtasks": 2, "max_subtasks": 5}
    for piece in PIECES:
        if piece == "step":
            continue
        jsonschema.Draft202012Validator.check_schema(schema(piece, **bounds))
    jsonschema.Draft202012Validator.check_schema(
        step_schema(actions=("search",), n_sources=0, need_plan=False)
    )
    with pytest.raises(KeyError, match=r"\$n_sources"):
        schema("answer")


def test_source_numbers_are_bounded_by_the_sources_seen():
    answer = schema("answer", n_sources=3)
    jsonschema.validate({"answer": "x" * 40, "sources": [1, 3]}, answer)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"answer": "x" * 40, "sources": [4]}, answer)
    with pytest.raises(jsonschema.ValidationError):  # too long for the worker's token cap
        jsonschema.validate({"answer": "x" * 501, "sources": [1]}, answer)


def test_step_schema_offers_only_the_allowed_actions():
    first = step_schema(actions=("search", "crawl"), n_sources=0, need_plan=True)
    search = {"thought": "I need the basic facts.", "plan": "1. Search. 2. Read.", "action": "search",
              "queries": ["amazon carbon"]}  # fmt: skip
    jsonschema.validate(search, first)
    with pytest.raises(jsonschema.ValidationError):  # no plan on the first step
        jsonschema.validate({k: v for k, v in search.items() if k != "plan"}, first)
    with pytest.raises(jsonschema.ValidationError):  # no crawl before a source was seen
        jsonschema.validate(
            {"thought": "Read it now please.", "plan": "Read.", "action": "crawl", "urls": [1]}, first
        )
    later = step_schema(actions=("search", "crawl", "answer"), n_sources=2, need_plan=False)
    jsonschema.validate({"thought": "Source 2 has it all.", "action": "crawl", "urls": [2]}, later)
    jsonschema.validate({"thought": "The sources are enough.", "action": "answer"}, later)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"thought": "Source 3 has it all.", "action": "crawl", "urls": [3]}, later)
    assert list(first["properties"])[:2] == ["thought", "plan"]  # written in trace order
    assert "anyOf" not in first and len(later["anyOf"]) == 3


def test_a_json_answer_gets_the_citations_it_lists():
    text = json.dumps({"answer": "Forests store about 100 billion tonnes of carbon.", "sources": [2, 9]})
    assert parse_answer(text, 3) == "Forests store about 100 billion tonnes of carbon. [2]"
    inline = json.dumps({"answer": "Forests store carbon [1] in trees and soil.", "sources": [2]})
    assert parse_answer(inline, 3) == "Forests store carbon [1] in trees and soil."
    with pytest.raises(PieceError, match="not valid JSON"):  # cut off mid-object
        parse_answer('{"answer": "Forests store about 100 billion tonnes', 3)


def test_a_crawl_step_names_sources_by_number():
    step = parse_step(
        json.dumps({"thought": "Source 2 looks best.", "action": "crawl", "urls": [2]}),
        sources=["https://a.example/x", "https://b.example/y"],
    )
    assert step.urls == ["https://b.example/y"]


def test_a_json_report_is_laid_out_under_the_languages_headings():
    book = SourceBook()
    for i in range(2):
        book.add(f"https://en.wikipedia.org/wiki/Page_{i}", f"Page {i}", "snippet")
    data = {
        "introduction": "This report explains why the Amazon matters for the climate.",
        "sections": [{"heading": "Carbon", "text": "The Amazon stores much carbon.", "sources": [1, 2]}],
        "conclusion": "The Amazon is a major carbon sink [2].",
    }
    report = finalize_report(json.dumps(data), book, "zh")
    analysis = analyze_report(report)
    assert [s.kind for s in analysis.sections][:1] == ["introduction"] and not analysis.missing_sections
    assert "## 引言" in report and "## Carbon\nThe Amazon stores much carbon. [1][2]" in report


class _Replies:
    """An LLM whose replies are given in order (ask_structured's only caller-facing need)."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)

    async def chat(self, role, messages, **kwargs):
        return ChatResult(
            text=self.texts.pop(0), finish_reason="stop", usage=Usage(1, 1), latency_s=0.0, cost_usd=None,
            model="m", base_url="http://x", attempts=1, role=role,
        )  # fmt: skip


def test_a_reply_that_copies_a_placeholder_is_refused_and_asked_again():
    placeholder = prompt("answer", "en").placeholders[0]
    ctx = Context(
        "Why is the Amazon important?", "en", _Replies(placeholder, "fine"), None, ResearchOptions(), Meter()
    )  # type: ignore[arg-type]

    value, failures = asyncio.run(
        ctx.ask("worker", "answer", {"question": "q"}, lambda r: r.text, expected="an answer")
    )
    assert value == "fine"
    assert len(failures) == 1 and "placeholder" in failures[0].reason


def test_an_answer_that_echoes_the_retry_example_without_brackets_is_refused():
    """The embedded model, asked again for a zh answer, wrote the retry phrase's example back
    ("用 2 到 4 句事实回答，并引用来源，例如 [1]，...") with a citation in it: no answer at all."""
    expected = phrase("zh", "expected_answer")
    echo = "用 2 到 4 句事实回答，并引用来源，例如 [1]，只能使用来源，例如 [2]。"
    ctx = Context("李清照的词风如何变化？", "zh", _Replies(echo, "李清照南渡后词风转为沉郁[1]。"), None,
                  ResearchOptions(), Meter())  # type: ignore[arg-type]  # fmt: skip
    value, failures = asyncio.run(
        ctx.ask("worker", "answer", {"question": "q"}, lambda r: r.text, expected=expected)
    )
    assert value == "李清照南渡后词风转为沉郁[1]。"
    assert len(failures) == 1 and "placeholder" in failures[0].reason
