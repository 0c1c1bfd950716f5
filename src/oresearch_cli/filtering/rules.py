"""The hard rules: fast, named, individually switchable checks, each rejecting with reason codes.

Every trace is parsed once, validated once (`oresearch_cli.trace.validate`) and its report
analyzed once; each rule then reads what it needs from that. Rules run in rule order and all of
them run on every trace, so a rejected trace carries every reason, and the funnel can say how many
traces are left after each rule.

Reason codes. Codes of the trace module (`oresearch_cli.trace.CODES`) keep their name where a
dedicated rule owns them (`tool-calls-above-max`, `report-missing-section`, `citation-unresolved`,
`reference-url-not-observed`); every other *error* the validator finds is reported by the
`validation` rule as `trace:<code>` (e.g. `trace:unclosed-tag`). Warnings never reject; they are
counted in `details.validation.warnings`. `RULES` lists each rule with its codes and meaning.

Speed (benchmarks/bench_filter.py): parsing, validation and report analysis are the trace
module's and take most of the time; the language check, the costliest of ours, runs once per
batch (`evaluate_batch`, `oresearch_cli.filtering.language`). A batch runs in worker processes
when it is big enough (`FilterConfig.workers`).
"""

from __future__ import annotations

import os
import re
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from oresearch_cli.filtering.config import FilterConfig
from oresearch_cli.filtering.language import detect_languages
from oresearch_cli.trace import (
    Bounds,
    CrawlPage,
    Observation,
    Plan,
    SubtaskAnswer,
    Text,
    Think,
    WebSearch,
    analyze_report,
    has_tags,
    normalize_url,
    parse,
    report_text,
    validate,
)
from oresearch_cli.trace import tags as trace_tags


@dataclass(frozen=True)
class RuleInfo:
    name: str
    codes: dict[str, str]  # reason code -> what it means
    doc: str
    needs_trace: bool = False  # skipped for bare reports (report-only input)


RULES: dict[str, RuleInfo] = {
    r.name: r
    for r in (
        RuleInfo(
            "status",
            {"synth-failed": "the synth run marked this trace failed (see its error)"},
            "The producing run finished the item (`status` is done, when the input has a status).",
        ),
        RuleInfo(
            "validation",
            {
                "trace:<code>": "an error of the trace validator (oresearch_cli.trace.CODES) no other rule owns"
            },
            "The trace passes `oresearch_cli.trace.validate` (the report alone for report-only input).",
        ),
        RuleInfo(
            "tool_calls",
            {
                "tool-calls-below-min": "a subtask makes fewer tool calls than --min-tool-calls",
                "tool-calls-above-max": "a subtask makes more tool calls than --max-tool-calls",
            },
            "Each subtask makes between min_tool_calls and max_tool_calls tool calls.",
            needs_trace=True,
        ),
        RuleInfo(
            "steps",
            {
                "too-few-steps": "fewer tagged steps than --min-steps",
                "too-many-steps": "more tagged steps than --max-steps",
            },
            "The trace's tagged steps (observations and the report included) are within bounds.",
            needs_trace=True,
        ),
        RuleInfo(
            "sections",
            {"report-missing-section": "the report lacks Introduction, Body, Conclusion or References"},
            "The report has all four sections.",
        ),
        RuleInfo(
            "citations",
            {
                "citation-unresolved": "an in-text citation [n] with no reference n",
                "reference-url-not-observed": "a reference URL no observation showed (traces only)",
            },
            "Every citation resolves to a reference, and every reference URL was observed.",
        ),
        RuleInfo(
            "sources",
            {"too-few-sources": "fewer distinct cited pages than --min-sources"},
            "The report cites at least min_sources distinct pages (URLs, normalized).",
        ),
        RuleInfo(
            "length",
            {
                "report-too-short": "the report has fewer tokens than min_report_tokens",
                "report-too-long": "the report has more tokens than max_report_tokens",
                "trace-too-long": "the whole trace has more tokens than max_trace_tokens",
            },
            "Token counts (the target model's tokenizer with --tokenizer, else an estimate) are in bounds.",
        ),
        RuleInfo(
            "repetition",
            {"repetition-loop": "model-written text repeats a line or compresses like a loop"},
            "No line of the model's own text repeats max_line_repeats times; it does not compress "
            "below min_compression.",
        ),
        RuleInfo(
            "language",
            {"language-mismatch": "the report is not in the question's language"},
            "The report's language is the question's.",
        ),
        RuleInfo(
            "truncated",
            {
                "truncated": "the output stops early: no report, an unclosed report, or a cut-off last sentence"
            },
            "The output is complete.",
        ),
        RuleInfo(
            "leaked",
            {
                "leaked-tag": "a trace tag inside the report",
                "leaked-prompt": "prompt text or chat-template tokens inside the report",
            },
            "The report holds no trace tags and no prompt text.",
        ),
    )
}
RULE_ORDER: tuple[str, ...] = tuple(RULES)

# Trace-module codes with a dedicated rule; every other error goes to `validation` as trace:<code>.
OWNED_CODES = {
    "tool-calls-below-min": "tool_calls",
    "tool-calls-above-max": "tool_calls",
    "report-missing-section": "sections",
    "citation-unresolved": "citations",
    "reference-url-not-observed": "citations",
}

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_TERMINAL = tuple(".!?。！？…)]）】\"'”’*`|>:：")


def estimate_tokens(text: str) -> int:
    """About what a BPE tokenizer gives: 4 Latin characters per token, about 1 token per CJK character."""
    if not text:
        return 0
    if text.isascii():
        return (len(text) + 3) // 4
    cjk = len(_CJK.findall(text))
    return cjk + (len(text) - cjk + 3) // 4


@dataclass
class Item:
    """One trace to check. `text` is the trace (or a bare report); `tokens` (report, trace) are
    filled in when a tokenizer counted them for the whole batch."""

    id: str
    text: str
    question: str = ""
    language: str | None = None
    status: str | None = None
    error: str | None = None
    tokens: tuple[int, int] | None = None


@dataclass
class Outcome:
    """What the rules found: failed codes per rule, measured values per rule, and the report."""

    id: str
    fails: dict[str, list[str]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    report: str = ""
    mode: str = "trace"  # or "report" for a bare report
    quality: float = 0.0  # used to keep the better of two duplicates before the judge runs
    language: str | None = None

    @property
    def reasons(self) -> list[str]:
        return [code for rule in RULE_ORDER for code in self.fails.get(rule, [])]

    @property
    def passed(self) -> bool:
        return not any(self.fails.values())


# Tuples rather than `A | B` unions: isinstance is faster with them, and it runs for every step.
_MODEL_WRITTEN = (Think, Plan, SubtaskAnswer)
_TOOL_CALLS = (WebSearch, CrawlPage)


def _model_text(steps: list[Any], report: str) -> str:
    """The model's own words: thoughts, plans, subtask answers and the report (never observations).

    A bare report's text is its one `Text` step and also `report`: it is counted once, or every
    line it has twice would look like a loop."""
    parts = [s.text for s in steps if isinstance(s, _MODEL_WRITTEN)]
    parts.append(report)
    return "\n".join(parts)


def _repetition(text: str, cfg: FilterConfig) -> dict[str, Any]:
    lines = Counter(line for raw in text.splitlines() if len(line := raw.strip()) >= cfg.repeat_min_chars)
    top, count = lines.most_common(1)[0] if lines else ("", 0)
    data = text.encode("utf-8")
    ratio = len(zlib.compress(data, 1)) / len(data) if len(data) > 2000 else None
    return {
        "max_line_repeats": count,
        "line": top[:80] if count >= cfg.max_line_repeats else None,
        "compression": None if ratio is None else round(ratio, 3),
    }


def _is_cut_off(report: str, analysis: Any) -> bool:
    text = report.rstrip()
    if not text:
        return False
    span = analysis.references_span
    if span is not None and analysis.references and span[1] >= len(text):
        return False  # ends with its reference list
    last = text.splitlines()[-1].strip()
    if last.startswith(("#", "|", "-", "*", "```")) or re.match(r"^\d+[.)]", last):
        return False  # a heading, table row, list item or code fence
    return not text.endswith(_TERMINAL)


LANGUAGE_SAMPLE = 2000  # characters of the report body whose language is compared with the question's


@dataclass
class _LanguageCheck:
    """What the language rule needs, kept until the batch's languages are detected together."""

    question: str | None  # the question's text when its language is not given
    question_lang: str | None  # the given language
    body: str  # the report's body (before its references), cut to LANGUAGE_SAMPLE


def evaluate(item: Item, cfg: FilterConfig) -> Outcome:
    """Every enabled rule on one trace: parse once, validate once, analyze the report once."""
    return evaluate_batch([item], cfg)[0]


def evaluate_batch(items: Sequence[Item], cfg: FilterConfig) -> list[Outcome]:
    """`evaluate` on each item; languages (the costliest check) are detected for the whole batch at once."""
    checked = [_check(item, cfg) for item in items]
    pending = [(out, lang) for out, lang in checked if lang is not None]
    if pending:
        questions = list(dict.fromkeys(c.question for _, c in pending if c.question is not None))
        bodies = [c.body for _, c in pending]
        found = detect_languages(questions + bodies)
        question_langs = dict(zip(questions, found[: len(questions)], strict=True))
        for (out, check), report_lang in zip(pending, found[len(questions) :], strict=True):
            question_lang = check.question_lang or (
                question_langs[check.question] if check.question is not None else "und"
            )
            out.language = question_lang if question_lang != "und" else report_lang
            out.details["language"] = {"question": question_lang, "report": report_lang}
            if "und" not in (question_lang, report_lang) and question_lang != report_lang:
                out.fails["language"] = ["language-mismatch"]
    return [out for out, _ in checked]


def _check(item: Item, cfg: FilterConfig) -> tuple[Outcome, _LanguageCheck | None]:
    """Every rule but the language comparison, which `evaluate_batch` finishes for the batch."""
    on = cfg.enabled
    trace = parse(item.text)
    report_only = not has_tags(trace)
    report = report_text(trace, bare_text_is_report=report_only) or ""
    out = Outcome(id=item.id, report=report, mode="report" if report_only else "trace")
    fails = out.fails
    details = out.details
    steps = [s for _, group in trace.groups() for s in group]  # trace.steps() without the numbers

    def fail(rule: str, code: str) -> None:
        if on(rule) and code not in fails.setdefault(rule, []):
            fails[rule].append(code)

    if on("status") and item.status is not None and item.status not in ("done", "ok"):
        fail("status", "synth-failed")
        details["status"] = {"status": item.status, "error": item.error}

    # Analyzed once: validate checks the report with this analysis, and the rules below read it.
    analysis = analyze_report(report) if report else None
    bounds = Bounds(cfg.min_tool_calls, cfg.max_tool_calls)
    problems = validate(trace, bounds, report_only=report_only, analysis=analysis)
    errors = [p for p in problems if p.severity == "error"]
    warnings = Counter(p.code for p in problems if p.severity == "warning")
    for p in errors:
        owner = OWNED_CODES.get(p.code)
        if owner is None:
            fail("validation", f"trace:{p.code}")
        elif not (report_only and RULES[owner].needs_trace):
            fail(owner, p.code)
    details["validation"] = {
        "errors": [{"code": p.code, "line": p.line, "message": p.message} for p in errors[:20]],
        "warnings": dict(warnings),
    }

    if not report_only:
        per_subtask = [len(s.tool_calls) for s in trace.subtasks] or [
            sum(isinstance(s, _TOOL_CALLS) for s in trace.preamble)
        ]
        details["tool_calls"] = {
            "per_subtask": per_subtask,
            "min": cfg.min_tool_calls,
            "max": cfg.max_tool_calls,
        }
        n_steps = sum(not isinstance(s, Text) for s in steps) + (trace.report is not None)
        details["steps"] = {"steps": n_steps, "subtasks": len(trace.subtasks)}
        if n_steps < cfg.min_steps:
            fail("steps", "too-few-steps")
        if n_steps > cfg.max_steps:
            fail("steps", "too-many-steps")
    if analysis is not None:
        details["sections"] = {"missing": analysis.missing_sections}
        details["citations"] = {"citations": len(analysis.citations), "references": len(analysis.references)}
        sources = len({normalize_url(u) for u in analysis.cited_urls})
        details["sources"] = {"distinct_cited": sources, "min": cfg.min_sources}
        if sources < cfg.min_sources:
            fail("sources", "too-few-sources")
    else:
        fail("sources", "too-few-sources")
        details["sources"] = {"distinct_cited": 0, "min": cfg.min_sources}

    if on("length"):
        if item.tokens is not None:
            report_tokens, trace_tokens = item.tokens
            how = cfg.tokenizer
        else:
            report_tokens, trace_tokens = estimate_tokens(report), estimate_tokens(item.text)
            how = "estimate"
        details["length"] = {"report_tokens": report_tokens, "trace_tokens": trace_tokens, "tokenizer": how}
        if report_tokens < cfg.min_report_tokens:
            fail("length", "report-too-short")
        if report_tokens > cfg.max_report_tokens:
            fail("length", "report-too-long")
        if trace_tokens > cfg.max_trace_tokens:
            fail("length", "trace-too-long")

    if on("repetition"):
        rep = _repetition(_model_text(steps, report), cfg)
        details["repetition"] = rep
        compression = rep["compression"]
        if rep["max_line_repeats"] >= cfg.max_line_repeats or (
            compression is not None and compression < cfg.min_compression
        ):
            fail("repetition", "repetition-loop")

    language = None
    if on("language") and report.strip():
        body = report[: analysis.references_span[0]] if analysis and analysis.references_span else report
        question = None if item.language or not item.question.strip() else item.question
        language = _LanguageCheck(question, item.language, body[:LANGUAGE_SAMPLE])
        details["language"] = {}  # filled in by evaluate_batch; here so details keep rule order

    if on("truncated"):
        why = None
        if not report_only and trace.report is None:
            why = "no report"
        elif not report_only and any(
            n.code == "unclosed-tag" and trace.report is not None and n.offset == trace.report.offset
            for n in trace.notes
        ):
            why = "report never closed"
        elif analysis is not None and _is_cut_off(report, analysis):
            why = "last sentence cut off"
        elif item.error and re.search(r"truncat|max_tokens|length", item.error, re.IGNORECASE):
            why = f"synth error: {item.error[:80]}"
        details["truncated"] = {"why": why}
        if why:
            fail("truncated", "truncated")

    if on("leaked") and report:
        markers = [m for m in cfg.leak_markers if m in report]
        tag = trace_tags.contains_tag(report)
        details["leaked"] = {"tag": tag, "markers": markers}
        if tag:
            fail("leaked", "leaked-tag")
        if markers:
            fail("leaked", "leaked-prompt")

    for rule in list(fails):
        if not fails[rule]:
            del fails[rule]
    n_obs = sum(isinstance(s, Observation) for s in steps)
    out.quality = (
        details.get("sources", {}).get("distinct_cited", 0)
        - 0.5 * sum(warnings.values())
        + min(len(report) / 4000, 5.0)
        + 0.1 * min(n_obs, 20)
    )
    return out, language


def _evaluate_chunk(args: tuple[list[Item], FilterConfig]) -> list[Outcome]:
    items, cfg = args
    return evaluate_batch(items, cfg)


# Workers start in about half a second (the fork server and its imports, then the language model
# from its cache: `oresearch_cli.textutil.lang`); below this many traces one process is done
# first, so automatic parallelism (`workers` 0) waits for bigger batches.
PARALLEL_MIN = 1500
CHUNK = 200  # traces per task: big enough for the batched language check, small for even load


def _cores() -> int:
    """Cores this process may run on (a container's or taskset's share, not the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def count_tokens(items: Sequence[Item], tokenizer_name: str) -> None:
    """Fill `item.tokens` with the target model's tokenizer, in batches (transformers, lazily)."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        from oresearch_cli.errors import InputError

        raise InputError(
            "--tokenizer needs transformers; install the `train` or `local` extra, or drop --tokenizer"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
    except OSError as exc:
        from oresearch_cli.errors import InputError

        raise InputError(
            f"--tokenizer {tokenizer_name}: cannot load it ({exc}); give a local path or model id"
        ) from None
    for start in range(0, len(items), 256):
        batch = list(items[start : start + 256])
        texts = [i.text for i in batch]
        reports = [report_text(parse(t), bare_text_is_report=True) or "" for t in texts]
        trace_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        report_ids = tokenizer(reports, add_special_tokens=False)["input_ids"]
        for item, r, t in zip(batch, report_ids, trace_ids, strict=True):
            item.tokens = (len(r), len(t))


def run_rules(
    items: Sequence[Item],
    cfg: FilterConfig,
    progress: Callable[[int], None] | None = None,
) -> list[Outcome]:
    """Outcomes in input order; worker processes (one per core, or `cfg.workers`) for big batches."""
    if cfg.tokenizer and cfg.enabled("length"):
        count_tokens(items, cfg.tokenizer)
    workers = cfg.workers or _cores()
    chunks = [list(items[i : i + CHUNK]) for i in range(0, len(items), CHUNK)]
    results: list[Outcome] = []
    if workers <= 1 or len(chunks) < 2 or (not cfg.workers and len(items) < PARALLEL_MIN):
        for chunk in chunks:
            results += _evaluate_chunk((chunk, cfg))
            if progress:
                progress(len(chunk))
        return results
    import multiprocessing

    context = multiprocessing.get_context("forkserver" if os.name != "nt" else "spawn")
    if os.name != "nt":
        # The fork server imports these once and every worker is forked from it with them loaded,
        # instead of each importing them anew (py3langid brings numpy: a third of a second each).
        # `__main__` is the default preload; it stays. No effect when this process's fork server
        # already runs: its workers then import as before.
        context.set_forkserver_preload(["__main__", __name__, "py3langid"])
    with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context) as pool:
        for outcomes in pool.map(_evaluate_chunk, [(c, cfg) for c in chunks]):
            results += outcomes
            if progress:
                progress(len(outcomes))
    return results
