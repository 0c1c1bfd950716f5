"""Who wrote each piece of a trace (`oresearch_cli.agent.authorship`): counted on hand-built step
records, on what the workflow really records against the stand-in, and summed in the synth summary."""

from __future__ import annotations

import asyncio
import json

import pytest

from oresearch_cli.agent import research
from oresearch_cli.agent.authorship import PIECES, Authorship, PieceCount, authorship_of, total_authorship
from oresearch_cli.agent.context import Failure
from oresearch_cli.agent.steps import STEP_FAILED, StepRecord
from oresearch_cli.llm import LLMClient
from oresearch_cli.stages.synth import SynthSummary, TraceRecord
from oresearch_cli.tools import open_toolbox
from oresearch_cli.workspace import Status, Workspace

from standin_llm import StandinLLM, ok
from synth_support import Teacher, build_test_corpus, llm_config


def retried(piece: str, subtask: int | None = 1, step: int | None = 1) -> Failure:
    """A reply that could not be used, asked again: the piece stays the model's."""
    return Failure(piece, "not JSON", attempt=1, subtask=subtask, step=step, raw="blah")


def fell_back(piece: str, fallback: str, subtask: int | None = 1, step: int | None = 1) -> list[Failure]:
    """Two unusable replies, then the orchestrator's piece."""
    return [
        Failure(piece, "not JSON", attempt=1, subtask=subtask, step=step),
        Failure(piece, "not JSON", attempt=2, subtask=subtask, step=step),
        Failure(piece, "no usable piece in two replies", subtask=subtask, step=step, fallback=fallback),
    ]


def subtask_records(*, model: bool) -> list[StepRecord]:
    """One subtask as the worker records it: think, plan, search, observation, think, crawl,
    observation, think (answer), the answer; written by the model or by fallbacks throughout."""

    def failures(piece: str, fallback: str, step: int) -> list[Failure]:
        return [] if model else fell_back(piece, fallback, step=step)

    return [
        StepRecord("think", "I search.", failures("step", "search chosen by the orchestrator", 1)),
        StepRecord("plan", "1. Search.", [] if model else [Failure("plan", "no plan", fallback="generic plan")]),
        StepRecord("web_search", ["q"], count=10),
        StepRecord("observation", "results", errors=["one backend failed"]),
        StepRecord("think", "I read.", failures("step", "crawl chosen by the orchestrator", 2)),
        StepRecord("crawl_page", ["https://example.org/a"]),
        StepRecord("observation", "page"),
        StepRecord("think", "I answer.", failures("step", "answer", 3)),
        StepRecord("subtask_answer", "It is so [1].", failures("answer", "answer built from the observed snippets", 4)),
    ]  # fmt: skip


def log(subtask_list: StepRecord, subtasks: list[list[StepRecord]], report: StepRecord) -> dict:
    """The `steps` log as `research` builds it and synth stores it (plus the flat failures)."""
    records = [subtask_list, *(r for s in subtasks for r in s), report]
    return {
        "subtask_list": subtask_list.to_log(),
        "subtasks": [
            {"index": i, "question": f"s{i}", "steps": [r.to_log() for r in s]}
            for i, s in enumerate(subtasks, start=1)
        ],
        "report": report.to_log(),
        "sources": [{"n": 1, "url": "https://example.org/a", "title": "A"}],
        "failures": [f.to_dict() for r in records for f in r.failures],
    }


def counts(authorship: Authorship | None) -> dict[str, tuple[int, int]]:
    assert authorship is not None
    return {piece: (c.model, c.fallback) for piece, c in authorship.pieces.items()}


MODEL_LIST = StepRecord("subtask_list", ["a", "b"], [retried("planner", None, None)])
FALLBACK_LIST = StepRecord("subtask_list", ["a", "b"], fell_back("subtask_list", "subtasks from the question", None, None))  # fmt: skip
MODEL_REPORT = StepRecord("report", None, [])
FALLBACK_REPORT = StepRecord("report", None, fell_back("report", "report assembled from the subtask answers", None, None))  # fmt: skip


def test_a_trace_the_model_wrote_counts_every_piece_as_the_models() -> None:
    # A reply retried into a usable one and a min_tool_calls bound leave the piece the model's.
    first = subtask_records(model=True)
    first[7].failures = [
        Failure("min_tool_calls", "answered after 1 tool calls, below min_tool_calls=2; asked again", step=3),
        retried("step", step=3),
    ]
    authorship = authorship_of(log(MODEL_LIST, [first, subtask_records(model=True)], MODEL_REPORT))
    assert counts(authorship) == {
        "subtask_list": (1, 0),
        "step": (6, 0),
        "plan": (2, 0),
        "answer": (2, 0),
        "report": (1, 0),
    }
    assert authorship is not None
    assert (authorship.model_written, authorship.fallback_written, authorship.total) == (12, 0, 12)
    assert (authorship.model_share, authorship.fallback_share) == (1.0, 0.0)


def test_a_trace_of_fallbacks_counts_every_piece_as_the_orchestrators() -> None:
    steps = log(FALLBACK_LIST, [subtask_records(model=False)] * 2, FALLBACK_REPORT)
    authorship = authorship_of(steps)
    assert counts(authorship) == {p: (0, n) for p, n in zip(PIECES, (1, 6, 2, 2, 1), strict=True)}
    assert authorship is not None and (authorship.model_share, authorship.fallback_share) == (0.0, 1.0)


def test_a_mixed_trace_and_a_step_the_orchestrator_ended() -> None:
    # Subtask 2: the model's first two steps, then no usable step once the minimum was met: the
    # orchestrator answers with the sources so far (a log-only `step_failed` record, a step it decided).
    second = subtask_records(model=True)[:7] + [
        StepRecord(STEP_FAILED, None, fell_back("step", "answer", step=3)),
        StepRecord("subtask_answer", "It is so [1].", []),
    ]
    steps = log(MODEL_LIST, [subtask_records(model=False), second], FALLBACK_REPORT)
    authorship = authorship_of(steps)
    assert counts(authorship) == {
        "subtask_list": (1, 0),
        "step": (2, 4),
        "plan": (1, 1),
        "answer": (1, 1),
        "report": (0, 1),
    }
    assert authorship is not None and authorship.model_share == pytest.approx(5 / 12)
    assert authorship.fallback_share == 7 / 12
    assert authorship.to_dict() == {
        "model_written": 5,
        "fallback_written": 7,
        "model_share": 0.4167,
        "pieces": {
            "subtask_list": {"model": 1, "fallback": 0},
            "step": {"model": 2, "fallback": 4},
            "plan": {"model": 1, "fallback": 1},
            "answer": {"model": 1, "fallback": 1},
            "report": {"model": 0, "fallback": 1},
        },
        "traces": 1,
        "unrecorded": 0,
    }


def test_every_form_of_the_log_gives_the_same_count() -> None:
    steps = log(MODEL_LIST, [subtask_records(model=False)], MODEL_REPORT)
    expected = counts(authorship_of(steps))
    assert expected == {
        "subtask_list": (1, 0),
        "step": (0, 3),
        "plan": (0, 1),
        "answer": (0, 1),
        "report": (1, 0),
    }
    assert counts(authorship_of(json.dumps(steps))) == expected  # the `steps` column's JSON text
    assert counts(authorship_of(json.dumps(steps).encode())) == expected
    records = [MODEL_LIST, *subtask_records(model=False), MODEL_REPORT]
    assert counts(authorship_of(records)) == expected  # the records themselves
    assert counts(authorship_of([r.to_log() for r in records])) == expected  # their log entries


@pytest.mark.parametrize(
    "steps",
    [None, "", "  ", "{}", "[]", "not json", "42", [], {}, {"subtasks": "x", "report": 3},
     [StepRecord("web_search", ["q"]).to_log(), StepRecord("observation", "o").to_log(), "junk", None]],
)  # fmt: skip
def test_no_log_or_no_piece_is_none_never_an_error(steps) -> None:
    assert authorship_of(steps) is None


def test_unreadable_entries_are_skipped() -> None:
    steps = {
        "subtask_list": {"kind": "subtask_list", "failures": "not a list"},
        "subtasks": [{"steps": [{"kind": "think", "failures": [None, "x", {"fallback": ""}]}, 7]}, "junk"],
        "report": {"kind": "report", "failures": [{"piece": "report", "fallback": "assembled"}]},
    }
    assert counts(authorship_of(steps)) == {
        "subtask_list": (1, 0),
        "step": (1, 0),
        "plan": (0, 0),
        "answer": (0, 0),
        "report": (0, 1),
    }


def test_the_sum_over_traces() -> None:
    model = authorship_of(log(MODEL_LIST, [subtask_records(model=True)], MODEL_REPORT))
    junk = authorship_of(log(FALLBACK_LIST, [subtask_records(model=False)], FALLBACK_REPORT))
    assert model is not None and junk is not None
    total = total_authorship([model, None, junk, None])
    assert (total.traces, total.unrecorded) == (2, 2)
    assert (total.model_written, total.fallback_written, total.model_share) == (7, 7, 0.5)
    assert total.pieces["step"] == PieceCount(3, 3) and total == model + junk + Authorship(
        traces=0, unrecorded=2
    )
    empty = total_authorship([None, None])
    assert (empty.total, empty.model_share, empty.fallback_share, empty.unrecorded) == (0, None, None, 2)
    assert empty.to_dict()["model_share"] is None and list(empty.to_dict()["pieces"]) == list(PIECES)
    assert total_authorship([]).to_dict()["traces"] == 0


# -- what the workflow really records ------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    tmp = tmp_path_factory.mktemp("authorship")
    ws = Workspace.open(tmp / "ws")
    build_test_corpus(ws, tmp)
    return ws


def _research(ws: Workspace, script) -> dict:  # type: ignore[no-untyped-def]
    """The `steps` log of one `research` run against the stand-in answering with `script`."""
    with StandinLLM(script) as srv:

        async def main():  # type: ignore[no-untyped-def]
            async with (
                open_toolbox(ws, search="local:mini", crawl="local", cache=False) as tools,
                LLMClient(llm_config(srv.url)) as llm,
            ):
                return await research("How does photosynthesis work?", "en", llm, tools, trace_id="q1")

        result = asyncio.run(main())
    return {**result.steps, "failures": [f.to_dict() for f in result.failures]}


def test_the_workflow_records_a_good_teachers_pieces_as_the_models(corpus_ws: Workspace) -> None:
    # 2 subtasks of 2 tool calls: 3 steps, 1 plan and 1 answer each, plus the list and the report.
    authorship = authorship_of(_research(corpus_ws, Teacher(subtasks=2, calls=2)))
    assert counts(authorship) == {p: (n, 0) for p, n in zip(PIECES, (1, 6, 2, 2, 1), strict=True)}


def test_the_workflow_records_a_junk_models_pieces_as_fallbacks(corpus_ws: Workspace) -> None:
    def junk(request):  # type: ignore[no-untyped-def]
        return ok("Sure! Here is some text without any structure.")

    steps = _research(corpus_ws, junk)
    authorship = authorship_of(steps)
    assert authorship is not None and authorship.model_written == 0 and authorship.model_share == 0.0
    # every fallback the workflow recorded is one piece, and nothing else is counted
    recorded = [f for f in steps["failures"] if f.get("fallback")]
    assert authorship.fallback_written == len(recorded)
    assert {p for p, c in authorship.pieces.items() if c.fallback} == set(PIECES)


# -- the synth summary ---------------------------------------------------------------------------


def test_the_synth_summary_sums_the_traces_done() -> None:
    from oresearch_cli.cli.synth_cmd import _authorship_rows

    def record(status: Status, steps: dict | None) -> TraceRecord:
        return TraceRecord("q", "q?", "en", status=status, valid=True, steps=json.dumps(steps or {}))

    summary = SynthSummary("synth-1", 3, 3, 0, 3)
    assert _authorship_rows(summary) == [] and "model-written" not in summary.stats()
    summary.add(record(Status.DONE, log(MODEL_LIST, [subtask_records(model=True)], MODEL_REPORT)))
    summary.add(record(Status.DONE, log(MODEL_LIST, [subtask_records(model=False)], FALLBACK_REPORT)))
    summary.add(record(Status.FAILED, None))
    assert (summary.authorship.traces, summary.authorship.model_written, summary.authorship.total) == (
        2,
        8,
        14,
    )
    assert summary.stats().endswith("| model-written 57%")
    assert _authorship_rows(summary) == [
        ["pieces written by the model", "57% (8 of 14)"],
        ["  subtask lists", "100% (2 of 2)"],
        ["  steps", "50% (3 of 6)"],
        ["  plans", "50% (1 of 2)"],
        ["  subtask answers", "50% (1 of 2)"],
        ["  reports", "50% (1 of 2)"],
    ]
