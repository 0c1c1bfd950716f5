"""`make learn-rl`, last step: the three rewards on the held-out answers before (SFT) and after RL,
and each reward component's curve over the GRPO steps.

    python scripts/learn_rl_report.py --ws learn-ws --config recipes/rl/smollm2-cpu.yaml

Reads the answers `learn_sft_eval.py run` stored (learn-ws/learn/<label>.jsonl, with their text)
and scores them with the reward functions `ores rl` trains on (train/rewards.py): R_format,
R_tool and R_base (the judge of the config's `llm:` section, which must be reachable, through the
workspace's judge cache). Prints one JSON line per label and writes learn-ws/learn/rl-curves.png
from the RL run's train log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oresearch_cli.filtering.judge import JudgeCache
from oresearch_cli.llm import LLMClient, load_config
from oresearch_cli.trace import is_valid, parse, validate
from oresearch_cli.train.rewards import REWARD_NAMES, BaseReward, format_reward, tool_reward
from oresearch_cli.workspace import Workspace

WEIGHTS = dict(zip(REWARD_NAMES, (0.6, 0.2, 0.2), strict=True))


async def base_rewards(ws: Workspace, config_path: Path, rows: list[dict[str, Any]]) -> list[float | None]:
    config = load_config(config_path, require=["judge"])
    cache = JudgeCache.for_workspace(ws)

    async def open_client() -> LLMClient:
        return await LLMClient(config).__aenter__()

    reward = BaseReward(open_client, cache)
    try:
        return await reward(
            prompts=[],
            completions=[],
            trace_text=[r["text"] for r in rows],
            question=[r["question"] for r in rows],
        )
    finally:
        await reward.aclose()
        cache.close()


def mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 4) if known else None


def summarize(label: str, rows: list[dict[str, Any]], base: list[float | None]) -> dict[str, Any]:
    texts = [r["text"] for r in rows]
    components: dict[str, list[float | None]] = {
        "base": base,
        "tool": list(tool_reward(texts, [r["n_tool_calls"] for r in rows])),
        "format": list(format_reward(texts)),
    }
    totals: list[float | None] = []
    for i in range(len(rows)):
        values = [components[n][i] for n in REWARD_NAMES]
        known = [v for v in values if v is not None]
        totals.append(
            sum(WEIGHTS[n] * v for n, v in zip(REWARD_NAMES, known, strict=True))
            if len(known) == len(values)
            else None
        )
    return {
        "label": label,
        "questions": len(rows),
        "valid_share": round(sum(is_valid(validate(parse(t))) for t in texts) / max(1, len(rows)), 3),
        **{f"mean_{n}": mean(v) for n, v in components.items()},
        "judge_missing": sum(v is None for v in base),
        "mean_weighted": mean(totals),
        "weighted": totals,  # per question, for the paired comparison (popped before printing)
    }


def paired(before: list[float | None], after: list[float | None], seed: int = 0) -> dict[str, Any]:
    """After minus before on the same questions: mean, a 95% paired-bootstrap interval, and
    wins/ties/losses, so the README can say whether a difference is more than chance."""
    import random

    diffs = [b - a for a, b in zip(before, after, strict=True) if a is not None and b is not None]
    if not diffs:
        return {"n": 0}
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=len(diffs))) / len(diffs) for _ in range(10_000))
    return {
        "n": len(diffs),
        "mean_diff": round(sum(diffs) / len(diffs), 4),
        "ci95": [round(means[249], 4), round(means[9749], 4)],
        "wins": sum(d > 1e-9 for d in diffs),
        "ties": sum(abs(d) <= 1e-9 for d in diffs),
        "losses": sum(d < -1e-9 for d in diffs),
    }


def curves(ws: Workspace, out: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Every registered run of the RL model (a paused run and its resumption), a step's latest
    # line winning; runs killed before registering (OOM tries) are left out.
    columns, rows = ws.sql(
        'select * from train_log_all where "rewards/format/mean" is not null and run_id in '
        f"(select run_id from models_all where id = '{model.replace(chr(39), chr(39) * 2)}') "
        "qualify row_number() over (partition by step order by run_id desc) = 1 order by step"
    )
    if not rows:
        print(f"no train log of {model} in this workspace: no curves drawn", file=sys.stderr)
        return
    data = [dict(zip(columns, row, strict=True)) for row in rows]
    steps = [d["step"] for d in data]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in (*REWARD_NAMES, "total"):
        key = "reward" if name == "total" else f"rewards/{name}/mean"
        ax.plot(
            steps,
            [float("nan") if d.get(key) is None else float(d[key]) for d in data],
            marker="o",
            label=f"R_{name}" if name != "total" else "weighted",
        )
    # each step is one question: a running mean shows the trend under the question-to-question noise
    totals = [float("nan") if d.get("reward") is None else float(d["reward"]) for d in data]
    running = [
        sum(totals[max(0, i - 2) : i + 1]) / len(totals[max(0, i - 2) : i + 1]) for i in range(len(totals))
    ]
    ax.plot(steps, running, linestyle="--", color="black", label="weighted, mean of 3 steps")
    ax.set_xlabel("GRPO step (4 rollouts of one question each)")
    ax.set_ylabel("mean reward")
    ax.set_title("ores rl on SmolLM2-135M (SFT), 2 CPU cores")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"curves: {out}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ws", type=Path, required=True)
    parser.add_argument(
        "--config", type=Path, required=True, help="a config whose llm: section has the judge"
    )
    parser.add_argument("--labels", default="sft,rl")
    parser.add_argument("--model", default="smollm2-135m-rl", help="the RL model whose curves are drawn")
    args = parser.parse_args()
    ws = Workspace.open(args.ws, create=False)
    answers: dict[str, list[dict[str, Any]]] = {}
    for label in args.labels.split(","):
        path = args.ws / "learn" / f"{label}.jsonl"
        if not path.exists():
            print(f"{path}: missing; run learn_sft_eval.py run --label {label} first", file=sys.stderr)
            continue
        answers[label] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    # Compare on the questions every label answered (an interrupted evaluation covers fewer).
    common = set.intersection(*({r["id"] for r in rows} for rows in answers.values())) if answers else set()
    totals: dict[str, list[float | None]] = {}
    for label, rows in answers.items():
        rows = sorted((r for r in rows if r["id"] in common), key=lambda r: r["id"])
        base = asyncio.run(base_rewards(ws, args.config, rows))
        summary = summarize(label, rows, base)
        totals[label] = summary.pop("weighted")
        if len(totals) > 1:
            first = next(iter(totals))
            summary[f"weighted_vs_{first}"] = paired(totals[first], totals[label])
        print(json.dumps(summary))
    curves(ws, args.ws / "learn" / "rl-curves.png", args.model)


if __name__ == "__main__":
    main()
