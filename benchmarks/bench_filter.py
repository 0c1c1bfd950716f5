"""Hard-rule throughput of `ores filter` on 10k realistic traces, against a naive per-trace loop.

The traces are tests/fixtures/trace_example.txt grown and varied the way real synth output
varies: two to four subtasks, crawled pages and search results of different lengths, report
paragraphs with their own wording and numbers (so about 4-14 KB each), and about one in six
broken the ways real output breaks (cut off, a Chinese question answered in English, a loop of
repeated lines, a leaked chat-template token, a citation with no reference, a missing section).

- ours: `oresearch_cli.filtering.rules.run_rules`, the entry point `ores filter` calls: every
  trace parsed, validated and its report analyzed once, worker processes over the cores.
- naive: the straightforward implementation: a plain loop over the traces that parses each
  trace once, validates it once and analyzes its report once, then runs every rule's check in
  turn (the language of each question and report detected one text at a time), spread over as
  many processes as ours (a multiprocessing Pool over chunks of traces). Timed on all the
  traces, pool start-up included, as ours is; and in one process on the same slice as ours.

Both must agree on every trace's verdict; the benchmark checks that before it reports a number.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import sys
import time
import zlib
from collections import Counter
from dataclasses import replace
from functools import partial
from pathlib import Path

from oresearch_cli.filtering.config import FilterConfig
from oresearch_cli.filtering.rules import OWNED_CODES, Item, run_rules
from oresearch_cli.textutil import detect_language
from oresearch_cli.textutil.tokens import estimate_tokens
from oresearch_cli.trace import (
    Bounds,
    Plan,
    SubtaskAnswer,
    Text,
    Think,
    analyze_report,
    has_tags,
    page_key,
    parse,
    report_text,
    validate,
)
from oresearch_cli.trace import tags as trace_tags

from common import Result

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "trace_example.txt"
N_TRACES = 10_000
N_SERIAL = 2_000  # ours and the naive loop in one process, on a slice
NAIVE_CHUNK = 200  # traces per task of the naive loop's pool (ours uses the same)
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


# -- the naive implementation: a plain loop, one parse per trace, then each rule's check --------


# What a finished last sentence ends with (as the truncated rule has it).
_TERMINAL = tuple(".!?。！？…)]）】\"'”’*`|>:：")


def naive_rejects(item: Item, cfg: FilterConfig) -> bool:
    """Whether any rule rejects the trace: parse, validate and analyze the report once each, then
    every rule's check (all run: each reason is reported)."""
    trace = parse(item.text)
    assert has_tags(trace)  # the benchmark's traces are all tagged traces
    report = report_text(trace) or ""
    analysis = analyze_report(report) if report else None
    problems = validate(trace, Bounds(cfg.min_tool_calls, cfg.max_tool_calls), analysis=analysis)
    errors = {p.code for p in problems if p.severity == "error"}

    validation = any(code not in OWNED_CODES for code in errors)
    tool_calls = any(
        not cfg.min_tool_calls <= len(s.tool_calls) <= cfg.max_tool_calls for s in trace.subtasks
    )
    n_steps = sum(1 for _, s in trace.steps() if not isinstance(s, Text)) + (trace.report is not None)
    steps = not cfg.min_steps <= n_steps <= cfg.max_steps
    sections = analysis is not None and bool(analysis.missing_sections)
    citations = bool(errors & {"citation-unresolved", "reference-url-not-observed"})
    cited = analysis.cited_urls if analysis is not None else []
    sources = len({page_key(u) for u in cited}) < cfg.min_sources
    report_tokens = estimate_tokens(report)
    length = (
        not cfg.min_report_tokens <= report_tokens <= cfg.max_report_tokens
        or estimate_tokens(item.text) > cfg.max_trace_tokens
    )

    own = [s.text for _, s in trace.steps() if isinstance(s, Think | Plan | SubtaskAnswer)]
    model_text = "\n".join([*own, report])
    lines = Counter(
        line.strip() for line in model_text.splitlines() if len(line.strip()) >= cfg.repeat_min_chars
    )
    data = model_text.encode("utf-8")
    repetition = bool(lines and lines.most_common(1)[0][1] >= cfg.max_line_repeats) or (
        len(data) > 2000 and len(zlib.compress(data, 1)) / len(data) < cfg.min_compression
    )

    language = False
    if report.strip() and analysis is not None:
        body = report[: analysis.references_span[0]] if analysis.references_span else report
        question = item.language or detect_language(item.question)
        answer = detect_language(body[:2000])
        language = "und" not in (question, answer) and question != answer

    truncated = trace.report is None or any(
        n.code == "unclosed-tag" and n.offset == trace.report.offset for n in trace.notes
    )
    text = report.rstrip()
    if not truncated and text and analysis is not None:
        span = analysis.references_span
        ends_with_references = span is not None and analysis.references and span[1] >= len(text)
        last = text.splitlines()[-1].strip()
        exempt = last.startswith(("#", "|", "-", "*", "```")) or re.match(r"^\d+[.)]", last)
        truncated = not ends_with_references and not exempt and not text.endswith(_TERMINAL)

    leaked = bool(report) and (trace_tags.contains_tag(report) or any(m in report for m in cfg.leak_markers))
    return any(
        [validation, tool_calls, steps, sections, citations, sources, length, repetition, language,
         truncated, leaked]
    )  # fmt: skip


def _naive_chunk(chunk: list[Item], cfg: FilterConfig) -> list[bool]:
    return [naive_rejects(item, cfg) for item in chunk]


def naive_run(items: list[Item], cfg: FilterConfig, processes: int) -> list[bool]:
    """The naive loop over `processes` worker processes (a plain multiprocessing Pool), or in this
    process when `processes` is 1."""
    if processes <= 1:
        return _naive_chunk(items, cfg)
    chunks = [items[i : i + NAIVE_CHUNK] for i in range(0, len(items), NAIVE_CHUNK)]
    with multiprocessing.Pool(processes) as pool:
        return [v for part in pool.map(partial(_naive_chunk, cfg=cfg), chunks) for v in part]


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
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    started = time.perf_counter()
    naive = naive_run(items, cfg, processes=cores)  # as many processes as ours
    naive_s = time.perf_counter() - started

    one_core = items[:N_SERIAL]
    started, cpu = time.perf_counter(), time.process_time()
    serial = run_rules(one_core, replace(cfg, workers=1))
    serial_s, serial_cpu = time.perf_counter() - started, time.process_time() - cpu

    started = time.perf_counter()
    naive_serial = naive_run(one_core, cfg, processes=1)
    naive_serial_s = time.perf_counter() - started

    disagree = [i.id for i, o, n in zip(items, outcomes, naive, strict=True) if (not o.passed) != n]
    assert not disagree, f"ours and the naive loop disagree on traces {disagree[:10]}"
    assert naive_serial == naive[:N_SERIAL]
    assert [o.reasons for o in serial] == [o.reasons for o in outcomes[:N_SERIAL]]
    rejected = sum(not o.passed for o in outcomes)
    naive_rate = len(items) / naive_s
    naive_serial_rate = len(one_core) / naive_serial_s
    per_cpu_s = len(one_core) / serial_cpu  # CPU time: what a core does when nothing else runs on it
    return [
        Result(
            name=f"filter hard rules, {len(items):,} traces of {mean_kb:.1f} KB mean",
            ours=len(items) / ours_s,
            unit="traces/s",
            baseline=naive_rate,
            baseline_label=f"naive loop, one parse per trace, {cores} processes",
            target=f">= {TARGET:,.0f} traces/s on 2 cores",
            note=f"{cores} cores, load average {load:.1f} before the run (other work shares the cores); "
            f"{ours_s:.1f}s wall incl. worker start-up (naive {naive_s:.1f}s incl. pool start-up); "
            f"{rejected:,} rejected, verdicts equal to the naive loop's on all {len(items):,}; "
            f"sizes {sizes[0] / 1000:.1f}-{sizes[-1] / 1000:.1f} KB (built in {built:.1f}s)",
        ),
        Result(
            name="filter hard rules, one process",
            ours=len(one_core) / serial_s,
            unit="traces/s",
            baseline=naive_serial_rate,
            baseline_label="naive loop, one parse per trace, 1 process",
            note=f"both on the same {len(one_core):,} traces without worker processes: the ratio is what "
            f"batching the language check and our other per-trace savings buy; {per_cpu_s:,.0f} traces per CPU-second, "
            f"so about {cores * per_cpu_s:,.0f}/s on {cores} free cores before worker start-up",
        ),
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for result in run():
        print(result.name, result.ours_text(), result.baseline_text(), result.ratio_text(), result.note)
