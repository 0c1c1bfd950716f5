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
    }


def curves(ws: Workspace, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns, rows = ws.sql('select * from train_log where "rewards/format/mean" is not null order by step')
    if not rows:
        print("no RL train log in this workspace: no curves drawn", file=sys.stderr)
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
    for label, rows in answers.items():
        rows = sorted((r for r in rows if r["id"] in common), key=lambda r: r["id"])
        base = asyncio.run(base_rewards(ws, args.config, rows))
        print(json.dumps(summarize(label, rows, base)))
    curves(ws, args.ws / "learn" / "rl-curves.png")


if __name__ == "__main__":
    main()
