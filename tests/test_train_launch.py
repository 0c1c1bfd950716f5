"""`ores sft` at scale: the accelerate command, its checks, and the recipes it reads.

The accelerate configs are loaded by accelerate's own parser, and the commands we build are fed
back through `accelerate launch`'s own argument handling, so a typo in either shows up here, not
on a GPU cluster. The slow test runs DeepSpeed ZeRO-2 for real on two CPU processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from oresearch_cli.config import apply, load_recipe
from oresearch_cli.errors import ConfigError
from oresearch_cli.train import launch
from oresearch_cli.train.launch import (
    LaunchSettings,
    check,
    inside_launcher,
    launch_command,
    needs_launcher,
    shell_line,
    total_processes,
)

from conftest import REPO

ACCEL = REPO / "recipes" / "accelerate"
SFT = REPO / "recipes" / "sft"
GPU_RECIPES = [SFT / "qwen2.5-7b.yaml", SFT / "qwen2.5-72b.yaml"]
PY = "/opt/venv/bin/python"
ARGV = ["sft", "--recipe", "r.yaml", "--ws", "ws"]
HEAD = [PY, "-m", "accelerate.commands.launch"]
TAIL = ["-m", "oresearch_cli", *ARGV]
W = "r.yaml: sft.ores.launch"


def _cfg(name: str) -> str:
    return f"recipes/accelerate/{name}.yaml"


# -- the command ----------------------------------------------------------------------------------

COMMANDS: list[tuple[str, LaunchSettings, int | None, list[str]]] = [
    (
        "single-gpu",
        LaunchSettings(accelerate_config=_cfg("single-gpu")),
        1,
        ["--config_file", _cfg("single-gpu"), "--num_processes", "1", "--num_machines", "1", "--machine_rank", "0"],
    ),
    (
        "zero2, one process per GPU",
        LaunchSettings(accelerate_config=_cfg("zero2")),
        8,
        ["--config_file", _cfg("zero2"), "--num_processes", "8", "--num_machines", "1", "--machine_rank", "0"],
    ),
    (
        "zero3, processes given",
        LaunchSettings(accelerate_config=_cfg("zero3"), num_processes=8),
        None,  # no GPU count asked when num_processes is set
        ["--config_file", _cfg("zero3"), "--num_processes", "8", "--num_machines", "1", "--machine_rank", "0"],
    ),
    (
        "zero3-offload on one GPU",
        LaunchSettings(accelerate_config=_cfg("zero3-offload")),
        1,
        ["--config_file", _cfg("zero3-offload"), "--num_processes", "1", "--num_machines", "1", "--machine_rank", "0"],
    ),
    (
        "multi-node, rank 2 of 4",
        LaunchSettings(
            accelerate_config=_cfg("multi-node"), num_machines=4, machine_rank=2, main_process_ip="10.0.0.1"
        ),
        8,
        [
            "--config_file", _cfg("multi-node"),
            "--num_processes", "32",  # all machines together, as accelerate counts
            "--num_machines", "4",
            "--machine_rank", "2",
            "--main_process_ip", "10.0.0.1",
            "--main_process_port", "29500",
        ],
    ),
    (
        "one machine, a second job on its own port",
        LaunchSettings(accelerate_config=_cfg("zero3"), main_process_port=29600),
        8,
        [
            "--config_file", _cfg("zero3"), "--num_processes", "8", "--num_machines", "1", "--machine_rank", "0",
            "--main_process_port", "29600",
        ],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("label", "settings", "gpus", "flags"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_launch_command_is_exact(
    label: str, settings: LaunchSettings, gpus: int | None, flags: list[str]
) -> None:
    command = launch_command(settings, ARGV, gpus_per_machine=gpus, python=PY)
    assert command == [*HEAD, *flags, *TAIL]


def test_launch_command_defaults_to_this_interpreter() -> None:
    command = launch_command(LaunchSettings(accelerate_config=_cfg("zero3")), ["sft"], gpus_per_machine=2)
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]


def test_shell_line_quotes_what_a_shell_would_split() -> None:
    settings = LaunchSettings(accelerate_config="my configs/zero3.yaml", num_processes=2)
    line = shell_line(launch_command(settings, ["sft", "--recipe", "a b.yaml"], python=PY))
    assert line == (
        f"{PY} -m accelerate.commands.launch --config_file 'my configs/zero3.yaml' --num_processes 2 "
        "--num_machines 1 --machine_rank 0 -m oresearch_cli sft --recipe 'a b.yaml'"
    )


def test_needs_launcher_only_with_an_accelerate_config() -> None:
    assert not needs_launcher(LaunchSettings())
    assert needs_launcher(LaunchSettings(accelerate_config=_cfg("zero3")))
    with pytest.raises(ValueError, match="needs_launcher"):
        launch_command(LaunchSettings(), ARGV, gpus_per_machine=1)


def test_num_processes_null_without_a_gpu_is_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        total_processes(LaunchSettings(accelerate_config=_cfg("zero3")), gpus_per_machine=0, where=W)
    assert str(err.value) == (
        f"{W}: num_processes is null (one per GPU) but no GPU is visible; "
        "set num_processes (2 for recipes/accelerate/cpu-zero2.yaml) or run on a GPU machine"
    )


def test_importing_launch_imports_no_torch() -> None:
    code = (
        "import sys, oresearch_cli.train.launch; print('torch' in sys.modules, 'accelerate' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["False", "False"]


# -- inside a launcher ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "inside"),
    [
        ({}, False),
        ({"PATH": "/usr/bin", "OMP_NUM_THREADS": "1"}, False),
        ({"LOCAL_RANK": "-1"}, False),  # "not distributed", as some tools write it
        ({"ACCELERATE_MIXED_PRECISION": ""}, False),
        ({"ACCELERATE_MIXED_PRECISION": "bf16"}, True),  # every accelerate launcher sets it
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, True),
        ({"LOCAL_RANK": "0", "RANK": "3", "WORLD_SIZE": "8"}, True),  # torchrun / deepspeed
        ({"WORLD_SIZE": "2"}, True),
    ],
)
def test_inside_launcher(environ: dict[str, str], inside: bool) -> None:
    assert inside_launcher(environ) is inside


# -- the checks: one line each --------------------------------------------------------------------


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # accelerate_config paths are relative to the working directory


def _error(settings: LaunchSettings) -> str:
    with pytest.raises(ConfigError) as err:
        check(settings, where=W)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{W}: ") and "; " in message
    return message


def test_missing_accelerate_config(in_repo: None) -> None:
    assert _error(LaunchSettings(accelerate_config="recipes/accelerate/zero4.yaml")) == (
        f"{W}: accelerate_config recipes/accelerate/zero4.yaml does not exist (looked in {REPO}); "
        "fix the path (relative to the working directory) or pick one of recipes/accelerate/*.yaml"
    )


def test_multi_node_without_ip(in_repo: None) -> None:
    assert _error(LaunchSettings(accelerate_config=_cfg("multi-node"), num_machines=4)) == (
        f"{W}: num_machines is 4 but main_process_ip is not set; "
        "pass --main-process-ip with the rank-0 machine's address on every machine"
    )


def test_multi_node_without_accelerate_config(in_repo: None) -> None:
    assert _error(LaunchSettings(num_machines=2, main_process_ip="10.0.0.1")) == (
        f"{W}: num_machines is 2 but accelerate_config is null; name one, e.g. recipes/accelerate/multi-node.yaml"
    )


def test_machine_rank_not_below_num_machines(in_repo: None) -> None:
    settings = LaunchSettings(_cfg("multi-node"), num_machines=4, machine_rank=4, main_process_ip="10.0.0.1")
    assert _error(settings) == (
        f"{W}: machine_rank 4 is not below num_machines 4; give each machine a rank from 0 to 3"
    )


def test_fewer_processes_than_machines(in_repo: None) -> None:
    settings = LaunchSettings(_cfg("multi-node"), num_processes=2, num_machines=4, main_process_ip="10.0.0.1")
    assert _error(settings) == (
        f"{W}: num_processes 2 is fewer than num_machines 4 (num_processes counts all machines together); "
        "set it to GPUs per machine x machines, or null to count the GPUs"
    )


def test_processes_that_do_not_split_over_machines(in_repo: None) -> None:
    settings = LaunchSettings(
        _cfg("multi-node"), num_processes=30, num_machines=4, main_process_ip="10.0.0.1"
    )
    assert _error(settings) == (
        f"{W}: num_processes 30 does not split evenly over 4 machines; "
        "set it to GPUs per machine x machines, or null to count the GPUs"
    )


def test_free_port_across_machines(in_repo: None) -> None:
    settings = LaunchSettings(
        _cfg("multi-node"), num_machines=2, main_process_ip="10.0.0.1", main_process_port=0
    )
    assert _error(settings) == (
        f"{W}: main_process_port 0 (any free port) cannot work across 2 machines; "
        "pass the same --main-process-port on every machine (default 29500)"
    )


@pytest.mark.parametrize("name", ["zero2", "zero3", "zero3-offload", "multi-node", "cpu-zero2"])
def test_deepspeed_config_without_deepspeed(
    in_repo: None, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setattr(launch, "deepspeed_available", lambda: False)
    settings = LaunchSettings(_cfg(name), num_machines=1)
    assert _error(settings) == (
        f"{W}: accelerate_config {_cfg(name)} runs DeepSpeed, which is not installed; "
        "pip install deepspeed (on the GPU machines), or pick recipes/accelerate/single-gpu.yaml"
    )
    check(LaunchSettings(_cfg("single-gpu")), where=W)  # no DeepSpeed, no need of it


def test_unreadable_accelerate_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list, not a mapping\n", encoding="utf-8")
    assert _error(LaunchSettings(accelerate_config=str(bad))) == (
        f"{W}: accelerate_config {bad} is not a mapping of accelerate settings; "
        "start from one of recipes/accelerate/*.yaml"
    )


def test_good_settings_pass(in_repo: None) -> None:
    check(LaunchSettings(), where=W)  # in-process
    for name in ("single-gpu", "zero2", "zero3", "zero3-offload", "cpu-zero2"):
        check(LaunchSettings(_cfg(name)), where=W)
    check(LaunchSettings(_cfg("multi-node"), num_machines=4, machine_rank=3, main_process_ip="h0"), where=W)


def test_settings_bounds_come_from_the_config_loader() -> None:
    with pytest.raises(ConfigError, match=r"r.yaml: sft.ores.launch.num_machines must be at least 1, got 0"):
        apply(LaunchSettings(), {"num_machines": 0}, "r.yaml", "sft.ores.launch.")
    with pytest.raises(ConfigError, match=r"sft.ores.launch.num_procs is not a"):
        apply(LaunchSettings(), {"num_procs": 8}, "r.yaml", "sft.ores.launch.")


# -- the accelerate configs, through accelerate's own code -----------------------------------------

ACCEL_FILES = sorted(ACCEL.glob("*.yaml"))


def test_the_expected_accelerate_configs_exist() -> None:
    assert {p.stem for p in ACCEL_FILES} >= {
        "single-gpu", "zero2", "zero3", "zero3-offload", "multi-node", "cpu-zero2", "cpu-zero3",
    }  # fmt: skip


@pytest.mark.parametrize("path", ACCEL_FILES, ids=[p.stem for p in ACCEL_FILES])
def test_accelerate_config_loads_with_accelerate(path: Path) -> None:
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import launch_command_parser
    from accelerate.utils import ComputeEnvironment, DistributedType

    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig)
    assert config.compute_environment == ComputeEnvironment.LOCAL_MACHINE
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if path.stem == "single-gpu":
        assert config.distributed_type == DistributedType.NO and config.mixed_precision == "bf16"
        return
    assert config.distributed_type == DistributedType.DEEPSPEED
    ds = config.deepspeed_config
    # accelerate copies deepspeed_config keys onto its launch arguments unchecked: a misspelt key
    # would be ignored silently, so each must be one of `accelerate launch`'s own options.
    options = {action.dest for action in launch_command_parser()._actions}
    assert set(ds) <= options, set(ds) - options
    # Left to "auto" so the Trainer fills them from the recipe; `auto` written out breaks Accelerator().
    assert "gradient_accumulation_steps" not in ds and "gradient_clipping" not in ds
    on_cpu = path.stem.startswith("cpu-")
    assert raw["mixed_precision"] == ("no" if on_cpu else "bf16")
    stage = {"zero2": 2, "cpu-zero2": 2}.get(path.stem, 3)
    assert ds["zero_stage"] == stage
    if stage == 3:
        assert ds["zero3_init_flag"] is True and ds["zero3_save_16bit_model"] is True
    offload = "cpu" if path.stem == "zero3-offload" else "none"
    assert (ds["offload_optimizer_device"], ds["offload_param_device"]) == (offload, offload)
    if path.stem == "multi-node":
        assert ds["deepspeed_multinode_launcher"] == "standard"  # torchrun on each node, no pdsh/ssh
    if on_cpu:
        assert config.use_cpu is True and config.num_processes == 2


def _accelerate_args(command: list[str]) -> Any:
    """`command` parsed and validated by `accelerate launch` itself, stopping before it runs anything."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    assert command[:3] == HEAD
    args = launch_command_parser().parse_args(command[3:])
    args, _defaults, _mp = _validate_launch_command(args)
    return args


def test_multi_node_command_through_accelerate(in_repo: None) -> None:
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    settings = LaunchSettings(_cfg("multi-node"), num_machines=4, machine_rank=1, main_process_ip="10.0.0.1")
    args = _accelerate_args(launch_command(settings, ARGV, gpus_per_machine=8, python=PY))
    assert args.use_deepspeed and args.module and args.training_script == "oresearch_cli"
    assert args.training_script_args == ARGV
    # What accelerate's launch_command() sets before its DeepSpeed launcher (commands/launch.py).
    args.deepspeed_fields_from_accelerate_config = "zero_stage,zero3_init_flag"
    cmd, env = prepare_deepspeed_cmd_env(args)
    assert cmd is None  # `standard`: accelerate runs torchrun in-process on each node
    assert (args.nproc_per_node, args.nnodes, args.node_rank) == ("8", "4", 1)
    assert args.rdzv_endpoint == "10.0.0.1:29500"  # torchrun's static rendezvous at node 0
    assert (
        env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3" and "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in env
    )
    assert inside_launcher(env)


def test_single_gpu_command_through_accelerate(in_repo: None) -> None:
    from accelerate.utils.launch import prepare_simple_launcher_cmd_env

    args = _accelerate_args(
        launch_command(LaunchSettings(_cfg("single-gpu")), ARGV, gpus_per_machine=1, python=PY)
    )
    assert not args.use_deepspeed and not args.multi_gpu and args.num_processes == 1
    cmd, env = prepare_simple_launcher_cmd_env(args)
    assert cmd[1:] == ["-m", "oresearch_cli", *ARGV]  # accelerate's own interpreter, then ours
    assert inside_launcher(env) and env["ACCELERATE_MIXED_PRECISION"] == "bf16"


# -- the sft recipes ------------------------------------------------------------------------------


def _sft(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and set(data) == {"sft"}
    return dict(data["sft"])


@pytest.mark.parametrize("path", GPU_RECIPES, ids=[p.stem for p in GPU_RECIPES])
def test_gpu_recipe_keys_are_trl_sft_config_fields(path: Path) -> None:
    from trl import SFTConfig

    section = _sft(path)
    ores = section.pop("ores")
    fields = {f.name for f in dataclasses.fields(SFTConfig) if f.init}
    assert set(section) <= fields, set(section) - fields
    assert section["max_length"] == 65536 and section["bf16"] is True and section["use_liger_kernel"] is True
    assert section["per_device_eval_batch_size"] == 1  # TRL's 8 x 64k would not fit
    assert section["report_to"] == "none" and section["save_strategy"] == "steps"
    assert ores["model"].startswith("Qwen/Qwen2.5-") and ores["eval_split"] == 0.05
    assert ores["overlong"] == "truncate"


@pytest.mark.parametrize("path", GPU_RECIPES, ids=[p.stem for p in GPU_RECIPES])
def test_gpu_recipe_launch_block(path: Path, in_repo: None) -> None:
    block = _sft(path)["ores"]["launch"]
    settings = apply(LaunchSettings(), block, str(path), "sft.ores.launch.")
    assert Path(settings.accelerate_config or "").is_file()
    if "72b" in path.stem:
        assert settings.num_machines == 4 and settings.accelerate_config == _cfg("multi-node")
        with pytest.raises(ConfigError, match="main_process_ip is not set"):
            check(settings, where=W)  # the ip comes from --main-process-ip
        settings = dataclasses.replace(settings, main_process_ip="10.0.0.1", machine_rank=3)
        assert launch_command(settings, ARGV, gpus_per_machine=8, python=PY)[6] == "32"
    else:
        assert settings.num_machines == 1 and settings.accelerate_config == _cfg("zero3")
        assert launch_command(settings, ARGV, gpus_per_machine=8, python=PY)[6] == "8"
    check(settings, where=W)


@pytest.mark.parametrize("path", GPU_RECIPES, ids=[p.stem for p in GPU_RECIPES])
def test_gpu_recipe_resolves_through_ores_settings(path: Path) -> None:
    from oresearch_cli.train.settings import resolve_sft

    resolved = resolve_sft(load_recipe(path), environ={})
    assert resolved.trl["max_length"] == 65536
    assert resolved.ores.launch.accelerate_config is not None


# -- the real thing, on CPU -----------------------------------------------------------------------

TINY = """
import json, os, sys

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from oresearch_cli.train.launch import inside_launcher

# gloo named explicitly: with no GPU, accelerate finds no default backend and would count one
# process while DeepSpeed runs two (TRL's equivalent is `ddp_backend: gloo`).
accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")])
torch.manual_seed(0)  # the same initial weights on both ranks
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
x = torch.randn(32, 8)
data = torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True))
loader = torch.utils.data.DataLoader(data, batch_size=4)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
before = [p.detach().clone() for p in model.parameters()]
inputs, targets = next(iter(loader))  # each rank its own shard of the data
loss = torch.nn.functional.mse_loss(model(inputs), targets)
accelerator.backward(loss)
optimizer.step()
optimizer.zero_grad()
result = {
    "rank": accelerator.process_index,
    "world": accelerator.num_processes,
    "distributed_type": str(accelerator.distributed_type),
    "engine": type(model).__name__,
    "zero_stage": model.zero_optimization_stage(),
    "optimizer": type(optimizer.optimizer).__name__,
    "backend": torch.distributed.get_backend(),
    "device": str(accelerator.device),
    "inside_launcher": inside_launcher(os.environ),
    "loss": float(loss),
    "moved": sum(float((p.detach() - b).abs().sum()) for p, b in zip(model.parameters(), before)),
    "checksum": sum(float(p.detach().double().sum()) for p in model.parameters()),
}
with open(os.path.join(sys.argv[1], f"rank{accelerator.process_index}.json"), "w") as f:
    json.dump(result, f)
accelerator.wait_for_everyone()
accelerator.end_training()
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cpu_zero2_runs_one_deepspeed_step(tmp_path: Path, in_repo: None) -> None:
    """`accelerate launch --config_file recipes/accelerate/cpu-zero2.yaml`: 2 CPU ranks, one ZeRO-2 step.

    The first run compiles DeepSpeed's shared-memory comm op (~30-60 s, cached after)."""
    script = tmp_path / "tiny.py"
    script.write_text(TINY, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    settings = LaunchSettings(accelerate_config=_cfg("cpu-zero2"), num_processes=2)
    check(settings, where=W)
    command = launch_command(settings, [])
    assert command[-2:] == ["-m", "oresearch_cli"]
    command = [*command[:-2], str(script), str(out)]  # the same launcher, our tiny script as the ranks
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "LOCAL_RANK", "WORLD_SIZE"))
    }
    env.update({"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu"})
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=840)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    results = [json.loads((out / f"rank{r}.json").read_text(encoding="utf-8")) for r in (0, 1)]
    for rank, r in enumerate(results):
        assert r["rank"] == rank and r["world"] == 2
        assert r["distributed_type"] == "DistributedType.DEEPSPEED" and r["engine"] == "DeepSpeedEngine"
        assert r["zero_stage"] == 2 and r["optimizer"] == "DeepSpeedZeroOptimizer"
        assert (r["backend"], r["device"], r["inside_launcher"]) == ("gloo", "cpu", True)
        assert r["moved"] > 0
    # Different data on each rank, yet one update: ZeRO-2 reduced the gradients and shared the step.
    assert results[0]["loss"] != results[1]["loss"]
    assert results[0]["checksum"] == pytest.approx(results[1]["checksum"], abs=1e-9)
    print(f"cpu-zero2: 2 ranks, one ZeRO-2 step in {elapsed:.1f} s")
