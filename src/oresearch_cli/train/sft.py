"""`ores sft`: accepted traces -> one model that writes whole traces, on TRL's SFTTrainer.

    source = load_traces(ws)                                    # train.inputs: the accepted set
    plan = plan_sft(ws, resolve_sft(recipe), where, input_name=source.name,
                    input_ids=[item.id for item in source.items])  # model, folder, config hash
    data = prepare_data(plan, load_tokenizer(plan.model_path), source.items, source.name)
    result = run_sft(ws, plan, data, on_log=print_line)         # result.record: the models row

We build `input_ids` and `labels` ourselves (`train.examples`: loss only on the model's text) and
hand TRL a dataset that has them; TRL runs the loop, packing, LoRA through PEFT, checkpoints,
DeepSpeed under `accelerate launch`. The run is a workspace run like synth's: its row in the
`models` artifact (path, config hash, inputs, tokens, loss curve, eval loss, wall time), a
`sft_examples` log (what happened to each trace) and a `train_log` (one line per logging step,
flushed, so a killed run keeps its curve).

Checkpoints go to `models/<name>/checkpoints/`, the final model (LoRA merged into the base) to
`models/<name>/`, with the tokenizer and `ores-sft.json` (the protocol it was trained on, so
`ores serve --model <name>` prompts it the same way). `<name>` defaults to `sft-<config hash>`:
a rerun of the same config finds its folder and resumes from the last checkpoint, so Ctrl-C or
`kill -9` lose at most the steps since that checkpoint. A folder holding another config's run
is refused, never overwritten.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from oresearch_cli.agent.protocol import protocol_version, with_default_system_prompt
from oresearch_cli.errors import InputError, OresError, WorkspaceError
from oresearch_cli.train.examples import ChatFormat, Dropped, Example, TraceItem, build_example, split_items
from oresearch_cli.train.settings import ResolvedSft, build_sft_config, check_report_to
from oresearch_cli.workspace import ArtifactRecord, StageSpec, Workspace, config_hash

log = logging.getLogger(__name__)

RUN_FILE = "ores-run.json"  # in models/<name>/: which run and config the folder belongs to
MANIFEST = "ores-sft.json"  # beside the final model: what it was trained on, for serve and eval
CHECKPOINTS = "checkpoints"
EXAMPLES_KIND = "sft_examples"
TRAIN_LOG_KIND = "train_log"


@dataclass
class ModelRecord(ArtifactRecord):
    """A trained model: one row per sft run in the `models` artifact."""

    KIND: ClassVar[str] = "models"

    id: str  # the model's folder name under models/
    path: str
    base_model: str
    method: str  # full | lora
    config_hash: str
    inputs: str  # the filter run or file the traces came from
    n_train: int = 0
    n_eval: int = 0
    n_truncated: int = 0
    n_dropped: int = 0
    train_tokens: int = 0  # tokens in the training set (one epoch)
    trained_tokens: int = 0  # of those, tokens that carry loss
    tokens_seen: int = 0  # input tokens the trainer processed, all epochs
    steps: int = 0
    epochs: float = 0.0
    train_loss: float | None = None  # the last logged training loss
    eval_loss: float | None = None
    loss_curve: str = "[]"  # JSON [[step, loss], ...]
    seconds: float = 0.0
    resumed_from: str | None = None


@dataclass
class ExampleRecord(ArtifactRecord):
    KIND: ClassVar[str] = EXAMPLES_KIND

    id: str
    split: str  # train | eval
    outcome: str  # kept | truncated | dropped:<reason>
    n_tokens: int = 0
    n_trained: int = 0


SFT = StageSpec.of("sft", ModelRecord)


@dataclass(frozen=True)
class SftPlan:
    """Everything resolved before any training: printed by --dry-run, stored with the run."""

    resolved: ResolvedSft
    model_path: str  # a local checkpoint dir, or a hub id
    output_dir: Path
    config: dict[str, Any]
    config_hash: str
    where: str  # the recipe path, for messages

    @property
    def name(self) -> str:
        return self.output_dir.name

    @property
    def method(self) -> str:
        return "lora" if self.resolved.ores.lora.r > 0 else "full"


@dataclass
class SftData:
    train: list[Example]
    eval: list[Example]
    outcomes: list[ExampleRecord]
    source: str
    n_traces: int

    @property
    def n_truncated(self) -> int:
        return sum(1 for o in self.outcomes if o.outcome == "truncated")

    @property
    def dropped(self) -> Counter[str]:
        return Counter(o.outcome.split(":", 1)[1] for o in self.outcomes if o.outcome.startswith("dropped:"))

    @property
    def train_tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.train)

    @property
    def trained_tokens(self) -> int:
        return sum(e.n_trained for e in self.train)

    def summary(self) -> str:
        dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items())) or "none"
        return (
            f"{self.n_traces} traces from {self.source}: {len(self.train)} train / {len(self.eval)} eval examples, "
            f"{self.train_tokens:,} train tokens ({self.trained_tokens:,} with loss), "
            f"{self.n_truncated} truncated at a step boundary, dropped: {dropped}"
        )


# -- planning -------------------------------------------------------------------------------------


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
        f"model {model}: no such checkpoint directory, models/ name or sft run; pass a path with config.json, "
        "`embedded`, or a hub id such as Qwen/Qwen2.5-7B-Instruct"
    )


def model_of_run(ws: Workspace, run_or_name: str) -> str | None:
    """The final model folder of a finished sft run (by run id, id prefix or model name)."""
    for artifact in ws.artifacts(kind=ModelRecord.KIND):
        for row in ws.read_artifact(artifact):
            if run_or_name in (row.get("id"), artifact.run_id) or artifact.run_id.startswith(run_or_name):
                path = ws.root / str(row["path"])
                if (path / "config.json").is_file():
                    return str(path)
    return None


def plan_sft(
    ws: Workspace, resolved: ResolvedSft, where: str, *, input_name: str, input_ids: list[str]
) -> SftPlan:
    """The model, the output folder and the config hash of this run. The hash covers what changes
    the trained model: the TRL settings, ores's data settings, the base model, the protocol
    prompt and which traces (not where they were read from, nor how the run is launched)."""
    ores = resolved.ores
    check_report_to(resolved.trl.get("report_to"), where)
    model_path = resolve_base_model(ws, ores.model)
    data_settings = {
        "overlong": ores.overlong,
        "eval_split": ores.eval_split,
        "lora": vars(ores.lora),
    }
    hashed = {
        "trl": {
            k: v for k, v in resolved.trl.items() if k not in {"report_to", "disable_tqdm", "logging_steps"}
        },
        "ores": data_settings,
        "base_model": ores.model,
        "protocol": protocol_version(),
        "traces": config_hash({"ids": sorted(input_ids)}),
    }
    chash = config_hash(hashed)
    output_dir = ws.models_dir / (ores.name or f"sft-{chash[:10]}")
    config = {**resolved.to_dict(), "base_model_path": model_path, "inputs": input_name, "hashed": hashed}
    return SftPlan(resolved, model_path, output_dir, config, chash, where)


def check_output_dir(plan: SftPlan) -> str | None:
    """'done' when this config already trained into the folder, 'resume' when a run of it was
    interrupted there, None when the folder is new. Another run's folder is refused.

    Every rank of a launched run asks, while rank 0 may be claiming the folder: a folder that
    holds only the run file being written (`ores-run.json.tmp`, before its atomic rename) is new."""
    out = plan.output_dir
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
    if state.get("config_hash") != plan.config_hash:
        raise WorkspaceError(
            f"{out}: holds sft run {state.get('run_id')} of another config; pick another --name "
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


# -- data -----------------------------------------------------------------------------------------


def load_tokenizer(model_path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_path)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"model {model_path}: cannot load its tokenizer ({first[:200]}); pass a local checkpoint"
        ) from None


def prepare_data(plan: SftPlan, tokenizer: Any, items: list[TraceItem], source: str) -> SftData:
    """Tokenized, masked and split examples; every trace accounted for in `outcomes`."""
    ores = plan.resolved.ores
    max_length = int(plan.resolved.trl["max_length"])
    fmt = ChatFormat(tokenizer, name=f"model {plan.resolved.ores.model}")
    floor = fmt.min_prompt_tokens()
    if max_length <= floor:
        raise InputError(
            f"--max-length {max_length} is not above the prompt alone ({floor} tokens of system prompt and "
            "chat template); raise --max-length"
        )
    split = split_items(items, ores.eval_split)
    data = SftData([], [], [], source, len(items))
    for part, members in (("train", split.train), ("eval", split.eval)):
        for item in members:
            built = build_example(fmt, item, max_length, ores.overlong)
            if isinstance(built, Dropped):
                data.outcomes.append(ExampleRecord(item.id, part, f"dropped:{built.reason}", built.n_tokens))
                continue
            (data.train if part == "train" else data.eval).append(built)
            outcome = "truncated" if built.truncated else "kept"
            data.outcomes.append(ExampleRecord(item.id, part, outcome, len(built.input_ids), built.n_trained))
    if not data.train:
        reasons = ", ".join(f"{n} {r}" for r, n in data.dropped.items()) or "none kept"
        raise InputError(
            f"{source}: no trace fits for training ({reasons}); raise --max-length or use --overlong truncate"
        )
    return data


def to_dataset(examples: list[Example]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict(
        {"input_ids": [e.input_ids for e in examples], "labels": [e.labels for e in examples]}
    )


# -- training -------------------------------------------------------------------------------------


LogHook = Callable[[dict[str, Any]], None]


def _trainer_callback(train_log: Path | None, on_log: LogHook | None) -> Any:
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


def _peft_config(plan: SftPlan) -> Any:
    lora = plan.resolved.ores.lora
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


def _liger_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


def is_main_process() -> bool:
    """Rank 0 of an `accelerate launch`ed run (or a plain run): the one that writes the catalog."""
    return int(os.environ.get("RANK", "0")) == 0


def _write_run_file(plan: SftPlan, run_id: str, status: str) -> None:
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    state = {
        "run_id": run_id,
        "config_hash": plan.config_hash,
        "status": status,
        "at": datetime.now(UTC).isoformat(),
    }
    tmp = plan.output_dir / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, plan.output_dir / RUN_FILE)


@dataclass
class SftResult:
    record: ModelRecord
    run_id: str | None
    skipped: bool = False  # the config was already trained: nothing ran
    notes: list[str] = field(default_factory=list)


def run_sft(ws: Workspace, plan: SftPlan, data: SftData, *, on_log: LogHook | None = None) -> SftResult:
    """Train (or resume) and register the model. Rank 0 writes the workspace; every rank trains."""
    state = check_output_dir(plan)
    if state == "done":
        return SftResult(_existing_record(ws, plan), None, skipped=True)
    main = is_main_process()
    if not main:
        _train(plan, data, train_log=None, on_log=None)
        return SftResult(
            ModelRecord(plan.name, "", plan.model_path, plan.method, plan.config_hash, data.source), None
        )
    with ws.start_run(SFT, plan.config, inputs=[data.source]) as run:
        _write_run_file(plan, run.run_id, "running")
        examples_log = run.open_log(EXAMPLES_KIND)
        with examples_log.open("w", encoding="utf-8") as fh:
            for example in data.outcomes:
                fh.write(json.dumps(example.to_row()) + "\n")
        train_log = run.open_log(TRAIN_LOG_KIND)
        started = time.monotonic()
        outcome = _train(plan, data, train_log=train_log, on_log=on_log)
        record = ModelRecord(
            id=plan.name,
            path=ws.relative(plan.output_dir),
            base_model=plan.resolved.ores.model,
            method=plan.method,
            config_hash=plan.config_hash,
            inputs=data.source,
            n_train=len(data.train),
            n_eval=len(data.eval),
            n_truncated=data.n_truncated,
            n_dropped=sum(data.dropped.values()),
            train_tokens=data.train_tokens,
            trained_tokens=data.trained_tokens,
            seconds=round(time.monotonic() - started, 2),
            **outcome.fields,
        )
        run.append(record)
        _write_run_file(plan, run.run_id, "done")
    return SftResult(record, run.run_id, notes=outcome.notes)


def _existing_record(ws: Workspace, plan: SftPlan) -> ModelRecord:
    for artifact in ws.artifacts(kind=ModelRecord.KIND):
        for row in ws.read_artifact(artifact):
            if row.get("config_hash") == plan.config_hash and row.get("id") == plan.name:
                return ModelRecord.from_row(row)
    raise WorkspaceError(
        f"{plan.output_dir}: marked trained but no sft run of it is in this workspace's catalog; "
        "pass another --name or delete the folder"
    )


@dataclass
class _TrainOutcome:
    fields: dict[str, Any]
    notes: list[str]


def _train(plan: SftPlan, data: SftData, *, train_log: Path | None, on_log: LogHook | None) -> _TrainOutcome:
    import datasets
    import transformers
    from transformers import AutoModelForCausalLM, PrinterCallback
    from trl import SFTTrainer

    # ores reports progress itself (the callback below): no tqdm bars, no printed log dicts.
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    notes: list[str] = []
    trl = dict(plan.resolved.trl)
    if trl.get("use_liger_kernel") and not _liger_available():
        trl["use_liger_kernel"] = False
        notes.append(
            "use_liger_kernel: liger-kernel is not installed, trained without it (pip install liger-kernel)"
        )
    if data.eval:
        trl.setdefault("eval_strategy", trl.get("save_strategy", "steps"))
        if trl["eval_strategy"] == "steps":
            trl.setdefault("eval_steps", trl.get("save_steps"))
    args = build_sft_config(trl, str(plan.output_dir / CHECKPOINTS), plan.where)
    resume = last_checkpoint(plan.output_dir)
    tokenizer = load_tokenizer(plan.model_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(plan.model_path, dtype="auto")
    except (OSError, ValueError) as exc:
        raise InputError(
            f"model {plan.model_path}: cannot load it ({str(exc).splitlines()[0][:200]})"
        ) from None
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=to_dataset(data.train),
        eval_dataset=to_dataset(data.eval) if data.eval else None,
        processing_class=tokenizer,
        peft_config=_peft_config(plan),
        callbacks=[_trainer_callback(train_log, on_log)],
    )
    trainer.remove_callback(PrinterCallback)
    for cut_off in incomplete_checkpoints(plan.output_dir):
        notes.append(f"{cut_off} was cut off while saving (no trainer_state.json); skipped it")
    if resume is not None:
        notes.append(f"resumed from {resume.name}")
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    eval_loss = None
    if data.eval:
        eval_loss = trainer.evaluate().get("eval_loss")
    _save_final(trainer, tokenizer, plan)
    history = trainer.state.log_history
    curve = [[h["step"], h["loss"]] for h in history if "loss" in h]
    return _TrainOutcome(
        {
            "tokens_seen": int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0),
            "steps": int(trainer.state.global_step),
            "epochs": float(trainer.state.epoch or 0.0),
            "train_loss": curve[-1][1] if curve else None,
            "eval_loss": float(eval_loss) if eval_loss is not None else None,
            "loss_curve": json.dumps(curve),
            "resumed_from": resume.name if resume else None,
        },
        notes,
    )


def _save_final(trainer: Any, tokenizer: Any, plan: SftPlan) -> None:
    """The servable model in models/<name>/ with its tokenizer. Full fine-tuning saves through the
    trainer (which gathers ZeRO-3 shards); LoRA saves its adapter under adapter/ and the base with
    the adapter merged beside it, so `ores serve` loads it like any checkpoint."""
    out = plan.output_dir
    if plan.method == "full":
        trainer.save_model(str(out))
    else:
        trainer.save_model(str(out / "adapter"))
        if trainer.accelerator.is_main_process:
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            merged.save_pretrained(str(out))
    if trainer.accelerator.is_main_process:
        tokenizer.chat_template = with_default_system_prompt(tokenizer.chat_template)
        tokenizer.save_pretrained(str(out))
        manifest = {
            "kind": "sft",
            "protocol": "single",
            "protocol_version": protocol_version(),
            "base_model": plan.resolved.ores.model,
            "config_hash": plan.config_hash,
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    trainer.accelerator.wait_for_everyone()


def read_manifest(model_dir: str | Path) -> dict[str, Any] | None:
    """The `ores-sft.json` of a model folder: set when ores trained it on the single-model protocol."""
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise OresError(f"{path}: unreadable; delete it or retrain the model") from None
    return found if isinstance(found, dict) else None
