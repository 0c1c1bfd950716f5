"""`ores eval score`: score a system's reports the way DeepResearch Bench does, one row per task.

Input: an `ores eval run` (its `reports`), or any JSONL of reports (DRB's `{id, prompt, article}`,
ores trace rows, or rows with the text in `--field`). Each report gets:

- rule metrics (`scoring.rules`): always, with no endpoint; `rules_only` stops there;
- RACE (`scoring.drb_race`) with DRB's per-task criteria and weights, the articles first cleaned
  of citations (`scoring.clean`: by the judge as DRB does, cached). With a reference (DRB's
  reference file, or an earlier run: "is my new model better than my last one?") it is DRB's
  T / (T + R); without one it is pointwise, the criterion-weighted mean / 10, labelled so
  everywhere: it is not comparable with published RACE numbers. A task with no reference article
  is a failed row, never scored pointwise in secret.

Every judge call goes through the judge role into this run's call log (tokens and cost), and each
judgement is cached (cache/judge.sqlite), so a rerun of the same config calls the judge only for
what failed or is new. A judgement that fails is the row's error, counted in the summary and
left out of the means, never a 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from oresearch_cli.errors import InputError, WorkspaceError
from oresearch_cli.filtering.judge import JudgeCache, cache_key
from oresearch_cli.filtering.language import primary_language
from oresearch_cli.llm import CALLS_KIND, CallLog, LLMClient, LLMConfig
from oresearch_cli.records import read_records, source_name
from oresearch_cli.scoring import drb_race
from oresearch_cli.scoring.clean import Cleaned, clean_for_judging
from oresearch_cli.scoring.drb import (
    CRITERIA_FILE,
    DIMENSIONS,
    DrbTask,
    TaskCriteria,
    load_benchmark,
    load_criteria,
)
from oresearch_cli.scoring.rules import row_metrics, summarize_metrics
from oresearch_cli.stages.eval_settings import EvalSettings
from oresearch_cli.textutil import detect_language
from oresearch_cli.trace import parse, report_text
from oresearch_cli.workspace import ArtifactRecord, Progress, RunContext, StageSpec, Status, Workspace

RACE_CACHE_VERSION = "drb-race-v1"
TOP_LOGPROBS = (
    5  # alternatives per token asked for when scores are weighted  # judge cache rubric of DRB RACE replies
)
REPORT_FIELDS = ("report", "article", "trace", "text")  # where a row's report is, in this order
MODES = ("reference", "pointwise")


@dataclass
class ScoreRecord(ArtifactRecord):
    """One task's scores. RACE numbers are DRB's 0-1 shares (the board shows them x100); `rules`
    is the rule metrics as JSON text, so the schema stays fixed whatever they hold."""

    KIND: ClassVar[str] = "scores"

    id: str
    question: str = ""
    language: str = ""
    status: Status = Status.DONE
    error: str | None = None
    race_mode: str | None = None  # reference, pointwise; None when RACE was not asked for
    race_overall: float | None = None
    race_comprehensiveness: float | None = None
    race_insight: float | None = None
    race_instruction_following: float | None = None
    race_readability: float | None = None
    race_cached: bool = False
    race_attempts: int = 0
    race_coverage_problems: int = 0  # criteria the judge skipped or mangled (DRB scores anyway)
    race_weighted_overall: float | None = None  # `weighted`: from the judge's top logprobs (G-Eval)
    clean: str | None = None  # how the target was cleaned: llm, rules, none, rules-fallback
    clean_problem: str | None = None
    reference_clean: str | None = None
    # FACT (`scoring.fact`): DRB's citation accuracy and effective citations; `fact` is the task's
    # result as JSON (every pair with its verdict)
    fact_citations: int | None = None
    fact_supported: int | None = None
    fact_accuracy: float | None = None
    fact: str = "{}"
    # DeepResearchGym-style quality (`scoring.quality`): the six-dimension mean 0-10, its
    # probability-weighted form when the endpoint sent log probs, key-point recall when given
    quality_overall: float | None = None
    quality_weighted: float | None = None
    key_point_recall: float | None = None
    quality: str = "{}"
    rules: str = "{}"
    judge: str | None = None


SCORE = StageSpec.of("score", ScoreRecord)


@dataclass(frozen=True)
class ScoreItem:
    """A report to score: its task id, question, language and text, and its row (for rules)."""

    id: str
    question: str
    language: str
    report: str
    row: Mapping[str, Any]


@dataclass
class ScoreOptions:
    bench: str | None = "drb"  # drb: DRB's tasks and criteria; None: no benchmark (rules only)
    reference: str | None = None  # a file of {prompt|id, article} or an eval run id
    rules_only: bool = False
    race: bool = True
    fact: bool = False
    quality: bool = False
    weighted: bool = False  # RACE and quality scores also weighted by the judge's top logprobs (G-Eval)
    fact_extractor: str = "judge"  # judge: DRB's LLM extraction; rules: [n] markers and the reference list
    crawl: str = "auto"  # FACT's page fetcher
    field_name: str | None = None
    fmt: str | None = None
    retry_failed: bool = True  # failed judgements are redone on a rerun (successes are cached)
    fresh: bool = False  # judge everything again, reading nothing from the judge cache (a new run)
    limit: int | None = None
    settings: EvalSettings = field(default_factory=EvalSettings)


@dataclass
class ScoreSummary:
    run_id: str | None
    n_items: int
    n_scored: int = 0
    n_failed: int = 0
    mode: str | None = None
    race: drb_race.DrbSummary | None = None
    race_weighted: float | None = None  # mean probability-weighted overall, over the tasks that have one
    race_weighted_tasks: int = 0
    fact: Any = None  # scoring.fact.FactSummary
    quality: Any = None  # scoring.quality.QualitySummary
    clean_fallbacks: int = 0
    rules: dict[str, Any] = field(default_factory=dict)
    judge: str | None = None
    judge_calls: int = 0
    judge_cost_usd: float | None = None
    artifact: Any = None


# -- reading reports -------------------------------------------------------------------------------


def report_of(row: Mapping[str, Any], field_name: str | None) -> str:
    """The report of a row: `field_name`, else the first of REPORT_FIELDS it has; a trace's
    report is its `<suggested_answer>` (read by `trace`, the one owner of the tags)."""
    # A row with a `report` key (an eval run's) is taken at its word: no report is an empty one,
    # never the raw trace judged in its place.
    name = field_name or next(
        (f for f in REPORT_FIELDS if f in row and (f == "report" or row[f] is not None)), None
    )
    if name is None:
        return ""
    value = row.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(
            f"field {name!r} is {type(value).__name__}, not text; name the report's field with --field"
        )
    if name in ("trace", "text") or "<suggested_answer>" in value:
        return report_text(parse(value), bare_text_is_report=True) or ""
    return value


def _items_of(
    rows: Sequence[Mapping[str, Any]], where: str, field_name: str | None, *, need_id: bool = True
) -> list[ScoreItem]:
    """The reports of `rows`; without `need_id` (a reference file: DRB's rows are `{prompt,
    article}`, joined by prompt) a row without an id is named by its prompt's content id."""
    from oresearch_cli.stages.seed import content_id

    items: list[ScoreItem] = []
    seen: set[str] = set()
    for n, row in enumerate(rows, start=1):
        question = row.get("question") or row.get("prompt") or ""
        raw_id = row.get("id")
        if raw_id is None and not need_id and question:
            raw_id = content_id(str(question))
        if raw_id is None:
            raise InputError(f"{where}: row {n} has no id; give every report the id of its task")
        item_id = str(raw_id)
        if item_id in seen:
            raise InputError(f"{where}: id {item_id} appears twice; keep one report per task")
        seen.add(item_id)
        if field_name is not None and field_name not in row:
            raise InputError(
                f"{where}: row {n} has no field {field_name!r}; name the report's field with --field"
            )
        language = str(row.get("language") or "")
        items.append(ScoreItem(item_id, str(question), language, report_of(row, field_name), row))
    if not items:
        raise InputError(
            f"{where}: no reports; pass an `ores eval run` id or a JSONL of {{id, prompt, article}}"
        )
    return items


def load_reports(
    ws: Workspace,
    source: str | None,
    field_name: str | None = None,
    fmt: str | None = None,
    *,
    need_id: bool = True,
) -> tuple[list[ScoreItem], str]:
    """(the reports, the input's name): an eval run (by id), a file or '-', or the latest `reports`."""
    if source is None:
        artifact = ws.require_latest("reports", "eval run")
        return _items_of(ws.read_artifact(artifact), str(artifact.path), field_name), artifact.run_id
    if source != "-" and not Path(source).expanduser().exists():
        try:
            artifact = ws.resolve_artifact(source)
        except WorkspaceError:
            raise InputError(
                f"{source}: neither a file nor a run of this workspace; pass a JSONL of reports or an "
                "`ores eval run` id (`ores ws runs`)"
            ) from None
        return _items_of(ws.read_artifact(artifact), str(artifact.path), field_name), artifact.run_id
    rows = [r.data for r in read_records(source, fmt)]
    return _items_of(rows, source_name(source), field_name, need_id=need_id), source_name(source)


def load_references(ws: Workspace, reference: str) -> tuple[dict[str, str], dict[str, str], str]:
    """(article by prompt text, article by id, the reference's name) of a reference file
    (DRB's reference.jsonl: `{prompt, article}`) or an earlier eval run."""
    items, name = load_reports(ws, reference, need_id=False)
    by_prompt = {" ".join(i.question.split()): i.report for i in items if i.question and i.report.strip()}
    by_id = {i.id: i.report for i in items if i.report.strip()}
    if not by_prompt and not by_id:
        raise InputError(f"--reference {reference}: no article in it; expected rows of {{prompt, article}}")
    return by_prompt, by_id, name


# -- one task --------------------------------------------------------------------------------------


GENERATE = "generate"  # --bench: criteria generated by the judge for the reports' own questions


def _benchmark(bench: str | None) -> dict[str, tuple[DrbTask, TaskCriteria]]:
    """Tasks with criteria by prompt text (DRB joins by prompt) and by id: DRB's shipped ones, or
    a folder holding a criteria.jsonl in DRB's format (one `--bench generate` wrote, say)."""
    if bench is None or bench == GENERATE:
        return {}
    table: dict[str, tuple[DrbTask, TaskCriteria]] = {}
    if bench == "drb":
        for task, criteria in load_benchmark():
            table[" ".join(task.prompt.split())] = (task, criteria)
            table[f"id:{task.id}"] = (task, criteria)
        return table
    folder = Path(bench).expanduser()
    if not (folder / CRITERIA_FILE).is_file():
        raise InputError(
            f"--bench {bench}: RACE needs per-task criteria: `drb` (shipped), `generate` (the judge writes "
            f"them, as DRB did), or a folder with a {CRITERIA_FILE} in DRB's format"
        )
    for criteria in load_criteria(folder).values():
        task = DrbTask(criteria.id, criteria.prompt, task_language(criteria.prompt))
        table[" ".join(task.prompt.split())] = (task, criteria)
    return table


def task_language(prompt: str, given: str | None = None) -> str:
    """The language of a task's judge prompts, which DeepResearch Bench has in zh and en: `zh` for
    a question given as Chinese or detected as Chinese (`detect_language`'s script rule), else `en`."""
    if primary_language(given) == "zh":
        return "zh"
    return "zh" if detect_language(prompt) == "zh" else "en"


async def generated_benchmark(
    llm: Any, cache: JudgeCache, items: Sequence[ScoreItem], samples: int, concurrency: int, run: RunContext
) -> tuple[dict[str, tuple[DrbTask, TaskCriteria]], dict[str, str]]:
    """Criteria the judge generates for each question (DRB's method: weights sampled `samples`
    times and averaged, then the criteria of each dimension), cached, and written beside the run's
    scores as criteria.jsonl (`--bench <that folder>` reuses them). Returns the table and, by
    prompt, why a task has none."""
    from oresearch_cli.scoring.criteria_gen import generate_all, write_criteria

    prompts = list(dict.fromkeys(" ".join(i.question.split()) for i in items if i.question.strip()))
    language = {" ".join(i.question.split()): i.language for i in items}
    tasks = [
        DrbTask(n, prompt, task_language(prompt, language.get(prompt)))
        for n, prompt in enumerate(prompts, start=1)
    ]
    results = await generate_all(llm, tasks, cache, samples=samples, concurrency=concurrency)
    table: dict[str, tuple[DrbTask, TaskCriteria]] = {}
    failed: dict[str, str] = {}
    for task, result in zip(tasks, results, strict=True):
        if result.criteria is not None:
            table[task.prompt] = (task, result.criteria)
        else:
            failed[task.prompt] = result.error or "no usable criteria"
    if table:
        path = write_criteria(run.dir, [c for _, c in table.values()])
        run.add_artifact("criteria", path, len(table), format="jsonl")
    return table, failed


def _task_of(
    item: ScoreItem, tasks: Mapping[str, tuple[DrbTask, TaskCriteria]]
) -> tuple[DrbTask, TaskCriteria] | None:
    return tasks.get(" ".join(item.question.split())) or tasks.get(f"id:{item.id}")


async def _race(
    llm: Any,
    cache: JudgeCache,
    item: ScoreItem,
    task: DrbTask,
    criteria: TaskCriteria,
    reference: str | None,
    settings: EvalSettings,
    record: ScoreRecord,
    weighted: bool = False,
) -> None:
    """Fill `record`'s RACE fields (or its error); with `weighted` also the probability-weighted
    overall where the endpoint sends log probs."""
    target = await clean_for_judging(llm, item.report, task.language, settings.clean, cache, trace_id=item.id)
    record.clean, record.clean_problem = target.method, target.problem
    cleaned_reference: Cleaned | None = None
    if reference is not None:
        cleaned_reference = await clean_for_judging(
            llm, reference, task.language, settings.clean, cache, trace_id=f"{item.id}:reference"
        )
        record.reference_clean = cleaned_reference.method
    ref_text = cleaned_reference.text if cleaned_reference is not None else None
    model = llm.config.role("judge").model
    mode = "reference" if ref_text is not None else "pointwise"
    key = cache_key(
        model,
        task.prompt,
        f"{mode}\x00{settings.judge_max_chars}\x00{settings.judge_analysis_chars}\x00{settings.judge_integer_scores}\x00{weighted}\x00{target.text}\x00{ref_text or ''}",
        RACE_CACHE_VERSION,
    )
    hit = cache.get(key)
    score_of = drb_race.pointwise if ref_text is None else drb_race.normalized
    if hit is not None and isinstance(hit.get("reply"), dict):
        score = score_of(drb_race.weighted_scores(hit["reply"], criteria))
        if isinstance(hit.get("weighted_reply"), dict):
            record.race_weighted_overall = score_of(
                drb_race.weighted_scores(hit["weighted_reply"], criteria)
            ).overall
        record.race_cached = True
        record.race_coverage_problems = len(
            drb_race.coverage_problems(hit["reply"], criteria, pointwise=ref_text is None)
        )
    else:
        judged = await drb_race.judge_task(
            llm,
            task,
            criteria,
            target.text,
            ref_text,
            max_attempts=settings.judge_attempts,
            max_chars=settings.judge_max_chars,
            complete=settings.complete,
            analysis_chars=settings.judge_analysis_chars,
            integer_scores=settings.judge_integer_scores,
            top_logprobs=TOP_LOGPROBS if weighted else None,
        )
        record.race_attempts = judged.attempts
        if judged.score is None or judged.reply is None:
            record.error = _join(record.error, f"race: {judged.error or 'no usable judgement'}")
            return
        stored = {"reply": judged.reply}
        if judged.weighted_reply is not None:
            stored["weighted_reply"] = judged.weighted_reply
        cache.put(key, model, stored, rubric=RACE_CACHE_VERSION)
        if judged.weighted_score is not None:
            record.race_weighted_overall = judged.weighted_score.overall
        score = judged.score
        record.race_coverage_problems = len(judged.problems)
    record.race_overall = score.overall
    for dim in DIMENSIONS:
        setattr(record, f"race_{dim}", score.dimensions[dim])


async def _fact(
    llm: Any, crawl: Any, cache: JudgeCache, item: ScoreItem, options: ScoreOptions, record: ScoreRecord
) -> None:
    from oresearch_cli.scoring.fact import FactSettings, fact_task

    settings = FactSettings(extractor=options.fact_extractor)  # type: ignore[arg-type]
    result = await fact_task(
        llm,
        crawl,
        item.id,
        item.question,
        item.report,
        settings=settings,
        cache=cache,
        language=record.language or None,
    )
    record.fact = json.dumps(result.to_row(), ensure_ascii=False, default=str)
    if result.error is not None:
        record.error = _join(record.error, f"fact: {result.error}")
        return
    record.fact_citations, record.fact_supported, record.fact_accuracy = (
        result.citations,
        result.supported,
        result.accuracy,
    )
    if result.failed_calls:
        record.error = _join(record.error, f"fact: {result.failed_calls} judge call(s) failed")


async def _quality(
    llm: Any, cache: JudgeCache, item: ScoreItem, options: ScoreOptions, record: ScoreRecord
) -> None:
    from oresearch_cli.scoring.quality import QualityItem, QualitySettings, quality_all

    points = item.row.get("key_points")
    settings = QualitySettings(weighted=options.weighted)
    [result] = await quality_all(
        llm, [QualityItem(item.id, item.question, item.report, points)], settings, cache
    )
    record.quality = json.dumps(quality_row(result), ensure_ascii=False)
    if result.dimensions is None:
        record.error = _join(record.error, f"quality: {result.error or 'no usable judgement'}")
        return
    record.quality_overall, record.quality_weighted = result.overall, result.weighted_overall
    if result.key_points is not None:
        record.key_point_recall = result.key_points.recall
        if result.key_points.verdicts is None:
            record.error = _join(
                record.error, f"key points: {result.key_points.error or 'no usable judgement'}"
            )


def quality_row(result: Any) -> dict[str, Any]:
    """A QualityResult as JSON; `quality_result` reads it back."""
    dims = None
    if result.dimensions is not None:
        dims = {
            d: {"score": v.score, "weighted_score": v.weighted_score} for d, v in result.dimensions.items()
        }
    points = None
    if result.key_points is not None:
        points = {
            "points": list(result.key_points.points),
            "verdicts": result.key_points.verdicts,
            "error": result.key_points.error,
        }
    return {"dimensions": dims, "key_points": points, "error": result.error, "cached": result.cached}


def quality_result(item_id: str, data: Mapping[str, Any]) -> Any:
    from oresearch_cli.scoring.quality import DimensionScore, KeyPointResult, QualityResult

    dims = data.get("dimensions")
    points = data.get("key_points")
    return QualityResult(
        item_id,
        None
        if dims is None
        else {d: DimensionScore(v["score"], v.get("weighted_score")) for d, v in dims.items()},
        None
        if points is None
        else KeyPointResult(tuple(points["points"]), points.get("verdicts"), error=points.get("error")),
        error=data.get("error"),
    )


def fact_result(data: Mapping[str, Any]) -> Any:
    """A FACT result back from its JSON row (`FactTaskResult.to_row`)."""
    from dataclasses import fields as dataclass_fields

    from oresearch_cli.scoring.fact import FactPair, FactTaskResult

    names = {f.name for f in dataclass_fields(FactTaskResult)} - {"pairs"}
    pairs = [FactPair(**p) for p in data.get("pairs") or []]
    return FactTaskResult(pairs=pairs, **{k: v for k, v in data.items() if k in names})


def _join(first: str | None, second: str) -> str:
    return second if first is None else f"{first}; {second}"


async def score_one(
    item: ScoreItem,
    llm: Any | None,
    cache: JudgeCache | None,
    tasks: Mapping[str, tuple[DrbTask, TaskCriteria]],
    references: tuple[dict[str, str], dict[str, str]] | None,
    options: ScoreOptions,
    crawl: Any = None,
    criteria_failures: Mapping[str, str] | None = None,
) -> ScoreRecord:
    """The scores of one report; a failed judgement is the row's error (status failed)."""
    record = ScoreRecord(item.id, item.question, item.language)
    # A trace row is measured on its trace (tool calls, pages observed), a bare report on itself.
    traced = isinstance(item.row.get("trace"), str) and bool(item.row["trace"]) and options.field_name is None
    if traced:
        metrics = row_metrics(item.row, "trace", item.language or None)
    else:
        metrics = row_metrics({**item.row, "report": item.report}, "report", item.language or None)
    record.rules = json.dumps(metrics.to_dict(), ensure_ascii=False)
    if options.rules_only or llm is None or cache is None:
        return record
    record.judge = llm.config.role("judge").model
    if options.race:
        await _race_task(llm, cache, item, tasks, references, options, record, criteria_failures or {})
    if options.fact:
        await _fact(llm, crawl, cache, item, options, record)
    if options.quality:
        await _quality(llm, cache, item, options, record)
    if record.error is not None:
        record.status = Status.FAILED
    return record


async def _race_task(
    llm: Any,
    cache: JudgeCache,
    item: ScoreItem,
    tasks: Mapping[str, tuple[DrbTask, TaskCriteria]],
    references: tuple[dict[str, str], dict[str, str]] | None,
    options: ScoreOptions,
    record: ScoreRecord,
    criteria_failures: Mapping[str, str],
) -> None:
    found = _task_of(item, tasks)
    if found is None:
        why = criteria_failures.get(" ".join(item.question.split()))
        record.error = (
            f"race: the judge could not write this task's criteria ({why})"
            if why
            else "race: not a task of the benchmark (no criteria for its prompt or id)"
        )
        return
    task, criteria = found
    record.language = record.language or task.language
    reference: str | None = None
    record.race_mode = "pointwise"
    if references is not None:
        record.race_mode = "reference"
        by_prompt, by_id = references
        reference = by_prompt.get(" ".join(task.prompt.split())) or by_id.get(item.id)
        if reference is None:
            record.error = f"race: the reference {options.reference} has no article for this task"
            return
    await _race(llm, cache, item, task, criteria, reference, options.settings, record, options.weighted)


# -- the run ---------------------------------------------------------------------------------------


class FreshCache(JudgeCache):
    """The judge cache for a `fresh` run: judgements are written, none is read, so the same judge
    judges again (`ores eval agree` of one judge with itself measures its own noise)."""

    def __init__(self, cache: JudgeCache) -> None:  # noqa: D107 - shares the open cache's connection
        self.__dict__.update(cache.__dict__)

    def get(self, key: str) -> None:
        return None


def score_config(
    options: ScoreOptions, input_name: str, reference_name: str | None, judge: str | None
) -> dict[str, Any]:
    """What decides a score, hashed for resume: the input, the judge, the reference, the settings."""
    s = options.settings
    return {
        "input": input_name,
        "bench": options.bench,
        "mode": None
        if options.rules_only or not options.race
        else ("reference" if reference_name else "pointwise"),
        "reference": reference_name,
        "rules_only": options.rules_only,
        "metrics": [m for m in ("race", "fact", "quality") if getattr(options, m)],
        "weighted": options.weighted,
        "fact_extractor": options.fact_extractor if options.fact else None,
        "judge": judge,
        "clean": s.clean,
        "judge_max_chars": s.judge_max_chars,
        "judge_attempts": s.judge_attempts,
        "complete": s.complete,
        "judge_analysis_chars": s.judge_analysis_chars,
        "judge_integer_scores": s.judge_integer_scores,
        "criteria_samples": s.criteria_samples if options.bench == GENERATE else None,
        "field": options.field_name,
        # a fresh run never resumes an earlier one: its time is part of what it is
        "fresh": time.time() if options.fresh else None,
    }


def summarize_scores(rows: Sequence[Mapping[str, Any]]) -> ScoreSummary:
    """The summary of a `scores` artifact: DRB's means over the scored tasks, failures counted."""
    summary = ScoreSummary(None, len(rows))
    results: list[drb_race.DrbScore | None] = []
    metrics = []
    facts: list[Any] = []
    qualities: list[Any] = []
    weighted_overalls: list[float] = []
    from oresearch_cli.scoring.rules import ReportMetrics

    names = set(ReportMetrics.__dataclass_fields__)
    for row in rows:
        failed = str(row.get("status")) == Status.FAILED
        summary.n_failed += failed
        summary.n_scored += not failed
        summary.mode = summary.mode or row.get("race_mode")
        if row.get("race_weighted_overall") is not None:
            weighted_overalls.append(float(row["race_weighted_overall"]))
        summary.judge = summary.judge or row.get("judge")
        summary.clean_fallbacks += row.get("clean") == "rules-fallback"
        if row.get("race_mode"):
            if row.get("race_overall") is None:
                results.append(None)
            else:
                dims = {d: float(row[f"race_{d}"]) for d in DIMENSIONS}
                results.append(drb_race.DrbScore(dims, float(row["race_overall"])))
        if fact := json.loads(row.get("fact") or "{}"):
            facts.append(fact_result(fact))
        if quality := json.loads(row.get("quality") or "{}"):
            qualities.append(quality_result(str(row["id"]), quality))
        data = json.loads(row.get("rules") or "{}")
        if data:
            data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
            metrics.append(ReportMetrics(**data))
    summary.race = drb_race.summarize(results) if results else None
    if weighted_overalls:
        summary.race_weighted = sum(weighted_overalls) / len(weighted_overalls)
        summary.race_weighted_tasks = len(weighted_overalls)
    if facts:
        from oresearch_cli.scoring.fact import summarize_fact

        summary.fact = summarize_fact(facts)
    if qualities:
        from oresearch_cli.scoring.quality import summarize_quality

        summary.quality = summarize_quality(qualities)
    summary.rules = summarize_metrics(metrics) if metrics else {}
    return summary


async def run_score(
    ws: Workspace,
    source: str | None,
    options: ScoreOptions,
    llm_config: LLMConfig | None,
    *,
    progress: Progress | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> ScoreSummary:
    """Score every report of `source` not scored earlier under the same config; see the module
    docstring. Everything a user can get wrong (no reports, unknown run, no judge, unreachable
    judge, a reference without articles) raises before the run is registered."""
    items, input_name = load_reports(ws, source, options.field_name, options.fmt)
    judged = not options.rules_only
    if judged and not (options.race or options.fact or options.quality):
        raise InputError("ores eval score: no metric left to judge; drop --no-race or add --fact / --quality")
    tasks = _benchmark(options.bench) if judged and options.race else {}
    references = None
    reference_name = None
    if judged and options.reference:
        by_prompt, by_id, reference_name = load_references(ws, options.reference)
        references = (by_prompt, by_id)
    judge_model = None
    if judged:
        if llm_config is None:
            raise InputError(
                "ores eval score: RACE needs a judge; set --judge-model / --judge-base-url, or pass --rules-only"
            )
        judge_model = llm_config.role("judge").model
        from oresearch_cli.stages.research_run import check_reachable

        await check_reachable(list(llm_config.role("judge").base_urls), "judge endpoint", "--judge-base-url")
    config = score_config(options, input_name, reference_name, judge_model)
    async with contextlib.AsyncExitStack() as stack:
        run: RunContext = stack.enter_context(
            ws.start_run(
                SCORE,
                config,
                inputs=[input_name, *([reference_name] if reference_name else [])],
                resume=True,
                progress=progress,
            )
        )
        llm = cache = None
        if judged and llm_config is not None:
            calls = stack.enter_context(CallLog(run.open_log(CALLS_KIND), run.run_id))
            llm = await stack.enter_async_context(LLMClient(llm_config, calls))
            store = JudgeCache.for_workspace(ws)
            stack.callback(store.close)
            cache = FreshCache(store) if options.fresh else store
        crawl = None
        if judged and options.fact:
            from oresearch_cli.tools import open_toolbox

            # pages only, no summarizer: the judge must read what the page says
            crawl = await stack.enter_async_context(open_toolbox(ws, search=None, crawl=options.crawl))
        todo = [i for i in items if not run.is_done(i.id, options.retry_failed)]
        criteria_failures: dict[str, str] = {}
        if judged and options.race and options.bench == GENERATE and llm is not None and cache is not None:
            tasks, criteria_failures = await generated_benchmark(
                llm, cache, items, options.settings.criteria_samples, options.settings.judge_concurrency, run
            )
        if options.limit is not None:
            todo = todo[: options.limit]
        run.progress.start(
            "score",
            len(todo),
            f"{run.run_id}: {len(todo)} reports to score ({len(items) - len(todo)} done earlier)",
        )
        gate = asyncio.Semaphore(options.settings.judge_concurrency)
        counts = {"scored": 0, "failed": 0}

        async def one(item: ScoreItem) -> None:
            async with gate:
                record = await score_one(
                    item, llm, cache, tasks, references, options, crawl, criteria_failures
                )
            run.append(record)
            counts["failed" if record.status == Status.FAILED else "scored"] += 1
            if on_record is not None:
                on_record(record.to_row())
            shown = (
                f"{record.race_overall:.3f}" if record.race_overall is not None else (record.error or "rules")
            )
            run.progress.advance(
                item=f"{item.id}: {shown}", stats=f"scored {counts['scored']} failed {counts['failed']}"
            )

        pending = [asyncio.ensure_future(one(i)) for i in todo]
        try:
            await asyncio.gather(*pending)
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if llm is not None:
            judge_totals = calls.totals()
    assert run.artifact is not None
    summary = summarize_scores(ws.read_artifact(run.artifact))
    summary.run_id, summary.artifact = run.run_id, run.artifact
    if judged:
        summary.judge_calls = judge_totals.calls
        summary.judge_cost_usd = judge_totals.cost_usd
    return summary
