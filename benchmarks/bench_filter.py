"""Hard-rule throughput of `ores filter` on 10k realistic traces, against a naive per-trace loop.

The traces are tests/fixtures/trace_example.txt grown and varied the way real synth output
varies: two to four subtasks, crawled pages and search results of different lengths, report
paragraphs with their own wording and numbers (so about 4-14 KB each), and about one in six
broken the ways real output breaks (cut off, a Chinese question answered in English, a loop of
repeated lines, a leaked chat-template token, a citation with no reference, a missing section).

- ours: `oresearch_cli.filtering.rules.run_rules`, the entry point `ores filter` calls: every
  trace parsed, validated and its report analyzed once, worker processes over the cores.
- naive: the straightforward implementation: one trace at a time in one process, each rule a
  function of the trace text that parses (and, where it needs them, validates or analyzes the
  report) for itself.

Both must agree on every trace's verdict; the benchmark checks that before it reports a number.
"""

from __future__ import annotations

import os
import random
import re
import sys
import time
import zlib
from collections import Counter
from dataclasses import replace
from pathlib import Path

from oresearch_cli.filtering.config import FilterConfig
from oresearch_cli.filtering.rules import OWNED_CODES, Item, estimate_tokens, run_rules
from oresearch_cli.textutil import detect_language
from oresearch_cli.trace import (
    Bounds,
    Plan,
    SubtaskAnswer,
    Text,
    Think,
    analyze_report,
    has_tags,
    normalize_url,
    parse,
    report_text,
    validate,
)
from oresearch_cli.trace import tags as trace_tags

from common import Result

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "trace_example.txt"
N_TRACES = 10_000
N_NAIVE = 1_000  # the naive loop is timed on a slice; its rate does not depend on the count
N_SERIAL = 2_000  # ours in one process, on a slice too
TARGET = 2_000.0

_WORDS = [
    "membrane",
    "stroma",
    "chlorophyll",
    "photon",
    "electron",
    "proton",
    "gradient",
    "enzyme",
    "carbon",
    "fixation",
    "sugar",
    "glucose",
    "oxygen",
    "water",
    "light",
    "energy",
    "cycle",
    "reaction",
    "pigment",
    "leaf",
    "cell",
    "plant",
    "yield",
    "season",
    "field",
    "temperature",
    "drought",
    "nitrogen",
    "canopy",
    "efficiency",
    "measurement",
    "sample",
    "study",
    "trial",
]
_CJK_QUESTION = "光合作用的光反应和卡尔文循环分别产生什么，又有什么作用？"


def _sentence(rng: random.Random, cite: bool) -> str:
    words = rng.sample(_WORDS, rng.randint(9, 16))
    figure = f"{rng.randint(2, 97)}.{rng.randint(0, 9)}%"
    words.insert(rng.randint(1, len(words) - 1), figure)
    text = " ".join(words)
    text = text[0].upper() + text[1:]
    return text + (f" [{rng.randint(1, 4)}]." if cite else ".")


def _paragraph(rng: random.Random, n: int, cite: bool) -> str:
    return " ".join(_sentence(rng, cite and i == n - 1) for i in range(n))


def _extra_subtask(number: int, rng: random.Random) -> tuple[str, str]:
    """(list line, block) of one more subtask in the fixture's shape, with its own wording."""
    topic = " and ".join(rng.sample(_WORDS, 2))
    question = f"What do field studies report about {topic} in subtask {number}?"
    url = f"https://studies.example.org/{number}/{topic.replace(' ', '-')}-{rng.randint(1, 999)}"
    block = (
        f"<subtask>\n{question}\n</subtask>\n"
        f"<think>\n{_paragraph(rng, 1, False)}\n</think>\n"
        f"<plan>\n1. {_sentence(rng, False)}\n2. {_sentence(rng, False)}\n</plan>\n"
        f"<web_search>{topic} field study | {topic} measurements&serp_num=4</web_search>\n"
        f"<observation>\n## Query: '{topic} field study'\n1. [Study {number}]({url})\n"
        f"{_paragraph(rng, rng.randint(1, 3), False)}\n</observation>\n"
        f"<think>\n{_paragraph(rng, 1, False)}\n</think>\n"
        f"<crawl_page>{url}</crawl_page>\n"
        f"<observation>\n{_paragraph(rng, rng.randint(2, 8), False)}\n</observation>\n"
        f"<subtask_answer>\n{_paragraph(rng, 2, False)} [3]\n</subtask_answer>\n\n"
    )
    return f"{number}. {question}\n", block


def build_trace(index: int, base: str) -> tuple[str, str, str]:
    """(question, trace, expected breakage or '') for trace `index`: deterministic per index."""
    rng = random.Random(index)
    a, b = rng.sample(_WORDS, 2)
    question = f"How do {a} and {b} shape the light reactions and the Calvin cycle of photosynthesis?"
    # Longer observations: search snippets and crawled pages of varying length.
    pages = iter([_paragraph(rng, rng.randint(1, 6), False) for _ in range(4)])
    text = re.sub(r"\n</observation>", lambda m: "\n" + next(pages, "") + "\n</observation>", base)
    extra = [_extra_subtask(3 + k, rng) for k in range(rng.choice((0, 0, 1, 2)))]
    if extra:
        text = text.replace("<suggested_answer>", "".join(b for _, b in extra) + "<suggested_answer>", 1)
        text = text.replace("</subtask_list>", "".join(line for line, _ in extra) + "</subtask_list>", 1)
    body = "\n\n".join(_paragraph(rng, rng.randint(2, 5), True) for _ in range(rng.randint(1, 4)))
    text = text.replace("## Conclusion\n", f"{body}\n\n## Conclusion\n", 1)
    broken = ""
    kind = index % 18
    if kind == 1:
        text, broken = text[: text.index("## Conclusion")], "truncated"
    elif kind == 4:
        question, broken = _CJK_QUESTION, "language"
    elif kind == 7:
        loop = "The light reactions make ATP and NADPH on the thylakoid membranes.\n" * 5
        text, broken = text.replace("## Conclusion", loop + "\n## Conclusion", 1), "repetition"
    elif kind == 10:
        text, broken = text.replace("## Conclusion", "<|im_end|>\n\n## Conclusion", 1), "leaked"
    elif kind == 13:
        text, broken = text.replace("in two linked stages [2]", "in two linked stages [9]", 1), "citations"
    elif kind == 16:
        text, broken = text.replace("## Conclusion\n", "", 1), "sections"
    return question, text, broken


def build_items(n: int = N_TRACES) -> list[Item]:
    base = FIXTURE.read_text(encoding="utf-8")
    items = []
    for i in range(n):
        question, text, _ = build_trace(i, base)
        # Synth records carry the seed's language, so the question's language is known.
        items.append(Item(id=str(i), text=text, question=question, language=detect_language(question)))
    return items


# -- the naive implementation: one function per rule, each starting from the text ---------------


def _naive_validation(item: Item, cfg: FilterConfig) -> bool:
    problems = validate(parse(item.text), Bounds(cfg.min_tool_calls, cfg.max_tool_calls))
    return any(p.severity == "error" and p.code not in OWNED_CODES for p in problems)


def _naive_tool_calls(item: Item, cfg: FilterConfig) -> bool:
    trace = parse(item.text)
    return any(not cfg.min_tool_calls <= len(s.tool_calls) <= cfg.max_tool_calls for s in trace.subtasks)


def _naive_steps(item: Item, cfg: FilterConfig) -> bool:
    trace = parse(item.text)
    steps = sum(1 for _, s in trace.steps() if not isinstance(s, Text)) + (trace.report is not None)
    return not cfg.min_steps <= steps <= cfg.max_steps


def _naive_sections(item: Item, cfg: FilterConfig) -> bool:
    report = report_text(parse(item.text)) or ""
    return bool(report) and bool(analyze_report(report).missing_sections)


def _naive_citations(item: Item, cfg: FilterConfig) -> bool:
    problems = validate(parse(item.text), Bounds(cfg.min_tool_calls, cfg.max_tool_calls))
    return any(p.code in ("citation-unresolved", "reference-url-not-observed") for p in problems)


def _naive_sources(item: Item, cfg: FilterConfig) -> bool:
    report = report_text(parse(item.text)) or ""
    urls = analyze_report(report).cited_urls if report else []
    return len({normalize_url(u) for u in urls}) < cfg.min_sources


def _naive_length(item: Item, cfg: FilterConfig) -> bool:
    report = report_text(parse(item.text)) or ""
    tokens = estimate_tokens(report)
    return (
        not cfg.min_report_tokens <= tokens <= cfg.max_report_tokens
        or estimate_tokens(item.text) > cfg.max_trace_tokens
    )


def _naive_repetition(item: Item, cfg: FilterConfig) -> bool:
    trace = parse(item.text)
    own = [s.text for _, s in trace.steps() if isinstance(s, Think | Plan | SubtaskAnswer)]
    text = "\n".join([*own, report_text(trace) or ""])
    lines = Counter(line.strip() for line in text.splitlines() if len(line.strip()) >= cfg.repeat_min_chars)
    if lines and lines.most_common(1)[0][1] >= cfg.max_line_repeats:
        return True
    data = text.encode("utf-8")
    return len(data) > 2000 and len(zlib.compress(data, 1)) / len(data) < cfg.min_compression


def _naive_language(item: Item, cfg: FilterConfig) -> bool:
    report = report_text(parse(item.text)) or ""
    if not report.strip():
        return False
    analysis = analyze_report(report)
    body = report[: analysis.references_span[0]] if analysis.references_span else report
    question = item.language or detect_language(item.question)
    answer = detect_language(body[:2000])
    return "und" not in (question, answer) and question != answer


def _naive_truncated(item: Item, cfg: FilterConfig) -> bool:
    trace = parse(item.text)
    if trace.report is None:
        return True
    if any(n.code == "unclosed-tag" and n.offset == trace.report.offset for n in trace.notes):
        return True
    text = trace.report.text.rstrip()
    analysis = analyze_report(text)
    if (
        analysis.references_span is not None
        and analysis.references
        and analysis.references_span[1] >= len(text)
    ):
        return False
    last = text.splitlines()[-1].strip() if text else ""
    if not text or last.startswith(("#", "|", "-", "*", "```")) or re.match(r"^\d+[.)]", last):
        return False
    return not text.endswith(tuple(".!?。！？…)]）】\"'”’*`|>:："))


def _naive_leaked(item: Item, cfg: FilterConfig) -> bool:
    report = report_text(parse(item.text)) or ""
    return bool(report) and (trace_tags.contains_tag(report) or any(m in report for m in cfg.leak_markers))


NAIVE_RULES = (
    _naive_validation,
    _naive_tool_calls,
    _naive_steps,
    _naive_sections,
    _naive_citations,
    _naive_sources,
    _naive_length,
    _naive_repetition,
    _naive_language,
    _naive_truncated,
    _naive_leaked,
)


def naive_rejects(item: Item, cfg: FilterConfig) -> bool:
    trace = parse(item.text)
    assert has_tags(trace)  # the benchmark's traces are all tagged traces
    return any([rule(item, cfg) for rule in NAIVE_RULES])  # every rule runs: each reason is reported


def run() -> list[Result]:
    cfg = FilterConfig()
    started = time.perf_counter()
    items = build_items()
    built = time.perf_counter() - started
    sizes = sorted(len(i.text.encode("utf-8")) for i in items)
    mean_kb = sum(sizes) / len(sizes) / 1000
    load = os.getloadavg()[0]

    detect_language("warm up the language model once")  # both sides start with it loaded
    started = time.perf_counter()
    outcomes = run_rules(items, cfg)  # worker processes, one per core: what `ores filter` does
    ours_s = time.perf_counter() - started

    one_core = items[:N_SERIAL]
    started, cpu = time.perf_counter(), time.process_time()
    serial = run_rules(one_core, replace(cfg, workers=1))
    serial_s, serial_cpu = time.perf_counter() - started, time.process_time() - cpu

    naive_items = items[:N_NAIVE]
    started = time.perf_counter()
    naive = [naive_rejects(i, cfg) for i in naive_items]
    naive_s = time.perf_counter() - started

    disagree = [i.id for i, o, n in zip(naive_items, outcomes, naive, strict=False) if (not o.passed) != n]
    assert not disagree, f"ours and the naive loop disagree on traces {disagree[:10]}"
    assert [o.reasons for o in serial] == [o.reasons for o in outcomes[:N_SERIAL]]
    rejected = sum(not o.passed for o in outcomes)
    naive_rate = len(naive_items) / naive_s
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    per_cpu_s = len(one_core) / serial_cpu  # CPU time: what a core does when nothing else runs on it
    return [
        Result(
            name=f"filter hard rules, {len(items):,} traces of {mean_kb:.1f} KB mean",
            ours=len(items) / ours_s,
            unit="traces/s",
            baseline=naive_rate,
            baseline_label="naive per-trace loop, 1 process",
            target=f">= {TARGET:,.0f} traces/s on 2 cores",
            note=f"{cores} cores, load average {load:.1f} before the run (other work shares the cores); "
            f"{ours_s:.1f}s wall incl. worker start-up; {rejected:,} rejected, verdicts equal to the "
            f"naive loop's on {len(naive_items):,}; sizes {sizes[0] / 1000:.1f}-{sizes[-1] / 1000:.1f} KB "
            f"(built in {built:.1f}s)",
        ),
        Result(
            name="filter hard rules, one process",
            ours=len(one_core) / serial_s,
            unit="traces/s",
            baseline=naive_rate,
            baseline_label="naive per-trace loop",
            note=f"the same rules on {len(one_core):,} traces without worker processes: the ratio is what "
            f"parsing once and batching the language check buy; {per_cpu_s:,.0f} traces per CPU-second, "
            f"so about {cores * per_cpu_s:,.0f}/s on {cores} free cores before worker start-up",
        ),
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for result in run():
        print(result.name, result.ours_text(), result.baseline_text(), result.ratio_text(), result.note)
