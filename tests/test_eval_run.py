"""`ores eval run`: a system answers a benchmark's questions into `reports` rows and DRB's
submission.jsonl; resume, shards, DRB's tasks by language, the workflow system, and the errors a
user meets before anything runs.

The single-model stage is driven by a scripted generator (`CharModel`: one token per character,
so no tokenizer or torch is needed here) put in place of the model `open_generator` would load;
its tool calls run against a real toolbox over a small local corpus. The real tiny random Llama
runs the same stage through the CLI in a subprocess (the test process never imports torch); the
workflow runs against the stand-in endpoint playing planner, worker and summarizer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from oresearch_cli.errors import InputError
from oresearch_cli.scoring.drb import default_data_dir
from oresearch_cli.stages import eval_run
from oresearch_cli.stages.eval_run import (
    SUBMISSION_FILE,
    SUBMISSION_KIND,
    EvalRunOptions,
    ModelSystem,
    run_model_eval,
    run_workflow_eval,
)
from oresearch_cli.stages.eval_settings import EvalSettings
from oresearch_cli.stages.research_run import ResearchSummary, RunOptions
from oresearch_cli.stages.synth import run_synth, synth_options
from oresearch_cli.tools.corpus import build_corpus
from oresearch_cli.workspace import Workspace
from scripted_generator import DOCS, PHOTO_URL, SEEDS, CharModel

from conftest import error_lines, ores
from model_support import embedded_ws, free_port, tiny_model
from standin_llm import StandinLLM
from synth_support import Teacher, llm_config


@pytest.fixture(scope="module")
def template_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace holding the "mini" corpus, built once; each test works on a copy."""
    tmp = tmp_path_factory.mktemp("eval-run-template")
    source = tmp / "docs.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    build_corpus(Workspace.open(tmp / "ws"), source, "mini")
    return tmp / "ws"


@pytest.fixture
def ws_dir(template_ws: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(template_ws, tmp_path / "ws"))


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> CharModel:
    """The scripted model in place of the one `--model` names (the stage's own code does the rest)."""
    scripted = CharModel()

    async def open_generator(
        ws: Any, system: ModelSystem, stack: Any, max_batch: int
    ) -> tuple[CharModel, str]:
        return scripted, scripted.name

    monkeypatch.setattr(eval_run, "open_generator", open_generator)
    return scripted


def write_seeds(path: Path, seeds: list[dict[str, str]] = SEEDS) -> Path:
    path.write_text("".join(json.dumps(s) + "\n" for s in seeds), encoding="utf-8")
    return path


def options(bench: str, **run: Any) -> EvalRunOptions:
    settings = EvalSettings(search="local:mini", crawl="local", max_tool_calls=3, max_turns=6)
    return EvalRunOptions(bench=bench, run=RunOptions(concurrency=2, **run), settings=settings, cache=False)


def run_model(ws_dir: Path, opts: EvalRunOptions) -> tuple[ResearchSummary, list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []
    summary = asyncio.run(
        run_model_eval(Workspace.open(ws_dir), ModelSystem("scripted"), opts, on_record=records.append)
    )
    return summary, records


def rows_of(ws_dir: Path, run_id: str) -> dict[str, dict[str, Any]]:
    ws = Workspace.open(ws_dir)
    [artifact] = ws.artifacts(run_id=run_id, kind="reports")
    return {r["id"]: r for r in ws.read_artifact(artifact)}


def submission_of(ws_dir: Path, run_id: str) -> list[dict[str, Any]]:
    ws = Workspace.open(ws_dir)
    [artifact] = ws.artifacts(run_id=run_id, kind=SUBMISSION_KIND)
    assert artifact.format == "jsonl" and artifact.path.name == SUBMISSION_FILE
    assert artifact.path.parent == ws.run_dir("eval", run_id)
    rows = [json.loads(line) for line in artifact.path.read_text(encoding="utf-8").splitlines()]
    assert artifact.n_rows == len(rows)
    return rows


# -- one model -----------------------------------------------------------------------------------------


def test_model_run_writes_report_rows_and_drbs_submission(
    ws_dir: Path, tmp_path: Path, model: CharModel
) -> None:
    seeds = write_seeds(tmp_path / "q.jsonl")
    summary, records = run_model(ws_dir, options(str(seeds)))
    assert (summary.n_input, summary.n_done, summary.n_failed, summary.n_skipped) == (3, 2, 1, 0)
    assert summary.n_invalid == 1  # the quiet question has no report
    assert sorted(r["id"] for r in records) == ["q-broken", "q-photo", "q-quiet"]
    ws = Workspace.open(ws_dir)
    run = ws.get_run(summary.run_id)
    assert run.stage == "eval" and run.kind == "reports" and run.config["system"] == "model"
    assert run.config["model"] == "scripted-char" and run.config["budget"]["max_tool_calls"] == 3
    rows = rows_of(ws_dir, summary.run_id)

    photo = rows["q-photo"]
    assert photo["status"] == "done" and photo["valid"]
    assert photo["report"].startswith("# Photosynthesis") and PHOTO_URL in photo["report"]
    assert "<web_search>photosynthesis light energy" in photo["trace"]
    # the call ran against the corpus: its observation is the corpus page, not the model's "made up"
    assert "Photosynthesis converts light energy" in photo["trace"] and "made up" not in photo["trace"]
    assert f"<crawl_page>{PHOTO_URL}</crawl_page>" in photo["trace"]
    assert photo["n_tool_calls"] == 2 and photo["completion_tokens"] > 0 and photo["prompt_tokens"] > 0
    steps = json.loads(photo["steps"])
    assert steps["stop_reason"] == "answered" and steps["n_turns"] == 3 and steps["tool_errors"] == []
    assert json.loads(photo["models"]) == {"model": "scripted-char"}

    quiet = rows["q-quiet"]
    assert quiet["status"] == "done" and quiet["report"] is None and not quiet["valid"]
    assert json.loads(quiet["steps"])["stop_reason"] == "no_tool_call" and quiet["n_tool_calls"] == 0

    broken = rows["q-broken"]
    assert broken["status"] == "failed" and "engine fell over" in broken["error"]
    assert broken["trace"] in (None, "")

    # DRB's submission: every answered question, {id, prompt, article}; no report is an empty article
    submission = submission_of(ws_dir, summary.run_id)
    assert sorted(submission, key=lambda r: r["id"]) == [
        {"id": "q-photo", "prompt": SEEDS[0]["question"], "article": photo["report"]},
        {"id": "q-quiet", "prompt": SEEDS[1]["question"], "article": ""},
    ]


def test_rerun_skips_done_questions_and_retry_failed_redoes_the_failed(
    ws_dir: Path, tmp_path: Path, model: CharModel
) -> None:
    seeds = write_seeds(tmp_path / "q.jsonl")
    first, _ = run_model(ws_dir, options(str(seeds)))
    calls = model.calls
    second, records = run_model(ws_dir, options(str(seeds)))
    assert model.calls == calls and records == []  # nothing answered again
    assert (second.n_skipped, second.n_skipped_failed, second.n_done, second.n_failed) == (3, 1, 0, 0)
    assert second.run_id != first.run_id
    assert set(rows_of(ws_dir, second.run_id)) == {"q-photo", "q-quiet", "q-broken"}  # carried
    assert len(submission_of(ws_dir, second.run_id)) == 2
    # --retry-failed: only the failed question runs again (still failing here)
    third, records = run_model(ws_dir, options(str(seeds), retry_failed=True))
    assert [r["id"] for r in records] == ["q-broken"] and third.n_failed == 1 and third.n_skipped == 2


def test_drb_bench_language_and_limit_pick_english_tasks_with_int_ids(ws_dir: Path, model: CharModel) -> None:
    opts = options("drb", limit=2)
    opts.language = "en"
    summary, records = run_model(ws_dir, opts)
    drb = {
        r["id"]: r
        for r in map(
            json.loads, (default_data_dir() / "query.jsonl").read_text(encoding="utf-8").splitlines()
        )
    }
    assert summary.n_input == 50 and summary.n_done == 2  # the 50 English tasks; 2 answered this run
    assert len(records) == 2
    for record in records:
        task = drb[int(record["id"])]
        assert task["language"] == "en" and record["question"] == " ".join(task["prompt"].split())
    run = Workspace.open(ws_dir).get_run(summary.run_id)
    assert run.config["bench"] == "drb" and run.inputs == ["drb"]
    submission = submission_of(ws_dir, summary.run_id)
    assert len(submission) == 2
    for row in submission:
        assert isinstance(row["id"], int) and drb[row["id"]]["language"] == "en"
        assert row["article"].startswith("# Photosynthesis")


def test_a_language_with_no_question_is_an_input_error(ws_dir: Path, model: CharModel) -> None:
    opts = options("drb")
    opts.language = "fr"
    with pytest.raises(InputError, match="--language fr: no question of drb"):
        run_model(ws_dir, opts)
    assert not Workspace.open(ws_dir).runs(stage="eval")


def _shard(item_id: str, n: int) -> int:
    """The shard contract, written out: sha256 of the id, first 8 bytes big-endian, mod n, 1-based."""
    return int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big") % n + 1


def test_shards_split_the_questions_between_runs(ws_dir: Path, tmp_path: Path, model: CharModel) -> None:
    questions = [
        {"id": f"s{i}", "question": f"Question {i}: how is light energy stored?", "language": "en"}
        for i in range(8)
    ]
    seeds = write_seeds(tmp_path / "q.jsonl", questions)
    _, first = run_model(ws_dir, options(str(seeds), shard=(1, 2)))
    summary, second = run_model(ws_dir, options(str(seeds), shard=(2, 2)))
    one, two = {r["id"] for r in first}, {r["id"] for r in second}
    assert one and two and not one & two and one | two == {q["id"] for q in questions}
    assert one == {q["id"] for q in questions if _shard(q["id"], 2) == 1}
    assert summary.n_in_shard == len(two) and summary.n_input == 8
    # same config: the second shard's run carries the first's rows into its artifact
    assert set(rows_of(ws_dir, summary.run_id)) == one | two


# -- the workflow ------------------------------------------------------------------------------------------


def test_workflow_run_writes_reports_under_eval_not_traces(ws_dir: Path, tmp_path: Path) -> None:
    seeds = write_seeds(
        tmp_path / "q.jsonl", [{**s, "question": s["question"].split(": ")[-1]} for s in SEEDS[:2]]
    )
    ws = Workspace.open(ws_dir)
    with StandinLLM(Teacher()) as srv:
        config = llm_config(srv.url)
        synth_seeds = write_seeds(tmp_path / "synth.jsonl", [SEEDS[0]])
        traces = asyncio.run(
            run_synth(
                ws,
                str(synth_seeds),
                synth_options({"search": "local:mini", "crawl": "local"}, cache=False),
                config,
            )
        )
        opts = options(str(seeds))
        synth = synth_options({"search": "local:mini", "crawl": "local"}, None, cache=False)
        summary = asyncio.run(run_workflow_eval(ws, opts, synth, config))
    assert summary.n_done == 2 and summary.n_failed == 0
    run = ws.get_run(summary.run_id)
    assert run.stage == "eval" and run.kind == "reports"
    assert run.config["system"] == "workflow" and set(run.config["roles"]) == {
        "planner",
        "worker",
        "summarizer",
    }
    rows = rows_of(ws_dir, summary.run_id)
    assert set(rows) == {"q-photo", "q-quiet"}
    for row in rows.values():
        assert row["status"] == "done" and row["valid"] and row["report"].startswith("## Introduction")
        assert set(json.loads(row["models"]).values()) == {"planner-m", "worker-m", "summarizer-m"}
    # `ores filter` reads the latest traces: still the synth run's, never an evaluation's
    assert ws.latest_artifact("traces").run_id == traces.run_id
    assert not ws.artifacts(run_id=summary.run_id, kind="traces")
    # the workflow's calls are logged under the eval run
    assert ws.artifacts(run_id=summary.run_id, kind="llm_calls")


def test_workflow_run_writes_drbs_submission(ws_dir: Path, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "q.jsonl", [SEEDS[0]])
    ws = Workspace.open(ws_dir)
    with StandinLLM(Teacher()) as srv:
        synth = synth_options({"search": "local:mini", "crawl": "local"}, None, cache=False)
        summary = asyncio.run(run_workflow_eval(ws, options(str(seeds)), synth, llm_config(srv.url)))
    [row] = submission_of(ws_dir, summary.run_id)
    assert row["id"] == "q-photo" and row["article"].startswith("## Introduction")


# -- the CLI: errors before anything runs, and the real tiny model ---------------------------------------


@pytest.mark.parametrize(
    ("case", "want"),
    [
        ("neither", ["pass exactly one system", "--model", "--workflow"]),
        ("both", ["pass exactly one system", "--model", "--workflow"]),
        ("no-tokenizer", ["needs its tokenizer", "--tokenizer"]),
        ("dead", ["unreachable", "--model", "ores serve"]),
    ],
)
def test_cli_errors_are_one_line_and_register_no_run(
    ws_dir: Path, tmp_path: Path, case: str, want: list[str]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    args = {
        "neither": [],
        "both": ["--model", "embedded", "--workflow"],
        "no-tokenizer": ["--model", dead],
        "dead": ["--model", dead, "--tokenizer", "embedded"],
    }[case]
    seeds = write_seeds(tmp_path / "q.jsonl")
    done = ores(
        "eval", "run", "--bench", str(seeds), *args, "--search", "local:mini", "--ws", str(ws_dir), cwd=tmp_path
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = error_lines(done.stderr)
    for part in want:
        assert part in line, (part, line)
    assert not Workspace.open(ws_dir).runs(stage="eval")


def test_cli_runs_the_tiny_model_in_process(
    ws_dir: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The real path: `--model <checkpoint>` loads the tiny random Llama in the CLI's process and
    runs the loop; random weights write no report, which the rows and the submission must say."""
    checkpoint = tiny_model(embedded_ws(tmp_path_factory))
    seeds = write_seeds(
        tmp_path / "q.jsonl", [{**s, "question": s["question"].split(": ")[-1]} for s in SEEDS[:2]]
    )
    done = ores(
        "eval", "run", "--bench", str(seeds), "--model", str(checkpoint), "--search", "local:mini",
        "--crawl", "local", "--max-new-tokens", "48", "--max-tool-calls", "1", "--seed", "7",
        "--concurrency", "2", "--no-cache", "--ws", str(ws_dir), cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ws = Workspace.open(ws_dir)
    [run] = ws.runs(stage="eval")
    assert run.config["model"] == checkpoint.name and run.config["budget"]["max_new_tokens"] == 48
    rows = rows_of(ws_dir, run.run_id)
    assert set(rows) == {"q-photo", "q-quiet"}
    for row in rows.values():
        assert row["status"] == "done" and row["trace"] and row["completion_tokens"] <= 48
        steps = json.loads(row["steps"])
        assert steps["stop_reason"] in {"answered", "max_new_tokens", "max_turn_tokens", "no_tool_call",
                                        "max_tool_calls", "fake_observation", "max_turns"}  # fmt: skip
    submission = {r["id"]: r for r in submission_of(ws_dir, run.run_id)}
    assert set(submission) == set(rows)
    for item_id, row in rows.items():
        assert submission[item_id]["article"] == (row["report"] or "")
    assert "DRB submission:" in done.stderr and f"ores eval score {run.run_id}" in done.stderr
