"""The learning experiment's measurement: a model answers held-out questions *alone*, writing the
whole trace through the single-model research loop with real tool calls over the workspace's
offline Wikipedia corpus; the traces are scored by rules (no judge).

    python scripts/learn_sft_eval.py run --ws learn-ws --model embedded --label base
    python scripts/learn_sft_eval.py run --ws learn-ws --model smollm2-135m-sft --label sft
    python scripts/learn_sft_eval.py report --ws learn-ws

`run` appends one JSON line per question to <ws>/learn/<label>.jsonl as each episode ends and
skips questions already there, so a killed run resumes. `report` prints, per label: the share of
valid traces (the trace validator, as the filter uses it), the share that called a tool, mean
tool calls, the share of cited URLs that resolve to a URL the trace observed, and mean tokens.
Questions run concurrently on one in-process engine, so their turns share forward passes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from oresearch_cli.agent.generators import load_engine_generator
from oresearch_cli.agent.single import LoopBudget, research
from oresearch_cli.textutil.urls import canonical_url
from oresearch_cli.tools import open_toolbox
from oresearch_cli.trace import (
    cited_urls,
    extract_references,
    is_valid,
    observed_urls,
    parse,
    report_text,
    tool_calls,
    validate,
)
from oresearch_cli.train.runs import resolve_base_model
from oresearch_cli.workspace import Workspace

# Short enough for 2 CPU cores, long enough for a two-subtask trace like the training ones.
BUDGET = LoopBudget(
    max_tool_calls=8, max_turns=24, max_new_tokens=1800, max_turn_tokens=700, max_seconds=900,
    temperature=0.3, seed=0,
)  # fmt: skip


def score(text: str) -> dict[str, Any]:
    """Rule metrics of one episode's text: validity, tool use, and citations (inline markers and
    reference entries) whose URL the trace observed. Computed from the stored text, so `report`
    rescored old runs when these rules change."""
    trace = parse(text)
    problems = validate(trace)
    observed = {canonical_url(u) for u in observed_urls(trace, include_crawled=True)}
    cited = [canonical_url(u) for u in cited_urls(trace)]
    report = report_text(trace)
    references = [canonical_url(r.url) for r in extract_references(report or "") if r.url]
    return {
        "valid": is_valid(problems),
        "problems": sorted({p.code for p in problems}),
        "n_tool_calls": sum(1 for call in tool_calls(trace) if call.answered),  # run: an observation follows
        "has_report": trace.report is not None,
        "n_cited": len(cited),
        "n_cited_observed": sum(1 for u in cited if u in observed),
        "n_references": len(references),
        "n_references_observed": sum(1 for u in references if u in observed),
    }


async def run(ws_path: Path, model: str, label: str, questions: Path, concurrency: int) -> Path:
    ws = Workspace.open(ws_path, create=False)
    out = ws.root / "learn" / f"{label}.jsonl"
    out.parent.mkdir(exist_ok=True)
    done = (
        {json.loads(line)["id"] for line in out.read_text().splitlines() if line.strip()}
        if out.exists()
        else set()
    )
    todo = [q for q in map(json.loads, questions.read_text().splitlines()) if q["id"] not in done]
    print(f"{label}: {len(done)} done, {len(todo)} to research with {model}", file=sys.stderr)
    if not todo:
        return out
    path = resolve_base_model(ws, model)
    gate = asyncio.Semaphore(concurrency)
    async with (
        load_engine_generator(path, max_batch=concurrency) as generator,
        open_toolbox(ws, search="local:wiki") as tools,
    ):

        async def one(item: dict[str, str]) -> None:
            async with gate:
                episode = await research(item["question"], generator, tools, budget=BUDGET)
            row = {
                "id": item["id"],
                "question": item["question"],
                "label": label,
                "model": model,
                "stop_reason": episode.stop_reason,
                "seconds": round(episode.seconds, 1),
                "model_tokens": episode.n_model_tokens,
                **score(episode.text),
            }
            row["text"] = episode.text
            with out.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            print(
                f"{label} {item['id']}: valid={row['valid']} tools={row['n_tool_calls']} "
                f"cited={row['n_cited_observed']}/{row['n_cited']} {row['stop_reason']} {row['seconds']}s",
                file=sys.stderr,
            )

        await asyncio.gather(*(one(item) for item in todo))
    return out


def report(ws_path: Path) -> list[dict[str, Any]]:
    rows_by_label: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((ws_path / "learn").glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rows_by_label[path.stem] = [{**row, **score(row["text"])} for row in rows]
    summary = []
    for label, rows in rows_by_label.items():
        n = len(rows) or 1
        cited = sum(r["n_cited"] for r in rows)
        references = sum(r["n_references"] for r in rows)
        summary.append(
            {
                "label": label,
                "questions": len(rows),
                "valid_share": round(sum(r["valid"] for r in rows) / n, 3),
                "with_report_share": round(sum(r["has_report"] for r in rows) / n, 3),
                "tool_use_share": round(sum(r["n_tool_calls"] > 0 for r in rows) / n, 3),
                "mean_tool_calls": round(sum(r["n_tool_calls"] for r in rows) / n, 2),
                "citations": cited,
                "citations_observed_share": round(sum(r["n_cited_observed"] for r in rows) / cited, 3)
                if cited
                else None,
                "references": references,
                "references_observed_share": round(
                    sum(r["n_references_observed"] for r in rows) / references, 3
                )
                if references
                else None,
                "mean_model_tokens": round(sum(r["model_tokens"] for r in rows) / n, 1),
            }
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run")
    run_p.add_argument("--ws", type=Path, required=True)
    run_p.add_argument("--model", required=True)
    run_p.add_argument("--label", required=True)
    run_p.add_argument("--questions", type=Path, default=Path("data/learn/questions-heldout.jsonl"))
    run_p.add_argument("--concurrency", type=int, default=8)
    rep = sub.add_parser("report")
    rep.add_argument("--ws", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "run":
        asyncio.run(run(args.ws, args.model, args.label, args.questions, args.concurrency))
    else:
        for row in report(args.ws):
            print(json.dumps(row))


if __name__ == "__main__":
    main()
