"""What every training stage (`ores sft`, `ores rl`) shares around TRL's trainers: the base model,
the run's folder under the workspace's `models/`, its checkpoints, and the per-step log.

A run owns `models/<name>/`: `ores-run.json` says which run and config it belongs to, so a rerun
of the same config resumes there (from the last complete checkpoint) or finds it done, and a
folder of another config is refused rather than trained over. Rank 0 of a launched run writes the
workspace; every rank trains.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from oresearch_cli.errors import InputError, WorkspaceError
from oresearch_cli.train.settings import LoraSettings
from oresearch_cli.workspace import Workspace

RUN_FILE = "ores-run.json"  # in models/<name>/: which run and config the folder belongs to
CHECKPOINTS = "checkpoints"
MODELS_KIND = "models"  # the catalog's artifact of trained models, one row per run
TRAIN_LOG_KIND = "train_log"
# Beside a final model: trained by ores on the single-model protocol (serve and eval read it).
# The name predates `ores rl`, whose models carry one too, with kind "rl".
MANIFEST = "ores-sft.json"

# -- the base model -------------------------------------------------------------------------------


def resolve_base_model(ws: Workspace, model: str) -> str:
    """A local checkpoint directory for `model`, or a hub id passed through (on a machine that
    can download it). `embedded` is SmolLM2-135M-Instruct, converted once into models/."""
    if model == "embedded":
        from oresearch_cli.server.embedded import ensure_embedded_model

        return str(ensure_embedded_model(ws.models_dir))
    path = Path(model).expanduser()
    for candidate in (path, ws.models_dir / model):
        if candidate.is_dir():
            if not (candidate / "config.json").is_file():
                raise InputError(
                    f"model {model}: {candidate} has no config.json; pass a directory save_pretrained wrote"
                )
            return str(candidate.resolve())
    found = model_of_run(ws, model)
    if found is not None:
        return found
    looks_like_hub_id = model.count("/") == 1 and not model.startswith((".", "/", "~"))
    if looks_like_hub_id:
        return model
    raise InputError(
        f"model {model}: no such checkpoint directory, models/ name or training run; pass a path with config.json, "
        "`embedded`, or a hub id such as Qwen/Qwen2.5-7B-Instruct"
    )


def model_of_run(ws: Workspace, run_or_name: str) -> str | None:
    """The final model folder of a finished sft or rl run (by run id, id prefix or model name)."""
    for artifact in ws.artifacts(kind=MODELS_KIND):
        for row in ws.read_artifact(artifact):
            if run_or_name in (row.get("id"), artifact.run_id) or artifact.run_id.startswith(run_or_name):
                path = ws.root / str(row["path"])
                if (path / "config.json").is_file():
                    return str(path)
    return None


def load_tokenizer(model_path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_path)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"model {model_path}: cannot load its tokenizer ({first[:200]}); pass a local checkpoint"
        ) from None


def load_causal_lm(model_path: str) -> Any:
    """The model at `model_path` in its saved dtype, or one line saying why not."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(model_path, dtype="auto")
    except (OSError, ValueError) as exc:
        raise InputError(f"model {model_path}: cannot load it ({str(exc).splitlines()[0][:200]})") from None


def peft_config(lora: LoraSettings) -> Any:
    """PEFT LoRA for `lora.r` > 0; None is full fine-tuning."""
    if lora.r <= 0:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha if lora.alpha is not None else 2 * lora.r,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def liger_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


def is_main_process() -> bool:
    """Rank 0 of an `accelerate launch`ed run (or a plain run): the one that writes the catalog."""
    return int(os.environ.get("RANK", "0")) == 0


def write_run_file(out: Path, config_hash: str, run_id: str, status: str) -> None:
    """Claim `out` for a run (atomically: other ranks may be reading it)."""
    out.mkdir(parents=True, exist_ok=True)
    state = {
        "run_id": run_id,
        "config_hash": config_hash,
        "status": status,
        "at": datetime.now(UTC).isoformat(),
    }
    tmp = out / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / RUN_FILE)


# -- the run's folder ------------------------------------------------------------------------------


def check_output_dir(out: Path, config_hash: str, stage: str = "sft") -> str | None:
    """'done' when this config already trained into the folder, 'resume' when a run of it was
    interrupted there, None when the folder is new. Another run's folder is refused.

    Every rank of a launched run asks, while rank 0 may be claiming the folder: a folder that
    holds only the run file being written (`ores-run.json.tmp`, before its atomic rename) is new."""
    if out.is_file():
        raise WorkspaceError(f"{out}: is a file, not a model folder; pick another --name")
    if not out.exists():
        return None
    names = {p.name for p in out.iterdir()}  # listed first: the run file may appear meanwhile, never go
    run_file = out / RUN_FILE
    if not run_file.exists():
        if names <= {RUN_FILE + ".tmp"}:
            return None
        raise WorkspaceError(f"{out}: holds files of something else; pick another --name or move them")
    state = json.loads(run_file.read_text(encoding="utf-8"))
    if state.get("config_hash") != config_hash:
        raise WorkspaceError(
            f"{out}: holds {stage} run {state.get('run_id')} of another config; pick another --name "
            "(or delete that folder to train over it)"
        )
    return "done" if state.get("status") == "done" else "resume"


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest *complete* checkpoint. The Trainer writes `trainer_state.json` last, so a
    `kill -9` while saving leaves a folder without it (or with it cut short); resuming from that
    folder fails, so it is passed over for the one before it, which is whole."""
    folder = output_dir / CHECKPOINTS
    if not folder.is_dir():
        return None
    for candidate in sorted(_numbered_checkpoints(folder), key=lambda pair: pair[0], reverse=True):
        if _is_complete(candidate[1]):
            return candidate[1]
    return None


def resume_notes(output_dir: Path, resume: Path | None) -> list[str]:
    """What a run says about the checkpoints it found: cut-off saves skipped, the one resumed."""
    notes = [
        f"{cut_off} was cut off while saving (no trainer_state.json); skipped it"
        for cut_off in incomplete_checkpoints(output_dir)
    ]
    if resume is not None:
        notes.append(f"resumed from {resume.name}")
    return notes


def registered_model(
    ws: Workspace, stage: str, output_dir: Path, config_hash: str, name: str
) -> dict[str, Any]:
    """The `models` row of the finished run of this config and name (its folder says "done")."""
    for artifact in ws.artifacts(kind=MODELS_KIND):
        for row in ws.read_artifact(artifact):
            if row.get("config_hash") == config_hash and row.get("id") == name:
                return dict(row)
    raise WorkspaceError(
        f"{output_dir}: marked trained but no {stage} run of it is in this workspace's catalog; "
        "pass another --name or delete the folder"
    )


def incomplete_checkpoints(output_dir: Path) -> list[str]:
    """Checkpoint folders newer than the last complete one: a save that was cut off."""
    folder = output_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    last = last_checkpoint(output_dir)
    floor = _step_of(last.name) if last is not None else -1
    return sorted(
        (
            path.name
            for step, path in _numbered_checkpoints(folder)
            if step > floor and not _is_complete(path)
        ),
        key=_step_of,
    )


def _numbered_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    return [(_step_of(path.name), path) for path in folder.glob("checkpoint-*") if _step_of(path.name) >= 0]


def _step_of(name: str) -> int:
    tail = name.removeprefix("checkpoint-")
    return int(tail) if tail.isdigit() else -1


def _is_complete(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def save_final(trainer: Any, tokenizer: Any, out: Path, *, lora: bool, manifest: dict[str, Any]) -> None:
    """The servable model in `out` with its tokenizer and manifest. Full fine-tuning saves through
    the trainer (which gathers ZeRO-3 shards); LoRA saves its adapter under adapter/ and the base
    with the adapter merged beside it, so `ores serve` loads it like any checkpoint."""
    from oresearch_cli.agent.protocol import protocol_version, with_default_system_prompt

    if not lora:
        trainer.save_model(str(out))
    else:
        trainer.save_model(str(out / "adapter"))
        if trainer.accelerator.is_main_process:
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            merged.save_pretrained(str(out))
    if trainer.accelerator.is_main_process:
        tokenizer.chat_template = with_default_system_prompt(tokenizer.chat_template)
        tokenizer.save_pretrained(str(out))
        written = {"protocol": "single", "protocol_version": protocol_version(), **manifest}
        (out / MANIFEST).write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
    trainer.accelerator.wait_for_everyone()


# -- the per-step log ----------------------------------------------------------------------------


LogHook = Callable[[dict[str, Any]], None]


def trainer_callback(train_log: Path | None, on_log: LogHook | None) -> Any:
    from transformers import TrainerCallback

    class OresCallback(TrainerCallback):
        """One flushed JSONL line per logging step (the curve survives kill -9) and the CLI's hook."""

        def __init__(self) -> None:
            self.started = time.monotonic()

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
        ) -> None:
            if not state.is_world_process_zero or not logs:
                return
            line = {
                "id": f"step-{state.global_step}-{len(state.log_history)}",
                "step": state.global_step,
                "max_steps": state.max_steps,
                "epoch": state.epoch,
                "seconds": round(time.monotonic() - self.started, 3),
                "tokens_seen": int(getattr(state, "num_input_tokens_seen", 0) or 0),
                **{k: v for k, v in logs.items() if isinstance(v, int | float)},
            }
            if train_log is not None:
                with train_log.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(line) + "\n")
            if on_log is not None:
                on_log(line)

    return OresCallback()


def time_budget_callback(seconds: float) -> Any:
    """Stop training at the first step end after `seconds` of training in this process, as if
    `max_steps` had been reached: the final model is saved and the run registered. A resumed run
    gets the budget anew. Ranks agree (the longest-waiting rank decides) so none waits alone."""
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self) -> None:
            self.started = time.monotonic()
            self.stopped_at: int | None = None

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            over = time.monotonic() - self.started >= seconds
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                import torch

                # NCCL reduces GPU tensors only; gloo (CPU) CPU ones
                device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
                flag = torch.tensor([1.0 if over else 0.0], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                over = bool(flag.item())
            if over and not control.should_training_stop:
                control.should_training_stop = True
                control.should_save = True  # a checkpoint at the stop, like at max_steps
                self.stopped_at = state.global_step

    return TimeBudget()


def quiet_library_progress() -> None:
    """ores reports progress itself (`trainer_callback`): no tqdm bars from datasets or transformers."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
