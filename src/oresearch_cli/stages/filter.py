"""`ores filter`: hard rules, dedup and the LLM judge over traces; a verdict with reasons per trace.

    result = run_filter(ws_path, source=None, options=FilterOptions(judge=False))
    result.funnel.to_dict(); result.records  # the `filtered` artifact's rows

Input: the workspace's latest `traces` (from `ores synth`), or any JSONL/CSV/Parquet of traces
(`field` names the trace text: `trace`, O-Researcher's `current_answer`, a DRB `article`...).
A text without trace tags is checked as a bare report (the rules that need a trace are skipped).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from oresearch_cli.errors import InputError, OresError
from oresearch_cli.filtering.config import FilterConfig, JudgeSettings
from oresearch_cli.filtering.dedup import CODES as DEDUP_CODES
from oresearch_cli.filtering.dedup import find_duplicates
from oresearch_cli.filtering.funnel import Funnel, build_funnel
from oresearch_cli.filtering.judge import CODES as JUDGE_CODES
from oresearch_cli.filtering.judge import (
    JudgeCache,
    JudgeResult,
    JudgeStopped,
    JudgeTask,
    cache_key,
    judge_all,
    judge_reasons,
)
from oresearch_cli.filtering.judge import overall as judge_overall
from oresearch_cli.filtering.rules import RULE_ORDER, RULES, Item, Outcome, RuleStats, rule_stats, run_rules
from oresearch_cli.records import (
    QUESTION_FIELDS,
    TRACE_FIELDS,
    find_field,
    pick_field,
    read_records,
    source_name,
)
from oresearch_cli.workspace import (
    ArtifactInfo,
    ArtifactRecord,
    NoProgress,
    Progress,
    RunContext,
    StageSpec,
    Status,
    Workspace,
)

if TYPE_CHECKING:
    from oresearch_cli.agent.authorship import Authorship

ACCEPTED = "accepted"
REJECTED = "rejected"


@dataclass
class FilterRecord(ArtifactRecord):
    """A row of `filtered`: one trace's verdict and every reason. `reasons`, `details`,
    `judge_scores` and `models` (role -> model that wrote the trace, when known) are JSON text."""

    KIND: ClassVar[str] = "filtered"

    id: str
    question: str
    language: str | None
    verdict: str
    reasons: str
    details: str
    judge_scores: str | None
    judge_overall: float | None
    duplicate_of: str | None
    trace: str
    report: str
    source_run: str
    models: str | None
    status: Status = Status.DONE


FILTER = StageSpec.of("filter", FilterRecord)
STAGE = FILTER.name
KIND = FILTER.kind


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
    check_endpoint: bool = True  # fail before the run when the judge's endpoint does not answer


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
    rules: list[RuleStats] = dc_field(default_factory=list)


@dataclass
class Inputs:
    """The traces to filter, read and checked before the workspace is touched."""

    items: list[Item]
    field: str  # the field that held the trace text
    origin: str  # the source run, or the file's name
    models: list[str | None]  # each trace's `models` JSON, when the input has one
    authorship: list[Authorship | None]  # who wrote each trace's pieces, from its `steps` log


def load_items(ws: Workspace, source: str | None, options: FilterOptions) -> Inputs:
    """The latest `traces` artifact, or a JSONL/CSV/Parquet file (or '-') of traces."""
    if source is None:
        artifact = ws.require_latest("traces", "synth")
        rows = ws.read_artifact(artifact)
        origin = artifact.run_id
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
        text_field = pick_field(records, options.field, TRACE_FIELDS, name)
        rows = [r.data for r in records]
        origin = name
    question_field = find_field(rows[0], QUESTION_FIELDS, exclude=(text_field,))
    items: list[Item] = []
    models: list[str | None] = []
    seen: dict[str, int] = {}
    rows = rows[: options.limit]
    authorship = _authorship(rows)
    for row, written in zip(rows, authorship, strict=True):
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
                authorship=written.to_dict() if written is not None else None,
            )
        )
        models.append(_models_json(row.get("models")))
    return Inputs(items, text_field, origin, models, authorship)


def _authorship(rows: list[dict[str, Any]]) -> list[Authorship | None]:
    """Who wrote each trace's pieces, from synth's `steps` log; None for a row without one (the
    agent is imported only when some row has a log)."""
    if not any(row.get("steps") for row in rows):
        return [None] * len(rows)
    from oresearch_cli.agent.authorship import authorship_of

    return [authorship_of(row.get("steps")) for row in rows]


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


def judge_config(options: FilterOptions) -> Any:
    """The LLM configuration with a usable judge role, or None when the judge does not run."""
    if not (options.judge and options.config.judge.enabled):
        return None
    from oresearch_cli.llm import LLMConfigError, load_config

    try:
        return load_config(options.llm_config, options.llm_overrides or None, require=["judge"])
    except LLMConfigError as exc:
        raise LLMConfigError(f"{exc}; or pass --judge-model, or --no-judge to run the rules alone") from None


# -- the steps: rules -> dedup -> judge -> rows ---------------------------------------------------


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


@dataclass(frozen=True)
class Duplicate:
    of: int  # index of the trace that stays
    code: str
    similarity: float


def find_dups(
    ws: Workspace, items: list[Item], outcomes: list[Outcome], cfg: FilterConfig, judge_model: str | None
) -> dict[int, Duplicate]:
    """Near-duplicates among the traces that passed the rules: index -> the one kept instead.
    Judge scores cached by earlier runs pick the better of two."""
    passed = [i for i, o in enumerate(outcomes) if o.passed]
    if not cfg.dedup or len(passed) < 2:
        return {}
    cached: list[dict[str, Any] | None] = [None] * len(passed)
    if judge_model is not None:
        lookup = JudgeCache.for_workspace(ws)
        try:
            cached = [lookup.get(cache_key(judge_model, items[i].question, items[i].text)) for i in passed]
        finally:
            lookup.close()
    found = find_duplicates(
        [items[i].question for i in passed],
        [outcomes[i].report for i in passed],
        dedup_scores([outcomes[i] for i in passed], cached, cfg.judge),
        cfg.question_threshold,
        cfg.report_threshold,
    )
    return {
        passed[local]: Duplicate(passed[dup.of], dup.code, dup.similarity) for local, dup in found.items()
    }


def uncached(ws: Workspace, model: str, tasks: list[JudgeTask]) -> int:
    """How many of `tasks` the judge cache has no scores for (each of those costs a call)."""
    if not tasks:
        return 0
    lookup = JudgeCache.for_workspace(ws)
    try:
        return sum(lookup.get(cache_key(model, t.question, t.text)) is None for t in tasks)
    finally:
        lookup.close()


async def check_judge_endpoint(llm_config: Any, timeout: float = 5.0) -> None:
    """Fail before the run starts when the judge's endpoint does not answer at all."""
    from oresearch_cli.llm.discover import first_unreachable

    dead = await first_unreachable(llm_config.role("judge").base_urls, timeout)
    if dead is not None:
        url, why = dead
        raise OresError(
            f"judge endpoint {url} is unreachable ({why}); start it (e.g. `ores serve`) or point "
            "--judge-base-url / ORES_JUDGE_BASE_URL / OPENAI_BASE_URL at a running one, or pass --no-judge"
        )


def check_judged(results: list[JudgeResult]) -> None:
    """Stop when the judge's endpoint failed every call it was asked (it went away during the run,
    or never answered): rejecting every trace `judge-failed` would say nothing about the traces.
    A reply that did not parse, or an endpoint failing some of the calls, stays per trace."""
    asked = [r for r in results if not r.cached]
    failed = [r for r in asked if r.scores is None and (r.error or "").startswith("endpoint:")]
    if asked and len(failed) == len(asked):
        detail = (failed[0].error or "").removeprefix("endpoint:").strip()
        raise OresError(
            f"filter: the judge gave no score for any of {len(asked)} traces ({detail}); start the "
            "judge's endpoint or fix its settings and rerun, or pass --no-judge for the rules alone"
        )


async def judge(
    stack: contextlib.AsyncExitStack,
    run: RunContext,
    llm_config: Any,
    tasks: list[JudgeTask],
    settings: JudgeSettings,
) -> list[JudgeResult]:
    """The judge over `tasks`, its calls logged by the run, its client and cache held by `stack`."""
    from oresearch_cli.llm import CALLS_KIND, CallLog, LLMClient

    cache = JudgeCache.for_workspace(run.ws)
    stack.callback(cache.close)
    calls = stack.enter_context(CallLog(run.open_log(CALLS_KIND), run.run_id))
    llm = await stack.enter_async_context(LLMClient(llm_config, calls))
    run.progress.start("judge", len(tasks))
    try:
        return await judge_all(
            tasks, llm, settings, cache, progress=lambda _: run.progress.advance(), stop_on_fatal=True
        )
    except JudgeStopped as exc:
        raise JudgeStopped(
            f"{exc} (filter stopped; the scores given so far are cached, so the rerun after the fix "
            "does not ask for them again)"
        ) from None


def verdict_rows(
    inputs: Inputs,
    outcomes: list[Outcome],
    duplicate_of: dict[int, Duplicate],
    judged: dict[int, JudgeResult],
    cfg: FilterConfig,
    judge_model: str | None,
) -> list[FilterRecord]:
    """One `filtered` row per trace: every reason of the rules, dedup and the judge."""
    items = inputs.items
    rows = []
    for index, (item, outcome) in enumerate(zip(items, outcomes, strict=True)):
        reasons = outcome.reasons
        details: dict[str, Any] = {"mode": outcome.mode, **outcome.details}
        dup = duplicate_of.get(index)
        if dup is not None:
            reasons.append(dup.code)
            details["dedup"] = {"of": items[dup.of].id, "code": dup.code, "similarity": dup.similarity}
        result = judged.get(index)
        if result is not None:
            reasons += judge_reasons(result.scores, cfg.judge)
            details["judge"] = {
                "model": judge_model,
                "cached": result.cached,
                "attempts": result.attempts,
                "error": result.error,
                "malformed": result.raw or None,
            }
        rows.append(
            FilterRecord(
                id=item.id,
                question=item.question,
                language=outcome.language or item.language,
                verdict=REJECTED if reasons else ACCEPTED,
                reasons=json.dumps(reasons),
                details=json.dumps(details, ensure_ascii=False, default=str),
                judge_scores=json.dumps(result.scores, ensure_ascii=False)
                if result is not None and result.scores
                else None,
                judge_overall=result.overall if result is not None else None,
                duplicate_of=items[dup.of].id if dup is not None else None,
                trace=item.text,
                report=outcome.report,
                source_run=inputs.origin,
                models=inputs.models[index],
            )
        )
    return rows


async def run_filter(
    ws_path: str | Path,
    source: str | None = None,
    options: FilterOptions | None = None,
    progress: Progress | None = None,
) -> FilterResult:
    """Rules -> dedup -> judge -> rows, as one `filter` run. Everything is read and checked (the
    input, the judge's configuration, its endpoint when a trace needs a call) before the run
    starts. A judge endpoint that rejects the key or does not know the model, or that fails every
    call, stops the run with an `OresError` (the run marked failed, the scores given cached); a
    reply that does not parse stays that trace's `judge-failed`."""
    options = options or FilterOptions()
    cfg = options.config
    progress = progress or NoProgress()
    llm_config = judge_config(options)
    ws = Workspace.open(ws_path)
    inputs = load_items(ws, source, options)
    items = inputs.items

    progress.start("rules", len(items))
    outcomes = run_rules(items, cfg, progress=lambda n: progress.advance(n))
    judge_model = llm_config.role("judge").model if llm_config is not None else None
    duplicate_of = find_dups(ws, items, outcomes, cfg, judge_model)

    config = {
        "filter": cfg.to_dict(),
        "judge_model": judge_model,
        "field": inputs.field,
        "source": inputs.origin,
    }
    judged: dict[int, JudgeResult] = {}
    to_judge: list[int] = []
    tasks: list[JudgeTask] = []
    if llm_config is not None:
        to_judge = [i for i, o in enumerate(outcomes) if o.passed and i not in duplicate_of]
        tasks = [
            JudgeTask(items[i].id, items[i].question, items[i].text, outcomes[i].report) for i in to_judge
        ]
        if options.check_endpoint and judge_model is not None and uncached(ws, judge_model, tasks):
            await check_judge_endpoint(llm_config)
    async with contextlib.AsyncExitStack() as stack:
        run = stack.enter_context(ws.start_run(FILTER, config, inputs=[inputs.origin], progress=progress))
        if llm_config is not None:
            results = await judge(stack, run, llm_config, tasks, cfg.judge)
            check_judged(results)
            judged = dict(zip(to_judge, results, strict=True))
        rows = verdict_rows(inputs, outcomes, duplicate_of, judged, cfg, judge_model)
        for row in rows:
            run.append(row)

    funnel = build_funnel(
        [o.fails for o in outcomes],
        [i in duplicate_of for i in range(len(items))],
        [i in judged and bool(judge_reasons(judged[i].scores, cfg.judge)) for i in range(len(items))],
        judge_ran=llm_config is not None,
        enabled_rules=[r for r in RULE_ORDER if cfg.enabled(r)],
        reasons=[json.loads(r.reasons) for r in rows if r.verdict == REJECTED],
        authorship=_total_authorship(inputs.authorship),
    )
    if not cfg.dedup:
        funnel.rows = [r for r in funnel.rows if r.stage != "dedup"]
    results = list(judged.values())
    return FilterResult(
        run.run_id,
        [r.to_row() for r in rows],
        funnel,
        inputs.field,
        judge_model,
        judge_calls=sum(0 if r.cached else r.attempts for r in results),
        judge_cached=sum(r.cached for r in results),
        judge_failed=sum(r.scores is None for r in results),
        rules=rule_stats(outcomes, cfg),
    )


def _total_authorship(authorship: list[Authorship | None]) -> Authorship | None:
    """The input's authorship summed; None when no trace has a steps log."""
    if all(a is None for a in authorship):
        return None
    from oresearch_cli.agent.authorship import total_authorship

    return total_authorship(authorship)


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

    ws.verify_artifact(artifact)  # a changed or corrupt file: one line naming it, not a traceback
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
