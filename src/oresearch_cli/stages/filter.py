"""`ores filter`: hard rules, dedup and the LLM judge over traces; a verdict with reasons per trace.

    result = run_filter(ws_path, source=None, options=FilterOptions(judge=False))
    result.funnel.to_dict(); result.records  # the `filtered` artifact's rows

Input: the workspace's latest `traces` (from `ores synth`), or any JSONL/CSV/Parquet of traces
(`field` names the trace text: `trace`, O-Researcher's `current_answer`, a DRB `article`...).
A text without trace tags is checked as a bare report (the rules that need a trace are skipped).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import pyarrow as pa

from oresearch_cli.errors import InputError
from oresearch_cli.filtering.config import FilterConfig, JudgeSettings
from oresearch_cli.filtering.dedup import CODES as DEDUP_CODES
from oresearch_cli.filtering.dedup import find_duplicates
from oresearch_cli.filtering.funnel import Funnel, build_funnel
from oresearch_cli.filtering.judge import CODES as JUDGE_CODES
from oresearch_cli.filtering.judge import (
    JudgeCache,
    JudgeResult,
    JudgeTask,
    cache_key,
    judge_all,
    judge_reasons,
)
from oresearch_cli.filtering.judge import overall as judge_overall
from oresearch_cli.filtering.rules import RULE_ORDER, RULES, Item, run_rules
from oresearch_cli.records import pick_field, read_records, source_name
from oresearch_cli.workspace import ArtifactInfo, Workspace

STAGE = "filter"
KIND = "filtered"
ACCEPTED = "accepted"
REJECTED = "rejected"
TEXT_FIELDS = ("trace", "current_answer", "article", "report", "text", "response", "output")
QUESTION_FIELDS = ("question", "prompt", "query", "instruction", "seed")

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("language", pa.string()),
        ("verdict", pa.string()),
        ("reasons", pa.string()),
        ("details", pa.string()),
        ("judge_scores", pa.string()),
        ("judge_overall", pa.float64()),
        ("duplicate_of", pa.string()),
        ("trace", pa.string()),
        ("report", pa.string()),
        ("source_run", pa.string()),
        ("models", pa.string()),  # JSON role -> model that wrote the trace (synth's `models`), if known
        ("status", pa.string()),
    ]
)


def all_codes() -> dict[str, str]:
    """Every reason code a verdict can carry, with its meaning."""
    codes = {code: meaning for rule in RULES.values() for code, meaning in rule.codes.items()}
    return {**codes, **DEDUP_CODES, **JUDGE_CODES}


@dataclass
class FilterOptions:
    config: FilterConfig = dc_field(default_factory=FilterConfig)
    field: str | None = None
    fmt: str | None = None
    judge: bool = True
    llm_config: str | None = None  # YAML with the judge role
    llm_overrides: dict[str, Any] = dc_field(default_factory=dict)  # e.g. {"judge.model": ...}
    limit: int | None = None


@dataclass
class FilterResult:
    run_id: str
    records: list[dict[str, Any]]
    funnel: Funnel
    field: str
    judge_model: str | None = None
    judge_calls: int = 0
    judge_cached: int = 0
    judge_failed: int = 0


def load_items(
    ws: Workspace, source: str | None, options: FilterOptions
) -> tuple[list[Item], str, str, list[str | None]]:
    """(items, text field, source run or file name, each trace's `models` JSON when the input has one)."""
    if source is None:
        artifact = ws.require_latest("traces", "synth")
        rows = ws.read_artifact(artifact)
        origin = artifact.run_id
        records_data = rows
        name = str(artifact.path)
        if not rows:
            raise InputError(f"{name}: the traces artifact is empty; run `ores synth` first")
        text_field = options.field or "trace"
        if text_field not in rows[0]:
            raise InputError(
                f"{name}: no field {text_field!r}; pass --field with one of {', '.join(rows[0])}"
            )
    else:
        records = read_records(source, options.fmt)
        name = source_name(source)
        text_field = pick_field(records, options.field, TEXT_FIELDS, name)
        records_data = [r.data for r in records]
        origin = name
    question_field = next((f for f in QUESTION_FIELDS if f in records_data[0] and f != text_field), None)
    items: list[Item] = []
    models: list[str | None] = []
    seen: dict[str, int] = {}
    for row in records_data[: options.limit]:
        text = row.get(text_field)
        text = "" if text is None else str(text)
        raw_id = row.get("id")
        item_id = str(raw_id) if raw_id not in (None, "") else hashlib.sha256(text.encode()).hexdigest()[:16]
        if item_id in seen:
            seen[item_id] += 1
            item_id = f"{item_id}#{seen[item_id]}"
        else:
            seen[item_id] = 1
        question = row.get(question_field) if question_field else None
        language = row.get("language") or None
        items.append(
            Item(
                id=item_id,
                text=text,
                question="" if question is None else str(question),
                language=str(language) if language else None,
                status=str(row["status"]) if row.get("status") is not None else None,
                error=str(row["error"]) if row.get("error") else None,
            )
        )
        models.append(_models_json(row.get("models")))
    return items, text_field, origin, models


def _models_json(value: Any) -> str | None:
    """Synth's `models` (a JSON string or a mapping role -> model) as JSON; None when absent or unreadable."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, dict) and value:
        return json.dumps({str(k): str(v) for k, v in value.items()}, sort_keys=True)
    return None


def dedup_scores(
    outcomes: list[Any], cached: list[dict[str, Any] | None], settings: JudgeSettings
) -> list[float]:
    """Which of a group of near-duplicates stays: a trace whose cached judge scores pass, then one
    not judged yet, then one the judge rejected; within each, the higher judge score, then the rules'
    quality score. Returned as ranks (higher is better) for `find_duplicates`."""
    keys = []
    for outcome, scores in zip(outcomes, cached, strict=True):
        if scores is None:
            keys.append((1, 0.0, outcome.quality))
        else:
            tier = 0 if judge_reasons(scores, settings) else 2
            keys.append((tier, judge_overall(scores), outcome.quality))
    # Equal keys share a rank, so ties still go to the first trace as without a judge.
    rank = {key: float(n) for n, key in enumerate(sorted(set(keys)))}
    return [rank[key] for key in keys]


def run_filter(
    ws_path: str | Path,
    source: str | None = None,
    options: FilterOptions | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> FilterResult:
    options = options or FilterOptions()
    cfg = options.config
    # Read (and check) everything before the workspace is touched.
    llm_config = None
    if options.judge and cfg.judge.enabled:
        from oresearch_cli.llm import LLMConfigError, load_config

        try:
            llm_config = load_config(options.llm_config, options.llm_overrides or None, require=["judge"])
        except LLMConfigError as exc:
            raise LLMConfigError(
                f"{exc}; or pass --judge-model, or --no-judge to run the rules alone"
            ) from None
    ws = Workspace.open(ws_path)
    items, text_field, origin, models = load_items(ws, source, options)

    outcomes = run_rules(items, cfg, progress=(lambda n: progress("rules", n)) if progress else None)
    passed = [i for i, o in enumerate(outcomes) if o.passed]
    judge_model = llm_config.role("judge").model if llm_config is not None else None

    duplicate_of: dict[int, tuple[int, str, float]] = {}
    if cfg.dedup and len(passed) > 1:
        cached: list[dict[str, Any] | None] = [None] * len(passed)
        if judge_model is not None:  # scores from earlier runs pick the better of two duplicates
            lookup = JudgeCache.for_workspace(ws)
            try:
                cached = [
                    lookup.get(cache_key(judge_model, items[i].question, items[i].text)) for i in passed
                ]
            finally:
                lookup.close()
        found = find_duplicates(
            [items[i].question for i in passed],
            [outcomes[i].report for i in passed],
            dedup_scores([outcomes[i] for i in passed], cached, cfg.judge),
            cfg.question_threshold,
            cfg.report_threshold,
        )
        for local, dup in found.items():
            duplicate_of[passed[local]] = (passed[dup.of], dup.code, dup.similarity)

    config = {
        "filter": cfg.to_dict(),
        "judge_model": judge_model,
        "field": text_field,
        "source": origin,
    }
    if llm_config is not None:
        from oresearch_cli.llm import register_unlogged_calls

        register_unlogged_calls(ws, STAGE)  # a judge run killed before it could register its calls
    run = ws.start_run(STAGE, KIND, config, inputs=[origin])
    with run:
        judged: dict[int, JudgeResult] = {}
        calls = cached = failed = 0
        if llm_config is not None:
            from oresearch_cli.llm import CALL_LOG_FILE, CallLog, register_call_log

            to_judge = [i for i in passed if i not in duplicate_of]
            tasks = [
                JudgeTask(items[i].id, items[i].question, items[i].text, outcomes[i].report) for i in to_judge
            ]
            cache = JudgeCache.for_workspace(ws)
            log_path = run.dir / CALL_LOG_FILE
            try:
                with CallLog(log_path, run.run_id) as log:
                    results = judge_all(
                        tasks,
                        llm_config,
                        cfg.judge,
                        cache,
                        log,
                        progress=(lambda r: progress("judge", 1)) if progress else None,
                    )
            finally:
                cache.close()
            for i, result in zip(to_judge, results, strict=True):
                judged[i] = result
                cached += result.cached
                calls += 0 if result.cached else result.attempts
                failed += result.scores is None
        records = []
        judge_rejected = [False] * len(items)
        all_reasons: list[list[str]] = []
        for index, (item, outcome) in enumerate(zip(items, outcomes, strict=True)):
            reasons = outcome.reasons
            details: dict[str, Any] = {"mode": outcome.mode, **outcome.details}
            dup = duplicate_of.get(index)
            if dup is not None:
                reasons.append(dup[1])
                details["dedup"] = {"of": items[dup[0]].id, "code": dup[1], "similarity": dup[2]}
            result = judged.get(index)
            if result is not None:
                codes = judge_reasons(result.scores, cfg.judge)
                if codes:
                    judge_rejected[index] = True
                reasons += codes
                details["judge"] = {
                    "model": judge_model,
                    "cached": result.cached,
                    "attempts": result.attempts,
                    "error": result.error,
                    "malformed": result.raw or None,
                }
            all_reasons.append(reasons if reasons else [])
            record = {
                "id": item.id,
                "question": item.question,
                "language": outcome.language or item.language,
                "verdict": REJECTED if reasons else ACCEPTED,
                "reasons": json.dumps(reasons),
                "details": json.dumps(details, ensure_ascii=False, default=str),
                "judge_scores": json.dumps(result.scores, ensure_ascii=False)
                if result is not None and result.scores
                else None,
                "judge_overall": result.overall if result is not None else None,
                "duplicate_of": items[dup[0]].id if dup is not None else None,
                "trace": item.text,
                "report": outcome.report,
                "source_run": origin,
                "models": models[index],
                "status": "done",
            }
            run.append(record)
            records.append(record)
        run.finish(SCHEMA)
        if llm_config is not None:
            register_call_log(ws, run.run_id, run.dir / CALL_LOG_FILE)
    funnel = build_funnel(
        [o.fails for o in outcomes],
        [i in duplicate_of for i in range(len(items))],
        judge_rejected,
        judge_ran=llm_config is not None,
        enabled_rules=[r for r in RULE_ORDER if cfg.enabled(r)],
        reasons=[r for r in all_reasons if r],
    )
    if not cfg.dedup:
        funnel.rows = [r for r in funnel.rows if r.stage != "dedup"]
    return FilterResult(run.run_id, records, funnel, text_field, judge_model, calls, cached, failed)


def filtered_artifact(ws: Workspace, run: str | None = None) -> ArtifactInfo:
    """The verdicts (`filtered` artifact) of filter run `run`, or of the latest filter run.

    Not `ws.resolve_artifact(run)`: a judged run also has an `llm_calls` artifact, registered after
    the verdicts, and that one is the run's newest."""
    if run is None or run == KIND:
        return ws.require_latest(KIND, STAGE)
    info = ws.get_run(run)
    found = ws.artifacts(run_id=info.run_id, kind=KIND)
    if not found:
        raise InputError(
            f"run {info.run_id} ({info.stage}) has no filter verdicts; name a finished filter run "
            "(see `ores ws runs`)"
        )
    return found[0]


def explain(ws_path: str | Path, item_id: str, run_id: str | None = None) -> dict[str, Any]:
    """One trace's verdict from the latest `filtered` artifact (or run `run_id`)."""
    ws = Workspace.open(ws_path, create=False)
    artifact = filtered_artifact(ws, run_id)
    import pyarrow.parquet as pq

    table = pq.read_table(artifact.path)
    ids = table.column("id").to_pylist()
    matches = [i for i, v in enumerate(ids) if v == item_id] or [
        i for i, v in enumerate(ids) if v.startswith(item_id)
    ]
    if not matches:
        raise InputError(
            f'{artifact.run_id}: no trace {item_id!r}; list ids with `ores ws sql "select id, verdict from filtered"`'
        )
    if len(matches) > 1:
        raise InputError(f"{item_id!r} matches {len(matches)} traces in {artifact.run_id}; give the whole id")
    row = table.slice(matches[0], 1).to_pylist()[0]
    codes = all_codes()
    reasons = json.loads(row["reasons"])
    return {
        "run_id": artifact.run_id,
        "id": row["id"],
        "question": row["question"],
        "language": row["language"],
        "verdict": row["verdict"],
        "reasons": [{"code": c, "meaning": _meaning(c, codes)} for c in reasons],
        "details": json.loads(row["details"]),
        "judge_scores": json.loads(row["judge_scores"]) if row["judge_scores"] else None,
        "judge_overall": row["judge_overall"],
        "duplicate_of": row["duplicate_of"],
    }


def _meaning(code: str, codes: dict[str, str]) -> str:
    if code in codes:
        return codes[code]
    if code.startswith("trace:"):
        from oresearch_cli.trace import CODES

        return CODES.get(code[len("trace:") :], ("", ""))[1]
    return ""
