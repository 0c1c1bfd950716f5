"""The hard rules: small named units, each with its reason codes and its check, run over one
shared scan of each trace (`oresearch_cli.filtering.scan`: parsed once, validated once, the
report analyzed once).

A rule is a class with a `name`, its `codes` (reason code -> meaning), a `doc`, and `check(scan,
cfg) -> Finding` (the codes it fails and what it measured); a rule that is cheaper over a whole
batch (the language rule) overrides `check_batch`. `RULES` is built from the classes in rule
order. Every enabled rule runs on every trace, so a rejected trace carries every reason, and
the funnel can say how many traces are left after each rule; `rule_stats` counts per rule.

Reason codes. Codes of the trace module (`oresearch_cli.trace.CODES`) keep their name where a
dedicated rule owns them (`tool-calls-above-max`, `report-missing-section`, `citation-unresolved`,
`reference-url-not-observed`); every other *error* the validator finds is reported by the
`validation` rule as `trace:<code>` (e.g. `trace:unclosed-tag`). Warnings never reject; they are
counted in `details.validation.warnings`.

One rule reads no text: `authorship` reads who wrote each piece from synth's steps log
(`Item.authorship`, from `oresearch_cli.agent.authorship`), and rejects a trace the
orchestrator's fallbacks wrote most of as `fallback-heavy`.

Speed (benchmarks/bench_filter.py): parsing, validation and report analysis are the trace
module's and take most of the time; the language check, the costliest of ours, runs once per
batch (`oresearch_cli.filtering.language`). A batch runs in worker processes when it is big
enough (`FilterConfig.workers`).
"""

from __future__ import annotations

import os
import re
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

from oresearch_cli.filtering.config import FilterConfig
from oresearch_cli.filtering.language import detect_languages, primary_language, report_sample
from oresearch_cli.filtering.scan import Item, Scan, scan
from oresearch_cli.textutil.tokens import estimate_tokens
from oresearch_cli.trace import CrawlPage, Plan, SubtaskAnswer, Text, Think, WebSearch, parse, report_text
from oresearch_cli.trace import tags as trace_tags

__all__ = [
    "OWNED_CODES",
    "RULES",
    "RULE_ORDER",
    "Finding",
    "Item",
    "Outcome",
    "Rule",
    "RuleStats",
    "count_tokens",
    "evaluate",
    "evaluate_batch",
    "rule_stats",
    "run_rules",
]


@dataclass
class Finding:
    """What one rule found on one trace: the codes it fails (none: passed) and what it measured
    (None: nothing to report, e.g. the trace rules on a bare report)."""

    codes: list[str] = field(default_factory=list)
    details: dict[str, Any] | None = None


class Rule:
    """A hard rule. Subclasses set the class attributes and implement `check`."""

    name: ClassVar[str]
    codes: ClassVar[dict[str, str]]
    doc: ClassVar[str]
    needs_trace: ClassVar[bool] = False  # skipped for bare reports (report-only input)

    def check(self, scan: Scan, cfg: FilterConfig) -> Finding:
        raise NotImplementedError

    def check_batch(self, scans: Sequence[Scan], cfg: FilterConfig) -> list[Finding]:
        return [self.check(s, cfg) for s in scans]


def _owned_errors(scan: Scan, rule: str) -> list[str]:
    """The validator's error codes that `rule` owns (OWNED_CODES), once each, in order."""
    codes: list[str] = []
    for problem in scan.errors:
        if OWNED_CODES.get(problem.code) == rule and problem.code not in codes:
            codes.append(problem.code)
    return codes


class StatusRule(Rule):
    name = "status"
    codes = {"synth-failed": "the synth run marked this trace failed (see its error)"}
    doc = "The producing run finished the item (`status` is done, when the input has a status)."

    def check(self, scan: Scan, cfg: FilterConfig) -> Finding:
        item = scan.item
        if item.status is not None and item.status not in ("done", "ok"):
            return Finding(["synth-failed"], {"status": item.status, "error": item.error})
        return Finding()


class AuthorshipRule(Rule):
    name = "authorship"
    codes = {
        "fallback-heavy": "more than max_fallback_share of the pieces were written by orchestrator fallbacks"
    }
    doc = (
        "The model wrote the trace: at most max_fallback_share of its pieces (subtask list, steps, "
        "plans, answers, report) are orchestrator fallbacks, by synth's steps log. A trace without "
        "one (imported from a file) passes: no record is not a fallback."
    )

    def check(self, scan: Scan, cfg: FilterConfig) -> Finding:
        authorship = scan.item.authorship
        if not authorship:
            return Finding()
        model, fallback = authorship.get("model_written", 0), authorship.get("fallback_written", 0)
        if not model + fallback:
            return Finding()
        share = fallback / (model + fallback)
        pieces = authorship.get("pieces") or {}
        details = {
            "model_written": model,
            "fallback_written": fallback,
            "fallback_share": round(share, 4),
            "max": cfg.max_fallback_share,
            "fallback_pieces": {k: c["fallback"] for k, c in pieces.items() if c.get("fallback")},
        }
        return Finding(["fallback-heavy"] if share > cfg.max_fallback_share else [], details)


class ValidationRule(Rule):
    name = "validation"
    codes = {"trace:<code>": "an error of the trace validator (oresearch_cli.trace.CODES) no other rule owns"}
    doc = "The trace passes `oresearch_cli.trace.validate` (the report alone for report-only input)."

    def check(self, scan: Scan, cfg: FilterConfig) -> Finding:
        codes: list[str] = []
        for problem in scan.errors:
            code = f"trace:{problem.code}"
            if problem.code not in OWNED_CODES and code not in codes:
                codes.append(code)
        details = {
            "errors": [{"code": p.code, "line": p.line, "message": p.message} for p in scan.errors[:20]],
            "warnings": dict(scan.warnings),
        }
        return Finding(codes, details)


class ToolCallsRule(Rule):
    name = "tool_calls"
    codes = {
        "tool-calls-below-min": "a subtask makes fewer tool calls than --min-tool-calls",
        "tool-calls-above-max": "a subtask makes more tool calls than --max-tool-calls",
    }
    doc = "Each subtask makes between min_tool_calls and max_tool_calls tool calls."
    needs_trace = True

    def check(self, scan: Scan, cfg: FilterConfig) -> Finding:
        trace = scan.trace
        per_subtask = [len(s.tool_calls) for s in trace.subtasks] or [
            sum(isinstance(s, _TOOL_CALLS) for s in trace.preamble)
        ]
        details = {"per_subtask": per_subtask, "min": cfg.min_tool_calls, "max": cfg.max_tool_calls}
        return Finding(_owned_errors(scan, self.name), details)


class StepsRule(Rule):
    name = "steps"
    codes = {
        "too-few-steps": "fewer tagged steps than --min-steps",
        "too-many-steps": "more tagged steps than --max-steps",
    }
    doc = "The trace's tagged steps (observations and the report included) are within bounds."
    needs_trace = True

    def check(self, scan: Scan, cfg: FilterConfig) -> Finding:
        n_steps = sum(not isinstance(s, Text) for s in scan.steps) + (scan.trace.report is not None)
        codes = []
        if n_steps < cfg.min_steps:
            codes.append("too-few-steps")
        if n_steps > cfg.max_steps:
            codes.append("too-many-steps")
        return Finding(codes, {"steps": n_steps, "subtasks": len(scan.trace.subtasks)})


class SectionsRule(Rule):
    name = "sections"
    codes = {"report-missing-section": "the report lacks Introduction, Body, Conclusion or References"}
    doc = "The report has all four sections."

    def check(self, scan: Scan, cfg: FilterConfig) -> Finding:
        details = {"missing": scan.analysis.missing_sections} if scan.analysis is not None else None
        return Finding(_owned_errors(scan, self.name), details)


class CitationsRule(Rule):
    name = "citations"
    codes = {
        "citation-unresolved": "an in-text citation [n] with no reference n",
        "reference-url-not-observed": "a reference URL no observation showed (traces only)",
    }
    doc = "Every citation resolves to a reference, and every reference URL was observed."

    def check(self, scan: Scan, cfg: FilterConfig) -> Finding:
        analysis = scan.analysis
        details = (
            {"citations": len(analysis.citations), "references": len(analysis.references)}
            if analysis is not None
            else None
        )
        return Finding(_owned_errors(scan, self.name), details)


class SourcesRule(Rule):
    name = "sources"
    codes = {"too-few-sources": "fewer distinct cited pages than --min-sources"}
    doc = "The report cites at least min_sources distinct pages (URLs, by page identity)."

    def check(self, scan: Scan, cfg: FilterConfig) -> Finding:
        sources = scan.distinct_sources
        codes = ["too-few-sources"] if scan.analysis is None or sources < cfg.min_sources else []
        return Finding(codes, {"distinct_cited": sources, "min": cfg.min_sources})


class LengthRule(Rule):
    name = "length"
    codes = {
        "report-too-short": "the report has fewer tokens than min_report_tokens",
        "report-too-long": "the report has more tokens than max_report_tokens",
        "trace-too-long": "the whole trace has more tokens than max_trace_tokens",
    }
    doc = "Token counts (the target model's tokenizer with --tokenizer, else an estimate) are in bounds."

    def check(self, scan: Scan, cfg: FilterConfig) -> Finding:
        item = scan.item
        if item.tokens is not None:
            report_tokens, trace_tokens = item.tokens
            how = cfg.tokenizer
        else:
            report_tokens, trace_tokens = estimate_tokens(scan.report), estimate_tokens(item.text)
            how = "estimate"
        codes = []
        if report_tokens < cfg.min_report_tokens:
            codes.append("report-too-short")
        if report_tokens > cfg.max_report_tokens:
            codes.append("report-too-long")
        if trace_tokens > cfg.max_trace_tokens:
            codes.append("trace-too-long")
        return Finding(
            codes, {"report_tokens": report_tokens, "trace_tokens": trace_tokens, "tokenizer": how}
        )


class RepetitionRule(Rule):
    name = "repetition"
    codes = {"repetition-loop": "model-written text repeats a line or compresses like a loop"}
    doc = (
        "No line of the model's own text repeats max_line_repeats times; it does not compress "
        "below min_compression."
    )

    def check(self, scan: Scan, cfg: FilterConfig) -> Finding:
        rep = _repetition(_model_text(scan.steps, scan.report), cfg)
        compression = rep["compression"]
        looped = rep["max_line_repeats"] >= cfg.max_line_repeats or (
            compression is not None and compression < cfg.min_compression
        )
        return Finding(["repetition-loop"] if looped else [], rep)


class LanguageRule(Rule):
    name = "language"
    codes = {"language-mismatch": "the report is not in the question's language"}
    doc = "The report's language is the question's."

    def check(self, scan: Scan, cfg: FilterConfig) -> Finding:
        return self.check_batch([scan], cfg)[0]

    def check_batch(self, scans: Sequence[Scan], cfg: FilterConfig) -> list[Finding]:
        """Languages are the costliest check: every question and report body of the batch is
        detected in one call. `und` (nothing to judge) on either side never rejects. Tags compare
        by their primary subtag (a `zh-CN` seed, a `zh` report); the report is judged on its prose
        (`language.report_sample`: links and URLs, often to English sources, do not count)."""
        findings = [Finding() for _ in scans]
        pending: list[tuple[int, str | None, str | None, str]] = []  # index, question, given, body
        for index, s in enumerate(scans):
            if not s.report.strip():
                continue
            span = s.analysis.references_span if s.analysis is not None else None
            question = None if s.item.language or not s.item.question.strip() else s.item.question
            pending.append((index, question, s.item.language, report_sample(s.report, span)))
        if not pending:
            return findings
        questions = list(dict.fromkeys(q for _, q, _, _ in pending if q is not None))
        found = detect_languages(questions + [body for *_, body in pending])
        question_langs = dict(zip(questions, found[: len(questions)], strict=True))
        for (index, question, given, _), report_lang in zip(pending, found[len(questions) :], strict=True):
            question_lang = given or (question_langs[question] if question is not None else "und")
            compared = (primary_language(question_lang), primary_language(report_lang))
            mismatch = "und" not in compared and compared[0] != compared[1]
            findings[index] = Finding(
                ["language-mismatch"] if mismatch else [], {"question": question_lang, "report": report_lang}
            )
        return findings


class TruncatedRule(Rule):
    name = "truncated"
    codes = {"truncated": "the output stops early: no report, an unclosed report, or a cut-off last sentence"}
    doc = "The output is complete."

    def check(self, scan: Scan, cfg: FilterConfig) -> Finding:
        trace, item = scan.trace, scan.item
        why = None
        if not scan.report_only and trace.report is None:
            why = "no report"
        elif not scan.report_only and any(
            n.code == "unclosed-tag" and trace.report is not None and n.offset == trace.report.offset
            for n in trace.notes
        ):
            why = "report never closed"
        elif scan.analysis is not None and _is_cut_off(scan.report, scan.analysis):
            why = "last sentence cut off"
        elif item.error and re.search(r"truncat|max_tokens|length", item.error, re.IGNORECASE):
            why = f"synth error: {item.error[:80]}"
        return Finding(["truncated"] if why else [], {"why": why})


class LeakedRule(Rule):
    name = "leaked"
    codes = {
        "leaked-tag": "a trace tag inside the report",
        "leaked-prompt": "prompt text or chat-template tokens inside the report",
    }
    doc = "The report holds no trace tags and no prompt text."

    def check(self, scan: Scan, cfg: FilterConfig) -> Finding:
        if not scan.report:
            return Finding()
        markers = [m for m in cfg.leak_markers if m in scan.report]
        tag = trace_tags.contains_tag(scan.report)
        codes = (["leaked-tag"] if tag else []) + (["leaked-prompt"] if markers else [])
        return Finding(codes, {"tag": tag, "markers": markers})


RULES: dict[str, Rule] = {
    rule.name: rule
    for rule in (
        StatusRule(),
        AuthorshipRule(),
        ValidationRule(),
        ToolCallsRule(),
        StepsRule(),
        SectionsRule(),
        CitationsRule(),
        SourcesRule(),
        LengthRule(),
        RepetitionRule(),
        LanguageRule(),
        TruncatedRule(),
        LeakedRule(),
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

_TERMINAL = tuple(".!?。！？…)]）】\"'”’*`|>:：")


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
    # A numbered list item (`3. Item`), not a decimal that a cut-off sentence starts with (`3.5 perc`).
    if last.startswith(("#", "|", "-", "*", "```")) or re.match(r"^\d+[.)]\s", last):
        return False  # a heading, table row, list item or code fence
    return not text.endswith(_TERMINAL)


def evaluate(item: Item, cfg: FilterConfig) -> Outcome:
    """Every enabled rule on one trace."""
    return evaluate_batch([item], cfg)[0]


def evaluate_batch(items: Sequence[Item], cfg: FilterConfig) -> list[Outcome]:
    """Every enabled rule on each item: one scan per item, then each rule over the batch."""
    scans = [scan(item, cfg) for item in items]
    outcomes = [
        Outcome(id=s.item.id, report=s.report, mode="report" if s.report_only else "trace") for s in scans
    ]
    for rule in RULES.values():
        if not cfg.enabled(rule.name):
            continue
        # A trace rule on a bare report has nothing to check; the others read the report alone.
        applicable = [i for i, s in enumerate(scans) if not (rule.needs_trace and s.report_only)]
        findings = rule.check_batch([scans[i] for i in applicable], cfg)
        for index, finding in zip(applicable, findings, strict=True):
            outcome = outcomes[index]
            if finding.codes:
                outcome.fails[rule.name] = list(dict.fromkeys(finding.codes))
            if finding.details is not None:
                outcome.details[rule.name] = finding.details
    for s, outcome in zip(scans, outcomes, strict=True):
        language = outcome.details.get("language")
        if language:
            given = language["question"]
            outcome.language = given if given != "und" else language["report"]
        outcome.quality = (
            s.distinct_sources
            - 0.5 * sum(s.warnings.values())
            + min(len(s.report) / 4000, 5.0)
            + 0.1 * min(s.n_observations, 20)
        )
    return outcomes


@dataclass
class RuleStats:
    """Per rule over a batch: traces it checked, traces it failed, and how often each code."""

    name: str
    checked: int = 0
    failed: int = 0
    codes: Counter[str] = field(default_factory=Counter)


def rule_stats(outcomes: Sequence[Outcome], cfg: FilterConfig) -> list[RuleStats]:
    """Counters per enabled rule, from the outcomes (so worker processes need not merge any)."""
    stats = []
    for rule in RULES.values():
        if not cfg.enabled(rule.name):
            continue
        entry = RuleStats(rule.name)
        for outcome in outcomes:
            if rule.needs_trace and outcome.mode == "report":
                continue
            entry.checked += 1
            codes = outcome.fails.get(rule.name)
            if codes:
                entry.failed += 1
                entry.codes.update(codes)
        stats.append(entry)
    return stats


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
