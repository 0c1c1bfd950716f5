"""The agent workflow against the scripted stand-in: trace shape, citations, parallelism, bounds,
retries of unusable pieces, fallbacks, endpoint faults, languages."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from oresearch_cli.agent import ResearchOptions, research
from oresearch_cli.agent.pieces import PieceError, parse_step, parse_subtasks
from oresearch_cli.llm import LLMClient, LLMError
from oresearch_cli.tools import open_toolbox
from oresearch_cli.trace import analyze_report, is_valid, observed_urls, parse, render, validate
from oresearch_cli.trace.urls import page_key
from oresearch_cli.workspace import Workspace

from standin_llm import StandinLLM, error, ok, rate_limited, server_error, slow, truncated
from synth_support import Teacher, build_test_corpus, llm_config

QUESTION = "How does photosynthesis turn light into sugar?"


@pytest.fixture(scope="module")
def corpus_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    tmp = tmp_path_factory.mktemp("agent")
    ws = Workspace.open(tmp / "ws")
    build_test_corpus(ws, tmp)
    return ws


def run_research(ws: Workspace, teacher: Teacher, options: ResearchOptions | None = None, language: str = "en",
                 question: str = QUESTION, **config):  # type: ignore[no-untyped-def]  # fmt: skip
    with StandinLLM(teacher) as srv:

        async def main():  # type: ignore[no-untyped-def]
            async with (
                open_toolbox(ws, search="local:mini", crawl="local", cache=False) as tools,
                LLMClient(llm_config(srv.url, **config)) as llm,
            ):
                return await research(question, language, llm, tools, options, trace_id="q1")

        return asyncio.run(main()), srv


def test_trace_is_valid_and_citations_are_enforced(corpus_ws: Workspace) -> None:
    result, _ = run_research(corpus_ws, Teacher(subtasks=3, calls=2))
    assert result.valid, [p.to_dict() for p in result.problems]
    assert validate(result.text) == [] or is_valid(validate(result.text))
    trace = parse(result.text)
    assert render(trace) == result.text and len(trace.subtasks) == 3
    assert all(len(s.tool_calls) == 2 for s in trace.subtasks)
    # The teacher cites [99], [77] and invents reference URLs: all gone; references are observed pages.
    analysis = analyze_report(result.report)
    observed = {page_key(u) for u in observed_urls(trace, include_crawled=True)}
    assert analysis.references and all(page_key(r.url) in observed for r in analysis.references)
    assert "[77]" not in result.report and "made.up" not in result.report
    assert all("[99]" not in (s.answer or "") for s in trace.subtasks)
    assert set(analysis.cited_numbers) == {r.number for r in analysis.references}
    assert result.failures == []
    assert result.usage.prompt_tokens > 0 and result.usage.calls == 1 + 3 * 4 + 1
    assert result.usage.models == {"planner": "planner-m", "worker": "worker-m", "summarizer": "summarizer-m"}
    kinds = [e["kind"] for e in result.steps["subtasks"][0]["steps"]]
    assert kinds == ["think", "plan", "web_search", "observation", "think", "crawl_page", "observation",
                     "think", "subtask_answer"]  # fmt: skip
    json.dumps(result.steps)


def _worker_times(teacher: Teacher) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    for piece, subtask, at in teacher.log:
        if piece in ("step", "answer"):
            times.setdefault(subtask, []).append(at)
    return times


def test_parallel_subtasks_overlap_and_sequential_do_not(corpus_ws: Workspace) -> None:
    teacher = Teacher(subtasks=3, calls=2, latency=0.05)
    result, _ = run_research(corpus_ws, teacher)
    times = _worker_times(teacher)
    assert len(times) == 3
    spans = sorted((min(t), max(t)) for t in times.values())
    # Every subtask starts before any other finishes: they ran at the same time.
    assert max(start for start, _ in spans) < min(end for _, end in spans)

    teacher = Teacher(subtasks=3, calls=2, latency=0.05)
    result, _ = run_research(corpus_ws, teacher, ResearchOptions(sequential=True))
    spans = sorted((min(t), max(t)) for t in _worker_times(teacher).values())
    assert all(spans[i][1] < spans[i + 1][0] for i in range(len(spans) - 1))
    assert result.valid


def test_max_tool_calls_and_max_steps_force_the_answer(corpus_ws: Workspace) -> None:
    result, _ = run_research(corpus_ws, Teacher(subtasks=2, calls=50), ResearchOptions(max_tool_calls=3))
    assert [len(s.tool_calls) for s in result.trace.subtasks] == [3, 3] and result.valid
    assert all(s["steps"][-1]["forced"] == "reached max_tool_calls=3" for s in result.steps["subtasks"])
    result, _ = run_research(
        corpus_ws, Teacher(subtasks=2, calls=50), ResearchOptions(max_steps=2, min_tool_calls=1)
    )
    assert [len(s.tool_calls) for s in result.trace.subtasks] == [2, 2]
    assert all(s["n_steps"] == 2 for s in result.steps["subtasks"])


def test_answering_below_min_tool_calls_is_asked_again(corpus_ws: Workspace) -> None:
    result, _ = run_research(corpus_ws, Teacher(subtasks=2, calls=3, answer_too_early=True))
    assert all(len(s.tool_calls) >= 2 for s in result.trace.subtasks) and result.valid
    assert any(f.piece == "min_tool_calls" for f in result.failures)


def test_malformed_pieces_are_retried_once_then_recorded(corpus_ws: Workspace) -> None:
    faults = {
        "planner": [ok("I cannot help with that."), ok("{not json")],
        "step": [ok("blah blah")],
        "answer": [ok("no citations here at all, sorry"), truncated("cut [1")] * 2,
        "report": [ok("just one line [1]"), ok("## Introduction\nonly this")],
    }
    teacher = Teacher(subtasks=2, calls=2, faults=faults)
    result, srv = run_research(corpus_ws, teacher)
    pieces = [(f.piece, f.attempt) for f in result.failures]
    assert ("planner", 1) in pieces and ("planner", 2) in pieces and ("subtask_list", 0) in pieces
    assert ("step", 1) in pieces and ("step", 2) not in pieces  # the retry was usable
    assert pieces.count(("answer", 0)) == 2  # both answers fell back to the observed snippets
    assert ("report", 0) in pieces
    reasons = " ".join(f.reason for f in result.failures)
    assert "cut off at max_tokens" in reasons and "cites none" in reasons and "lacks" in reasons
    # The second attempt quotes the reason in the strict prompt.
    planner_requests = [r for r in srv.chat_requests() if r.json()["model"] == "planner-m"]
    assert len(planner_requests) == 2 and "could not be used" in planner_requests[1].last_user_text()
    # Fallbacks still make a structurally valid trace; the structured steps say what happened.
    assert result.valid, [p.to_dict() for p in result.problems]
    assert len(result.trace.subtasks) == 2
    step_failures = [f for s in result.steps["subtasks"] for e in s["steps"] for f in e["failures"]]
    assert any(f.get("fallback") for f in step_failures)


def test_junk_model_still_gives_a_valid_trace(corpus_ws: Workspace) -> None:
    def junk(request):  # type: ignore[no-untyped-def]
        return ok("Sure! Here is some text without any structure.")

    result, _ = run_research(corpus_ws, junk)
    assert result.valid, [p.to_dict() for p in result.problems]
    assert all(len(s.tool_calls) == 2 for s in result.trace.subtasks)
    assert {f.piece for f in result.failures} >= {"subtask_list", "step", "answer", "report"}
    # The fallback answers quote the observed snippets, each ending on a sentence or a whole word.
    for subtask in result.trace.subtasks:
        quotes = re.split(r" \[\d+\] ?", subtask.answer or "")
        assert [q for q in quotes if q] and all(q.endswith((".", "…")) for q in quotes if q), subtask.answer


def test_fallback_excerpts_end_on_a_sentence_or_a_whole_word() -> None:
    from oresearch_cli.agent.fallbacks import excerpt as _excerpt

    text = "Lava flows from vents. Ash rises into the stratosphere and cools the climate for years afterwards"
    assert _excerpt(text, 200) == text + "."
    assert _excerpt(text, 60) == "Lava flows from vents."
    assert (
        _excerpt("A volcano is a vent or fissure in the crust of a planet", 30) == "A volcano is a vent or…"
    )
    assert _excerpt("火山是地壳上的裂口。岩浆从这里喷出地表并形成熔岩流", 12) == "火山是地壳上的裂口。"


def test_endpoint_faults_are_survived_by_the_client_retries(corpus_ws: Workspace) -> None:
    faults = {"planner": [rate_limited(retry_after=0.01), server_error(503)], "step": [slow(1.5, "late")]}
    result, _ = run_research(corpus_ws, Teacher(subtasks=2, calls=2, faults=faults), timeout_s=0.5)
    assert result.valid and result.failures == []


def test_endpoint_that_refuses_raises(corpus_ws: Workspace) -> None:
    with pytest.raises(LLMError):
        run_research(corpus_ws, Teacher(faults={"planner": [error(400, "bad request")]}))


def test_chinese_question_gets_chinese_prompts(corpus_ws: Workspace) -> None:
    def junk(request):  # type: ignore[no-untyped-def]
        return ok("好的")

    # The test corpus is English: the question names its topic in English too, so the
    # orchestrator's own searches (the junk model never gives a query) find sources to cite.
    result, srv = run_research(
        corpus_ws, junk, language="zh", question="光合作用（photosynthesis）如何把光变成糖？"
    )
    systems = [r.json()["messages"][0]["content"] for r in srv.chat_requests()]
    assert all(any("\u4e00" <= c <= "\u9fff" for c in s) for s in systems if s)
    assert "## 引言" in result.report and "## 结论" in result.report and result.valid


def test_lenient_piece_parsing() -> None:
    assert parse_subtasks("1. First aspect here\n2. Second aspect here\n2. Second aspect here") == [
        "First aspect here",
        "Second aspect here",
    ]
    with pytest.raises(PieceError):
        parse_subtasks("nothing useful")
    step = parse_step("Thought: need data\nSearch: foo bar | baz&serp_num=3", sources=[])
    assert (step.action, step.queries, step.thought) == ("search", ["foo bar", "baz"], "need data")
    urls = ["https://a.example/x", "https://b.example/y"]
    step = parse_step('```json\n{"think": "read", "action": "crawl", "urls": [2, "https://evil.example"]}\n```',
                      sources=urls)  # fmt: skip
    assert step.urls == ["https://b.example/y"] and step.notes
    with pytest.raises(PieceError):
        parse_step('{"thought": "x", "action": "crawl", "urls": ["https://unseen.example"]}', sources=urls)
    step = parse_step(
        '<think>hmm</think>{"thought": "<web_search>x</web_search> ok", "action": "answer"}', sources=[]
    )
    assert step.action == "answer" and "<" not in step.thought


def test_prompts_exist_for_each_language() -> None:
    from oresearch_cli.agent.prompts import PIECES, languages, phrases, prompt

    assert {"en", "zh"} <= set(languages())
    for lang in ("en", "zh"):
        for piece in PIECES:
            assert prompt(piece, lang).user
        assert set(phrases("en")) == set(phrases(lang))
    assert Path(__file__).exists()


def test_an_answer_cut_off_at_max_tokens_keeps_its_complete_sentences() -> None:
    from oresearch_cli.agent.pieces import parse_answer

    cut = "Light reactions make ATP in the thylakoids [1]. The Calvin cycle then fixes CO2 [2]. It us"
    assert parse_answer(cut, 2, truncated=True) == (
        "Light reactions make ATP in the thylakoids [1]. The Calvin cycle then fixes CO2 [2]."
    )
    zh = "光反应在叶绿体的类囊体膜上进行，产生三磷酸腺苷和还原型辅酶。[1]卡尔文循环在基质"
    assert (
        parse_answer(zh, 1, truncated=True)
        == "光反应在叶绿体的类囊体膜上进行，产生三磷酸腺苷和还原型辅酶。[1]"
    )
    with pytest.raises(PieceError, match="cut off at max_tokens"):
        parse_answer("The light reactions make ATP and NADPH in the thyla", 2, truncated=True)
    with pytest.raises(PieceError, match="cites none"):  # what is kept must still cite a source
        parse_answer("Light reactions make ATP in the thylakoids. The Calvin cy", 2, truncated=True)


def test_report_prose_without_headings_gets_sections_by_paragraph() -> None:
    from oresearch_cli.agent.sources import SourceBook
    from oresearch_cli.agent.summarizer import finalize_report

    book = SourceBook()
    book.add("https://en.wikipedia.org/wiki/Thylakoid", "Thylakoid")
    book.add("https://en.wikipedia.org/wiki/Calvin_cycle", "Calvin cycle")
    prose = (
        "Plants capture light in two stages [1].\n\nThe light reactions make ATP in the thylakoids [1]. "
        "The Calvin cycle fixes CO2 [2].\n\nSo light becomes sugar [1][2]."
    )
    report = finalize_report(prose, book, "en")
    analysis = analyze_report(report)
    assert [s.kind for s in analysis.sections] == ["introduction", "body", "conclusion", "references"]
    assert report.startswith("## Introduction\nPlants capture light") and "## Conclusion\nSo light" in report
    assert {r.url for r in analysis.references} == set(book.urls)
    with pytest.raises(PieceError, match="lacks"):  # two paragraphs cannot be split honestly
        finalize_report("Plants capture light [1].\n\nSo light becomes sugar [2].", book, "en")
    with pytest.raises(PieceError, match="lacks"):  # headings the model wrote are not rearranged
        finalize_report("## Introduction\nPlants [1].\n\n## Findings\nATP [1].\n\nMore [2].", book, "en")
