"""`ores eval board` and `ores eval agree` on real score runs, and `ores eval` end to end with a real
model as the agent and as the judge.

The board and agreement tests share one workspace: an eval run of three English DRB tasks by the
scripted model of test_eval_run, scored three times by the scripted judge of test_eval_score
(judge A and judge B against reference articles, judge A pointwise). What a user sees runs the real
CLI in a subprocess.

End to end: the tiny random Llama served by `ores serve` answers two DRB tasks through
`ores eval run --model URL` and judges them with the per-task schema bound on the server (CI);
under `-m slow` the embedded SmolLM2 does both for three tasks.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from scipy.stats import spearmanr

from oresearch_cli.scoring.drb import DIMENSIONS
from oresearch_cli.server import embedded
from oresearch_cli.stages import eval_run
from oresearch_cli.stages.eval_run import ModelSystem, run_model_eval
from oresearch_cli.tools.corpus import build_corpus
from oresearch_cli.workspace import Workspace
from test_eval_run import DOCS, CharModel, options
from test_eval_score import RaceJudge, other_judge, score, varied, write_reference

from conftest import DRB, error_lines, ores
from model_support import embedded_ws, tiny_model
from standin_llm import StandinLLM

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WIDE = {"COLUMNS": "400"}  # the board's table unwrapped, a row per line
SAMPLE = DRB / "sample_reports_claude-3-7-sonnet.jsonl"  # Claude's reports for tasks 1-5 and 51-55
TASKS = (51, 52, 53)


def corpus_ws(path: Path) -> Workspace:
    """A workspace with the "mini" corpus the agent searches."""
    source = path.parent / f"{path.name}-docs.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    ws = Workspace.open(path)
    build_corpus(ws, source, "mini")
    return ws


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The workspace and its runs: `eval` (the reports), `a` and `b` (two judges against a
    reference), `pointwise` (judge A, no reference)."""
    tmp = tmp_path_factory.mktemp("eval-cli")
    ws = corpus_ws(tmp / "ws")
    model = CharModel()

    async def open_generator(*_: Any, **__: Any) -> tuple[CharModel, str]:
        return model, model.name

    opts = options("drb", limit=len(TASKS))
    opts.language = "en"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(eval_run, "open_generator", open_generator)
        answered = asyncio.run(run_model_eval(ws, ModelSystem("scripted"), opts))
    rows = ws.read_artifact(answered.artifact)
    assert sorted(int(r["id"]) for r in rows) == list(TASKS) and all(r["report"] for r in rows)
    reference = str(write_reference(tmp / "reference.jsonl", TASKS))
    with StandinLLM(RaceJudge(varied)) as srv:
        a, _ = score(ws, answered.run_id, srv.url, reference=reference)
        pointwise, _ = score(ws, answered.run_id, srv.url)
    with StandinLLM(RaceJudge(other_judge)) as srv:
        b, _ = score(ws, answered.run_id, srv.url, model="judge-b", reference=reference)
    for summary in (a, b, pointwise):
        assert summary.n_scored == len(TASKS) and summary.race is not None
    return {
        "ws": ws,
        "root": ws.root,
        "eval": answered.run_id,
        "a": a,
        "b": b,
        "pointwise": pointwise,
        "tmp": tmp,
    }


def score_rows(ws: Workspace, run_id: str) -> dict[str, dict[str, Any]]:
    [artifact] = ws.artifacts(run_id=run_id, kind="scores")
    return {str(r["id"]): r for r in ws.read_artifact(artifact)}


# -- ores eval board ------------------------------------------------------------------------------------


def test_board_shows_our_runs_beside_published_and_writes_the_pages(scored: dict[str, Any]) -> None:
    root, tmp = scored["root"], scored["tmp"]
    done = ores("eval", "board", "--ws", str(root), cwd=tmp, env=WIDE)
    assert done.returncode == 0, done.stderr
    system = f"scripted-char ({scored['eval']})"
    lines = done.stdout.splitlines()
    # (the terminal table wraps the system's name: its run id goes on the row's second line)
    ours = [n for n, line in enumerate(lines) if "│ ours " in line]
    assert len(ours) == 3 and all(scored["eval"] in lines[n + 1] for n in ours)
    rows = {lines[n].split("│")[-3].strip() + (" †" if "†" in lines[n + 1] else ""): lines[n] for n in ours}
    assert set(rows) == {"judge-a", "judge-b", "judge-a †"}
    for judge, key in (("judge-a", "a"), ("judge-b", "b"), ("judge-a †", "pointwise")):
        assert f"│ {100 * scored[key].race.overall:.2f} │" in rows[judge]
    # ranked by RACE overall against the reference; the pointwise run is not ranked
    ranked = sorted(("a", "b"), key=lambda k: -scored[k].race.overall)
    assert rows["judge-a" if ranked[0] == "a" else "judge-b"].startswith("│  1 │")
    assert rows["judge-a †"].startswith("│  - │") and "not comparable with DRB's numbers" in done.stdout
    assert "O-Researcher-RL" in done.stdout  # the paper's number, shown by default
    board = root / "board"
    png = (board / "leaderboard.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000
    markdown = (board / "leaderboard.md").read_text(encoding="utf-8")
    assert markdown.count(f"| **{system}** | ours |") == 2 and f"| **{system} †** | ours |" in markdown
    assert "O-Researcher-RL" in markdown
    html = (board / "leaderboard.html").read_text(encoding="utf-8")
    assert "<html" in html.lower() and "data:image/png;base64," in html and "O-Researcher-RL" in html
    assert f"board: {board / 'leaderboard.md'}" in done.stderr and "chart:" in done.stderr


def test_board_json_holds_each_runs_race_numbers(scored: dict[str, Any]) -> None:
    ws, root, tmp = scored["ws"], scored["root"], scored["tmp"]
    done = ores("eval", "board", "--json", "--ws", str(root), cwd=tmp)
    assert done.returncode == 0, done.stderr
    entries = json.loads(done.stdout)
    ours = {e["extras"]["score_run"]: e for e in entries if e["kind"] == "ours"}
    assert set(ours) == {scored["a"].run_id, scored["b"].run_id, scored["pointwise"].run_id}
    assert any(e["kind"] == "published" and e["source"] for e in entries)
    for key, mode, reference, judge in (
        ("a", "race", "drb", "judge-a"),
        ("b", "race", "drb", "judge-b"),
        ("pointwise", "race-pointwise", None, "judge-a"),
    ):
        entry = ours[scored[key].run_id]
        rows = list(score_rows(ws, scored[key].run_id).values())
        assert entry["mode"] == mode and entry["reference"] == reference and entry["judge"] == judge
        assert entry["system"] == f"scripted-char ({scored['eval']})"
        assert (entry["n_scored"], entry["n_failed"]) == (len(TASKS), 0)
        # DRB's 0-1 shares, as the board shows them: x100, the plain mean over the tasks
        assert entry["overall"] == pytest.approx(100 * sum(r["race_overall"] for r in rows) / len(rows))
        for dim in DIMENSIONS:
            assert entry["dimensions"][dim] == pytest.approx(
                100 * sum(r[f"race_{dim}"] for r in rows) / len(rows)
            )
    # --published none and named runs: ours only, just those
    only = ores(
        "eval", "board", scored["a"].run_id, "--published", "none", "--json", "--ws", str(root), cwd=tmp
    )
    assert only.returncode == 0, only.stderr
    assert [e["extras"]["score_run"] for e in json.loads(only.stdout)] == [scored["a"].run_id]


def test_board_without_score_runs_is_one_line(tmp_path: Path) -> None:
    Workspace.open(tmp_path / "ws")
    done = ores("eval", "board", "--ws", str(tmp_path / "ws"), cwd=tmp_path)
    assert done.returncode == 2
    [line] = error_lines(done.stderr)
    assert "no finished `ores eval score` run" in line and "score a run first" in line
    assert not (tmp_path / "ws" / "board").exists()


def test_board_of_a_run_that_is_not_a_score_run_is_one_line(scored: dict[str, Any]) -> None:
    done = ores("eval", "board", scored["eval"], "--ws", str(scored["root"]), cwd=scored["tmp"])
    assert done.returncode == 2
    [line] = error_lines(done.stderr)
    assert scored["eval"] in line and "is a eval run" in line and "ores eval score" in line


# -- ores eval agree ------------------------------------------------------------------------------------


def test_agree_compares_two_judges_per_dimension(scored: dict[str, Any]) -> None:
    ws, root, tmp = scored["ws"], scored["root"], scored["tmp"]
    a, b = scored["a"].run_id, scored["b"].run_id
    done = ores("eval", "agree", a, b, "--json", "--ws", str(root), cwd=tmp)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["label_a"], result["label_b"]) == (a, b)
    assert result["common"] == len(TASKS) and result["only_a"] == result["only_b"] == []
    assert list(result["scores"]) == [*DIMENSIONS, "overall"]
    rows_a, rows_b = score_rows(ws, a), score_rows(ws, b)
    ids = sorted(rows_a)
    for name, agreement in result["scores"].items():
        column = "race_overall" if name == "overall" else f"race_{name}"
        xs = [100 * rows_a[i][column] for i in ids]
        ys = [100 * rows_b[i][column] for i in ids]
        assert agreement["n"] == len(TASKS) and agreement["missing"] == 0
        assert agreement["mean_abs_diff"] == pytest.approx(
            sum(abs(y - x) for x, y in zip(xs, ys, strict=True)) / len(ids)
        )
        assert agreement["mean_diff"] == pytest.approx(
            sum(y - x for x, y in zip(xs, ys, strict=True)) / len(ids)
        )
        rho = agreement["spearman"]["value"]
        if len(set(xs)) > 1 and len(set(ys)) > 1:
            assert rho == pytest.approx(spearmanr(xs, ys).statistic)
        else:
            assert rho is None and agreement["spearman"]["reason"]
    # judge B scores the target higher on some criteria: on average it is not below A
    assert result["scores"]["overall"]["mean_diff"] > 0
    assert "Too few items" in result["verdict"]  # three tasks are too few for a verdict
    table = ores("eval", "agree", a, b, "--ws", str(root), cwd=tmp)
    assert table.returncode == 0, table.stderr
    assert "Spearman" in table.stdout and "mean |B-A|" in table.stdout and "Too few items" in table.stdout


def test_agree_with_a_run_that_is_not_a_score_run_is_one_line(scored: dict[str, Any]) -> None:
    done = ores(
        "eval", "agree", scored["a"].run_id, scored["eval"], "--ws", str(scored["root"]), cwd=scored["tmp"]
    )
    assert done.returncode == 2
    [line] = error_lines(done.stderr)
    assert scored["eval"] in line and "is a eval run" in line and "two `ores eval score` runs" in line


# -- end to end with a real model --------------------------------------------------------------------------


def _end_to_end(
    tmp: Path,
    base_url: str,
    model_name: str,
    tokenizer: Path,
    n_tasks: int,
    judge: dict[str, Any],
    *run_args: str,
) -> tuple[dict[str, Any], list[dict[str, Any]], Workspace]:
    """`ores eval run` (the served model on the first `n_tasks` English DRB tasks), `ores eval score`
    (the same model as the judge, against Claude's sample reports as the reference) and
    `ores eval board`; returns the score JSON, the score rows and the workspace."""
    ws = corpus_ws(tmp / "ws")
    answered = ores(
        "eval", "run", "--bench", "drb", "--language", "en", "--limit", str(n_tasks),
        "--model", base_url, "--tokenizer", str(tokenizer), "--search", "local:mini", "--crawl", "local",
        "--seed", "5", "--concurrency", str(n_tasks), "--no-cache", *run_args, "--ws", str(ws.root),
        cwd=tmp, timeout=1800,
    )  # fmt: skip
    assert answered.returncode == 0, answered.stderr[-3000:]
    [run] = ws.runs(stage="eval")
    reports = ws.read_artifact(ws.artifacts(run_id=run.run_id, kind="reports")[0])
    assert sorted(int(r["id"]) for r in reports) == list(range(51, 51 + n_tasks))
    assert all(r["status"] == "done" and r["completion_tokens"] > 0 for r in reports)
    assert json.loads(reports[0]["models"]) == {"model": model_name}
    config = tmp / "judge.yaml"
    config.write_text(yaml.safe_dump({"llm": {"judge": judge}, "eval": {"judge_attempts": 1}}))
    scored = ores(
        "eval", "score", run.run_id, "--reference", str(SAMPLE), "--judge-base-url", base_url,
        "--judge-model", model_name, "--judge-json-mode", "json_schema", "--judge-analysis-chars", "20",
        "--judge-integer-scores", "--judge-max-chars", "400", "--clean", "rules", "--config", str(config), "--json", "--ws", str(ws.root),
        "--weighted",
        cwd=tmp, timeout=3600,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-3000:]
    summary = json.loads(scored.stdout)
    rows = ws.read_artifact(ws.artifacts(run_id=summary["run_id"], kind="scores")[0])
    board = ores("eval", "board", "--ws", str(ws.root), cwd=tmp, env=WIDE)
    assert board.returncode == 0, board.stderr
    assert (ws.root / "board" / "leaderboard.png").read_bytes().startswith(PNG_MAGIC)
    assert f"| **{model_name} ({run.run_id})** | ours |" in (ws.root / "board" / "leaderboard.md").read_text()
    return summary, rows, ws


def _assert_judged(summary: dict[str, Any], rows: list[dict[str, Any]], n_tasks: int) -> None:
    """Every task was judged against its reference and scored: the schema bound on the server
    makes even a weak model's reply parse."""
    assert summary["reports"] == n_tasks and summary["failed"] == 0, [r["error"] for r in rows]
    assert summary["race"]["mode"] == "reference" and summary["race"]["scored"] == n_tasks
    assert summary["judge_calls"] == n_tasks  # one call per task, no re-ask
    # `ores serve` sends top logprobs: every task also has its probability-weighted (G-Eval) overall
    assert summary["race_weighted_tasks"] == n_tasks and 0 <= summary["race_weighted"] <= 1
    for row in rows:
        assert (
            row["status"] == "done" and row["race_mode"] == "reference" and row["reference_clean"] == "rules"
        )
        values = [row["race_overall"], *(row[f"race_{d}"] for d in DIMENSIONS)]
        assert all(isinstance(v, float) and math.isfinite(v) and 0 <= v <= 1 for v in values), values


@pytest.mark.timeout(600)
def test_end_to_end_with_the_tiny_served_model(tiny_server, tmp_path: Path, tmp_path_factory) -> None:
    """CI tier (~45 s once the tiny server is up): random weights write junk reports; bound to the
    per-task schema they still write a judgement that parses (each criterion named from the enum,
    no extra keys, the analysis bounded, integer scores 0-10), so RACE runs end to end over real
    HTTP."""
    base_url, model_name = tiny_server
    tokenizer = tiny_model(embedded_ws(tmp_path_factory))
    judge = {"max_tokens": 3000, "timeout_s": 120, "max_attempts": 1}
    summary, rows, _ = _end_to_end(
        tmp_path, base_url, model_name, tokenizer, 2, judge, "--max-new-tokens", "64", "--max-tool-calls", "1"
    )
    _assert_judged(summary, rows, 2)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_end_to_end_with_the_embedded_model(embedded_server, tmp_path: Path, tmp_path_factory) -> None:
    """Slow tier: the embedded SmolLM2-135M writes the reports of three DRB tasks and judges them.
    Measured on 2 shared CPU cores: ~7 minutes in all (the server's start ~20 s, `eval run` ~30 s,
    `eval score` ~6 minutes, the board a few seconds). The judge dominates: three replies of
    1100-1800 tokens (every criterion of a task) decoded together at ~5 tokens/s each."""
    base_url, model_name = embedded_server
    tokenizer = embedded_ws(tmp_path_factory) / "models" / embedded.EMBEDDED_NAME
    judge = {"timeout_s": 900, "max_attempts": 1, "max_tokens": 3000, "temperature": 0}
    summary, rows, _ = _end_to_end(
        tmp_path,
        base_url,
        model_name,
        tokenizer,
        3,
        judge,
        "--max-new-tokens",
        "256",
        "--max-tool-calls",
        "2",
    )
    _assert_judged(summary, rows, 3)


def test_score_with_reports_it_could_not_score_exits_3(scored: dict[str, Any]) -> None:
    """Scores were written, but not for every report: exit 3 tells a pipeline (documented)."""
    from standin_llm import ok

    with StandinLLM(lambda request: ok("no JSON here, sorry"), lifetime=120) as judge:
        done = ores(
            "eval", "score", scored["eval"], "--reference", str(SAMPLE), "--judge-base-url", judge.url,
            "--judge-model", "judge-m", "--clean", "rules", "--ws", str(scored["root"]), cwd=scored["tmp"],
        )  # fmt: skip
    assert done.returncode == 3, done.stderr[-2000:]
    assert f"{len(TASKS)} reports failed to score" in done.stderr
