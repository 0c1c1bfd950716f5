"""The workspace's scored runs as the board and the agreement check read them.

Each finished `ores eval score` run becomes one `BoardEntry`: its summary recomputed from its
`scores` rows (`stages.eval_score.summarize_scores`, DRB's arithmetic), the mode and reference from
its config, the judge's cost from its call log, and the cost of the system that wrote the reports
from the eval run's rows when the input was one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oresearch_cli.errors import InputError
from oresearch_cli.evaluation.board import DRB_REFERENCE, BoardEntry
from oresearch_cli.workspace import RunInfo, RunStatus, Workspace

SCORE_STAGE = "score"
EVAL_STAGE = "eval"


def _system_name(ws: Workspace, input_name: str) -> tuple[str, float | None]:
    """(a readable name for the system scored, the cost of its reports when they say)."""
    try:
        run = ws.get_run(input_name)
    except Exception:  # noqa: BLE001 - the input was a file, not a run: its name is the system
        return input_name, None
    if run.stage != EVAL_STAGE:
        return input_name, None
    config = run.config
    model = config.get("model") or "workflow"
    if config.get("system") == "workflow":
        roles = config.get("roles") or {}
        model = (
            "workflow " + "/".join(sorted({str(r.get("model")) for r in roles.values()}))
            if roles
            else "workflow"
        )
    cost = None
    for artifact in ws.artifacts(run_id=run.run_id, kind=run.kind):
        costs = [r.get("cost_usd") for r in ws.read_artifact(artifact)]
        priced = [float(c) for c in costs if isinstance(c, int | float)]
        cost = sum(priced) if priced else None
        break
    return f"{model} ({run.run_id})", cost


def _judge_cost(ws: Workspace, run_id: str) -> float | None:
    total = None
    for artifact in ws.artifacts(run_id=run_id, kind="llm_calls"):
        for row in ws.read_artifact(artifact):
            cost = row.get("cost_usd")
            if isinstance(cost, int | float):
                total = (total or 0.0) + float(cost)
    return total


def entry_of(ws: Workspace, run: RunInfo) -> BoardEntry | None:
    """The board row of one finished score run (None when it has no scores artifact)."""
    from oresearch_cli.stages.eval_score import summarize_scores

    artifacts = ws.artifacts(run_id=run.run_id, kind=run.kind)
    if not artifacts:
        return None
    summary = summarize_scores(ws.read_artifact(artifacts[0]))
    config = run.config
    system, system_cost = _system_name(ws, str(config.get("input")))
    reference = config.get("reference")
    # a reference file is taken to be DRB's reference.jsonl (the README says where to get it); a
    # reference run is our own, so its numbers are relative to it
    is_run = isinstance(reference, str) and reference.startswith(EVAL_STAGE + "-")
    extras: dict[str, Any] = {
        "score_run": run.run_id,
        "judge_cost_usd": _judge_cost(ws, run.run_id),
        "clean_fallbacks": summary.clean_fallbacks,
    }
    if summary.rules:
        extras["length_mean"] = summary.rules.get("length_mean")
        extras["sources_mean"] = summary.rules.get("sources_mean")
    fact = summary.fact
    quality = summary.quality
    rest: dict[str, Any] = {
        "citation_accuracy": None if fact is None or fact.accuracy is None else 100.0 * fact.accuracy,
        "effective_citations": None if fact is None else fact.effective,
        "quality": None if quality is None else quality.overall,
        "cost_usd": system_cost,
        "judge": summary.judge,
        "extras": extras,
    }
    mode = "race" if summary.mode == "reference" else "race-pointwise"
    ref = (reference if is_run else DRB_REFERENCE) if summary.mode == "reference" else None
    if summary.race is not None:
        return BoardEntry.from_drb_summary(system, summary.race, mode=mode, reference=ref, **rest)
    return BoardEntry(
        system=system,
        kind="ours",
        mode=mode if summary.mode else "rules",  # RACE asked for and every judgement failed: no overall
        reference=ref,
        overall=None,
        dimensions={},
        n_scored=summary.n_scored,
        n_failed=summary.n_failed,
        **rest,
    )


def scored_entries(ws: Workspace, runs: list[str] | None = None) -> list[BoardEntry]:
    """Board rows of the finished score runs (all, or those named), newest first."""
    chosen = [ws.get_run(r) for r in runs] if runs else ws.runs(stage=SCORE_STAGE)
    entries = []
    for run in chosen:
        if run.stage != SCORE_STAGE:
            raise InputError(f"run {run.run_id} is a {run.stage} run; name `ores eval score` runs")
        if run.effective_status != RunStatus.DONE:
            continue
        entry = entry_of(ws, run)
        if entry is not None:
            entries.append(entry)
    return entries


def dimension_scores(ws: Workspace, run_id: str) -> dict[str, dict[str, float | None]]:
    """id -> RACE scores (each dimension and overall, 0-100) of a score run, for `judge_agreement`;
    a task whose judgement failed has None."""
    from oresearch_cli.scoring.drb import DIMENSIONS

    run = ws.get_run(run_id)
    if run.stage != SCORE_STAGE:
        raise InputError(f"run {run_id} is a {run.stage} run; name two `ores eval score` runs")
    artifacts = ws.artifacts(run_id=run.run_id, kind=run.kind)
    if not artifacts:
        raise InputError(f"run {run_id} has no scores (status {run.effective_status}); rerun it to finish")
    out: dict[str, dict[str, float | None]] = {}
    for row in ws.read_artifact(artifacts[0]):
        scores: Mapping[str, Any] = row
        values = {d: scores.get(f"race_{d}") for d in DIMENSIONS} | {"overall": scores.get("race_overall")}
        out[str(row["id"])] = {k: None if v is None else 100.0 * float(v) for k, v in values.items()}
    return out
