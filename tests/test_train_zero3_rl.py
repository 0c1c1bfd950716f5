"""`ores rl` under DeepSpeed ZeRO-3 on two CPU processes: multi-turn rollouts keep ranks in step.

Under ZeRO-3 every forward pass all-gathers the weights' shards, so both ranks must run the same
number of them, while each rank's rollouts take their own number of turns and tokens. Both ways
`ores rl` generates there are run for one GRPO step through the real CLI and `accelerate launch`:
  - `ds3_gather_for_generation: true` (TRL's default): the weights are gathered once per batch and
    each rank decodes alone;
  - `ds3_gather_for_generation: false`: the weights stay sharded and `LockstepEngine` runs every
    rank's forward passes in step (without it this run hangs; tests/test_lockstep.py shows why).
Both ranks' rollouts reach the workspace (rank 0 writes them), each under its own id.
Slow (DeepSpeed's comm op compiles on the first run, ~30-60 s): `pytest -m slow`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_train_rl import corpus_root, sql, tiny  # noqa: F401  (fixtures)
from test_train_zero2 import _env, _skip_without_deepspeed_stack

from conftest import REPO
from model_support import free_port

CPU_ZERO3 = REPO / "recipes" / "accelerate" / "cpu-zero3.yaml"

RECIPE = """
rl:
  ddp_backend: gloo
  num_generations: 2
  per_device_train_batch_size: 2
  gradient_accumulation_steps: 1
  learning_rate: 1.0e-3
  temperature: 1.0
  ds3_gather_for_generation: {gather}
  ores:
    search: local:mini
    crawl: local
    reward_weights: [0.0, 0.5, 0.5]
    budget: {{max_tool_calls: 2, max_turns: 3, max_new_tokens: 300, max_turn_tokens: 150, max_seconds: 120}}
    name: tiny-rl-zero3-{label}
"""


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("gather", [True, False], ids=["gathered", "lockstep"])
def test_ores_rl_runs_under_zero3_on_two_cpu_processes(tiny: Path, gather: bool) -> None:  # noqa: F811
    _skip_without_deepspeed_stack()
    label = "gathered" if gather else "lockstep"
    recipe = tiny / f"zero3-{label}.yaml"
    recipe.write_text(RECIPE.format(gather=str(gather).lower(), label=label), encoding="utf-8")
    argv = [
        "rl", "questions.jsonl", "--recipe", recipe.name, "--from", "tiny-sft", "--ws", "ws",
        "--accelerate-config", str(CPU_ZERO3), "--num-processes", "2",
        "--main-process-port", str(free_port()), "--max-steps", "1",
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "oresearch_cli", *argv],
        cwd=tiny, env=_env(), capture_output=True, text=True, timeout=1100,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-6000:]
    assert "Traceback" not in done.stderr, done.stderr[-6000:]
    assert "ores rl: launching 2 processes" in done.stderr
    lockstep_note = "1 generation batches decoded in lockstep over 2 ranks"
    assert (lockstep_note in done.stderr) is (not gather), done.stderr[-3000:]

    (row,) = sql(tiny, f"select * from models_all where id = 'tiny-rl-zero3-{label}'")
    assert row["steps"] == 1 and row["rollouts"] == 4  # 2 ranks x 2 prompts (one group each)
    rollouts = sql(tiny, f"select * from rollouts_all where run_id = '{row['run_id']}'")
    ids = sorted(r["id"] for r in rollouts)
    assert len(ids) == 4 and {i.split("-")[2] for i in ids} == {"r0", "r1"}, ids
    assert all(r["reward_format"] is not None and r["reward_tool"] is not None for r in rollouts)
    curve = json.loads(row["reward_curve"])
    assert [step for step, _ in curve] == [1]
    print(f"ores rl under cpu-zero3 ({label}): 2 ranks, one GRPO step in {elapsed:.1f} s")
