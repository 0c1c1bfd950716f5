"""Trace parser throughput on a realistic ~50 KB trace, against naive scans of the same bytes.

The trace is built from the shape of tests/fixtures/trace_example.txt: a subtask list, six
subtasks of think / plan / search / observation / crawl / observation / answer, search results
and crawled pages of realistic length, a few messy spellings real models write (`query=...&num=`,
a tag in odd case), and a report with a 24-entry reference list.
"""

from __future__ import annotations

import json
import re

from oresearch_cli.trace import parse, validate

from common import Result, throughput

TARGET_BYTES = 50_000
N_SUBTASKS = 6


def _search_results(subtask: int, query: str, n: int) -> str:
    lines = [f"## Query: '{query}'"]
    for i in range(n):
        url = f"https://source{subtask}-{i}.example.org/articles/{query.replace(' ', '-')}-{i}"
        lines.append(f"{i + 1}. [{query.title()} result {i}]({url})")
        lines.append(
            f"Result {i} about {query}: measured values, dates and named sources that a later step may cite. "
            "The snippet runs for a couple of sentences the way search engines return them, with enough "
            "detail to decide whether the page is worth reading in full."
        )
    return "\n".join(lines)


def _page(subtask: int, paragraphs: int) -> str:
    body = [f"Page {subtask}: a long article"]
    for p in range(paragraphs):
        body.append(
            f"Paragraph {p} of the crawled page on subtask {subtask}. It reports figures (12.5%, 3,400 units, "
            "2019-2024), quotes an expert, compares two methods and explains why the difference matters. "
            "Pages like this one make up most of a trace's length, which is why the parser must skim them fast."
        )
    return "\n".join(body)


def build_trace(target: int = TARGET_BYTES) -> str:
    """A valid-looking trace of about `target` bytes (crawled pages grow until it is reached)."""
    paragraphs = 1
    text = _build(paragraphs)
    while len(text.encode("utf-8")) < target:
        paragraphs += 1
        text = _build(paragraphs)
    return text


def _build(paragraphs: int) -> str:
    questions = [
        f"Question {i}: what does the evidence say about aspect {i} of the topic?"
        for i in range(1, N_SUBTASKS + 1)
    ]
    parts = [
        "<subtask_list>\n"
        + "\n".join(f"{i}. {q}" for i, q in enumerate(questions, 1))
        + "\n</subtask_list>\n"
    ]
    for i, question in enumerate(questions, 1):
        query_a, query_b = f"aspect {i} evidence", f"aspect {i} recent study"
        # Real output mixes forms; the parser must take both at full speed.
        search = f"query={query_a} | {query_b}&num=8" if i % 2 else f"{query_a} | {query_b}&serp_num=8"
        think_tag = "<Think>" if i == 3 else "<think>"
        results = _search_results(i, query_a, 4) + "\n" + _search_results(i, query_b, 4)
        block = [
            f"\n<subtask>\n{question}\n</subtask>",
            f"{think_tag}\nI need sources on aspect {i}; a broad search first, then the most detailed page.\n</think>",
            "<plan>\n1. Search two phrasings.\n2. Read the best result.\n</plan>",
            f"<web_search>{search}</web_search>",
            f"<observation>\n{results}\n</observation>",
            "<think>\nResult 0 of the first query looks most detailed; reading it.\n</think>",
            f"<crawl_page>https://source{i}-0.example.org/articles/{query_a.replace(' ', '-')}-0</crawl_page>",
        ]
        block.append(f"<observation>\n{_page(i, paragraphs)}\n</observation>")
        block.append(
            f"<subtask_answer>\nAspect {i} is supported by two studies [{2 * i - 1}][{2 * i}].\n</subtask_answer>"
        )
        parts.append("\n".join(block) + "\n")
    refs = "\n".join(
        f"[{n}]. https://source{(n + 1) // 2}-{(n + 1) % 2}.example.org/articles/aspect-{(n + 1) // 2}-evidence-{(n + 1) % 2}"
        f" - Source {n}"
        for n in range(1, 2 * N_SUBTASKS + 1)
    )
    body = "\n\n".join(
        f"Aspect {i} holds, as two studies show [{2 * i - 1}, {2 * i}]." for i in range(1, N_SUBTASKS + 1)
    )
    parts.append(
        f"\n<suggested_answer>\n## Introduction\nThe topic has {N_SUBTASKS} aspects [1].\n\n## Body\n{body}\n\n"
        f"## Conclusion\nAll aspects hold [1][2].\n\n## References\n{refs}\n</suggested_answer>\n"
    )
    return "".join(parts)


_NAIVE_TAGS = re.compile(
    r"</?(subtask_list|subtask|think|plan|web_search|crawl_page|observation|subtask_answer|suggested_answer)>"
)


def _step_record(step: object) -> dict[str, object]:
    record = {"kind": step.kind}  # type: ignore[attr-defined]
    record.update({k: v for k, v in vars(step).items() if k != "offset"})
    return record


def run() -> list[Result]:
    text = build_trace()
    trace = parse(text)
    assert len(trace.subtasks) == N_SUBTASKS and trace.report is not None
    size_kb = len(text.encode("utf-8")) / 1000
    # The same content as a JSON document: what reading a trace stored as structured records costs.
    document = json.dumps(
        {
            "preamble": [_step_record(step) for step in trace.preamble],
            "subtasks": [
                {"question": s.question, "steps": [_step_record(step) for step in s.steps]}
                for s in trace.subtasks
            ],
            "report": trace.report.text,
        },
        ensure_ascii=False,
    )

    parse_rate = throughput(lambda: parse(text), 1)
    findall_rate = throughput(lambda: _NAIVE_TAGS.findall(text), 1)
    json_rate = throughput(lambda: json.loads(document), 1)
    validate_rate = throughput(lambda: validate(text), 1)
    return [
        Result(
            name=f"trace parse ({size_kb:.0f} KB trace)",
            ours=parse_rate,
            unit="traces/s",
            baseline=findall_rate,
            baseline_label="re.findall tag scan",
            note="ratio = parse speed / speed of a bare regex scan for the tags of the same text; "
            "1/ratio is what the lenient parse (matching, repairs, search args, records) costs in scans",
        ),
        Result(
            name="trace parse vs JSON",
            ours=parse_rate,
            unit="traces/s",
            baseline=json_rate,
            baseline_label=f"json.loads, {len(document) / 1000:.0f} KB",
            note="ratio = parse speed / json.loads speed on a JSON document of the same size and content; "
            ">1 means reading trace text is cheaper than reading the same trace stored as JSON",
        ),
        Result(
            name="trace validate",
            ours=validate_rate,
            unit="traces/s",
            baseline=parse_rate,
            baseline_label="parse alone",
            note="ratio = validate (parse + every rule + report analysis) speed / parse speed",
        ),
    ]


if __name__ == "__main__":
    for result in run():
        print(result.name, result.ours_text(), result.baseline_text(), result.ratio_text(), result.note)
