"""`ores sft` under DeepSpeed ZeRO-2 through `accelerate launch`, on two CPU processes.

The real CLI with `--accelerate-config recipes/accelerate/cpu-zero2.yaml --num-processes 2`
launches two ranks that each run `ores sft` again: both train (ZeRO-2 partitions the optimizer
state, one file per rank in each checkpoint, and each rank reads its own share of the data),
rank 0 alone writes the catalog, the train log and the final model, which loads with
transformers. The first run compiles DeepSpeed's shared-memory comm op (~30-60 s, cached after).
The test process never imports torch. One fast test covers the race the ranks share: the output
folder while rank 0 claims it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oresearch_cli.errors import WorkspaceError
from oresearch_cli.train.runs import RUN_FILE, check_output_dir, write_run_file

from conftest import REPO, ores
from filter_support import traces_file
from model_support import free_port, run_python
from train_support import qwen2_style

CPU_ZERO2 = REPO / "recipes" / "accelerate" / "cpu-zero2.yaml"

# What CPU needs under DeepSpeed (see recipes/accelerate/cpu-zero2.yaml): the gloo backend named,
# or accelerate counts one process while DeepSpeed runs two. One example per rank and step.
RECIPE = """
sft:
  ddp_backend: gloo
  gradient_accumulation_steps: 1
  warmup_steps: 0
  learning_rate: 1.0e-3
  lr_scheduler_type: constant
  max_length: 4096
"""


# -- the output folder while rank 0 claims it ------------------------------------------------------


def test_a_folder_rank_0_is_claiming_is_new_to_the_other_ranks(tmp_path: Path) -> None:
    out = tmp_path / "models" / "sft-abc"
    assert check_output_dir(out, "abc") is None
    out.mkdir(parents=True)
    assert check_output_dir(out, "abc") is None
    # Rank 0 between writing its run file and renaming it into place: not someone else's folder.
    (out / (RUN_FILE + ".tmp")).write_text('{"run_id": "sft-1", "conf', encoding="utf-8")
    assert check_output_dir(out, "abc") is None
    write_run_file(out, "abc", "sft-1", "running")
    assert check_output_dir(out, "abc") == "resume"
    write_run_file(out, "abc", "sft-1", "done")
    assert check_output_dir(out, "abc") == "done"
    (out / RUN_FILE).unlink()
    (out / "weights.bin").write_bytes(b"x")
    with pytest.raises(WorkspaceError, match="holds files of something else"):
        check_output_dir(out, "abc")


# -- the real thing, on CPU -----------------------------------------------------------------------

_LOAD = r"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
final, base = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(final)
original = AutoModelForCausalLM.from_pretrained(base)
tokenizer = AutoTokenizer.from_pretrained(final)
trained = dict(model.named_parameters())
moved = sum(float((trained[n].detach() - p.detach()).abs().sum()) for n, p in original.named_parameters())
print(json.dumps({
    "params": sum(p.numel() for p in model.parameters()),
    "base_params": sum(p.numel() for p in original.parameters()),
    "moved": moved,
    "finite": all(bool(torch.isfinite(p).all()) for p in model.parameters()),
    "template": bool(tokenizer.chat_template),
}))
"""


def _skip_without_deepspeed_stack() -> None:
    needed = ("torch", "transformers", "trl", "accelerate", "deepspeed")
    missing = [n for n in needed if importlib.util.find_spec(n) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: pip install 'ores[train]' deepspeed")


def _env() -> dict[str, str]:
    """This environment without a launcher's markers (a launched rank would not launch again), on
    CPU even where GPUs are visible, one thread per rank."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ACCELERATE_", "LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_"))
    }
    env.pop("ORES_WS", None)
    env.update({
        "COLUMNS": "200", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    })  # fmt: skip
    return env


def _sft(root: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oresearch_cli", "sft", *args],
        cwd=root, env=_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ores_sft_trains_under_zero2_on_two_cpu_processes(tmp_path: Path) -> None:
    _skip_without_deepspeed_stack()
    base = qwen2_style(tmp_path / "tiny-qwen2")
    traces_file(tmp_path / "traces.jsonl", n_good=6, broken=False)
    (tmp_path / "recipe.yaml").write_text(RECIPE, encoding="utf-8")
    port = str(free_port())  # not accelerate's default 29500: another job may hold it
    argv = [
        "traces.jsonl", "--recipe", "recipe.yaml", "--model", "tiny-qwen2", "--ws", "ws",
        "--accelerate-config", str(CPU_ZERO2), "--num-processes", "2", "--main-process-port", port,
        "--max-steps", "2", "--save-steps", "1",
    ]  # fmt: skip

    # --dry-run: the accelerate command that every rank runs, and nothing trained or written.
    dry = _sft(tmp_path, *argv, "--dry-run", timeout=120)
    assert dry.returncode == 0, dry.stderr[-3000:]
    (line,) = dry.stdout.splitlines()
    assert line.startswith(f"{sys.executable} -m accelerate.commands.launch --config_file {CPU_ZERO2} ")
    assert f"--num_processes 2 --num_machines 1 --machine_rank 0 --main_process_port {port} " in line
    assert line.endswith(f"-m oresearch_cli sft {' '.join(argv)}")  # the same argv, less --dry-run
    assert not (tmp_path / "ws").exists()

    started = time.monotonic()
    done = _sft(tmp_path, *argv, timeout=840)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-6000:]
    assert "Traceback" not in done.stderr, done.stderr[-6000:]
    assert "ores sft: launching 2 processes" in done.stderr

    # Only rank 0 writes the catalog: one run, one model row.
    rows = json.loads(
        ores("ws", "sql", "select * from models_all", "--json", "--ws", "ws", cwd=tmp_path).stdout
    )
    assert len(rows) == 1, rows
    (row,) = rows
    assert (row["method"], row["steps"], row["resumed_from"]) == ("full", 2, None)
    assert row["n_train"] + row["n_eval"] == 6 and row["tokens_seen"] > 0
    assert len(json.loads(row["loss_curve"])) == 2
    run_dir = tmp_path / "ws" / "artifacts" / "sft" / row["run_id"]
    logged = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert logged and len({x["id"] for x in logged}) == len(logged)  # one writer, no line twice

    # Both ranks trained under ZeRO-2: a partition of the optimizer state per rank, an RNG state
    # per rank, and each rank read its own half of the data (an epoch is ceil(n_train / 2) steps).
    final = tmp_path / "ws" / row["path"]
    for step in (1, 2):
        checkpoint = final / "checkpoints" / f"checkpoint-{step}"
        states = sorted(p.name for p in (checkpoint / f"global_step{step}").glob("*optim_states.pt"))
        assert states == [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)], states
        assert {p.name for p in checkpoint.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    state = json.loads((final / "checkpoints" / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(1 / math.ceil(row["n_train"] / 2))

    # The final model: saved once, with its tokenizer and manifest, and it loads and has learnt.
    assert json.loads((final / "ores-sft.json").read_text(encoding="utf-8"))["protocol"] == "single"
    assert json.loads((final / RUN_FILE).read_text(encoding="utf-8"))["status"] == "done"
    loaded = json.loads(run_python(_LOAD, final, base, timeout=180))
    assert loaded["params"] == loaded["base_params"] and loaded["finite"] and loaded["template"]
    assert loaded["moved"] > 0
    print(f"ores sft under cpu-zero2: 2 ranks, 2 steps in {elapsed:.1f} s")
