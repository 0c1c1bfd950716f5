"""`merge_sources`: each subtask answer's citations are renumbered into the trace's one source list,
in the trace text and in the structured `steps` log alike."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from oresearch_cli.agent import ResearchOptions, ResearchResult, research
from oresearch_cli.llm import LLMClient
from oresearch_cli.tools import open_toolbox
from oresearch_cli.trace import parse
from oresearch_cli.workspace import Workspace

from standin_llm import StandinLLM
from synth_support import Teacher, build_test_corpus, llm_config


def cited(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\[(\d+)\]", text)]


def run(tmp_path: Path) -> ResearchResult:
    ws = Workspace.open(tmp_path / "ws")
    build_test_corpus(ws, tmp_path)
    # Each subtask has its own topic; the teacher's answers cite the worker's own [1] and [2].
    with StandinLLM(Teacher(subtasks=2, calls=2)) as srv:

        async def main() -> ResearchResult:
            async with (
                open_toolbox(ws, search="local:mini", crawl="local", cache=False) as tools,
                LLMClient(llm_config(srv.url)) as llm,
            ):
                question = "How does photosynthesis turn light into sugar?"
                return await research(question, "en", llm, tools, ResearchOptions(sequential=True))

        return asyncio.run(main())


def test_subtask_answers_cite_the_merged_numbers_of_the_urls_they_cited(tmp_path: Path) -> None:
    result = run(tmp_path)
    merged = {s["n"]: s["url"] for s in result.steps["sources"]}
    # What each worker cited, in its own numbering: its sources [1] and [2] (the [99] is dropped).
    wanted = [[r.sources.get(1).url, r.sources.get(2).url] for r in result.subtasks]
    assert len(wanted) == 2 and wanted[0][0] != wanted[1][0]
    # The test has teeth only if some answer's own numbers differ from its merged ones.
    assert any(merged[n] != url for urls in wanted for n, url in enumerate(urls, start=1))

    trace_answers = [s.answer or "" for s in parse(result.text).subtasks]
    log_answers = [s["steps"][-1]["content"] for s in result.steps["subtasks"]]
    assert [s["steps"][-1]["kind"] for s in result.steps["subtasks"]] == ["subtask_answer"] * 2
    for answers in (trace_answers, log_answers):
        assert [[merged[n] for n in cited(a)] for a in answers] == wanted, answers
    assert trace_answers == log_answers
