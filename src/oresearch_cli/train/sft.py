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
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from oresearch_cli.agent.protocol import protocol_version
from oresearch_cli.errors import InputError, OresError
from oresearch_cli.train.examples import ChatFormat, Dropped, Example, TraceItem, build_example, split_items
from oresearch_cli.train.runs import (
    CHECKPOINTS,
    MANIFEST,
    MODELS_KIND,
    TRAIN_LOG_KIND,
    LogHook,
    check_output_dir,
    is_main_process,
    last_checkpoint,
    liger_available,
    load_causal_lm,
    load_tokenizer,
    peft_config,
    quiet_library_progress,
    registered_model,
    resolve_base_model,
    resume_notes,
    save_final,
    trainer_callback,
    write_run_file,
)
from oresearch_cli.train.settings import ResolvedSft, build_sft_config, check_report_to
from oresearch_cli.workspace import ArtifactRecord, StageSpec, Workspace, config_hash

log = logging.getLogger(__name__)

EXAMPLES_KIND = "sft_examples"


@dataclass
class ModelRecord(ArtifactRecord):
    """A trained model: one row per sft run in the `models` artifact."""

    KIND: ClassVar[str] = MODELS_KIND

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


# -- data -----------------------------------------------------------------------------------------


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


@dataclass
class SftResult:
    record: ModelRecord
    run_id: str | None
    skipped: bool = False  # the config was already trained: nothing ran
    notes: list[str] = field(default_factory=list)


def run_sft(ws: Workspace, plan: SftPlan, data: SftData, *, on_log: LogHook | None = None) -> SftResult:
    """Train (or resume) and register the model. Rank 0 writes the workspace; every rank trains."""
    state = check_output_dir(plan.output_dir, plan.config_hash)
    if state == "done":
        row = registered_model(ws, "sft", plan.output_dir, plan.config_hash, plan.name)
        return SftResult(ModelRecord.from_row(row), None, skipped=True)
    main = is_main_process()
    if not main:
        _train(plan, data, train_log=None, on_log=None)
        return SftResult(
            ModelRecord(plan.name, "", plan.model_path, plan.method, plan.config_hash, data.source), None
        )
    with ws.start_run(SFT, plan.config, inputs=[data.source]) as run:
        write_run_file(plan.output_dir, plan.config_hash, run.run_id, "running")
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
        write_run_file(plan.output_dir, plan.config_hash, run.run_id, "done")
    return SftResult(record, run.run_id, notes=outcome.notes)


@dataclass
class _TrainOutcome:
    fields: dict[str, Any]
    notes: list[str]


def _train(plan: SftPlan, data: SftData, *, train_log: Path | None, on_log: LogHook | None) -> _TrainOutcome:
    from transformers import PrinterCallback
    from trl import SFTTrainer

    quiet_library_progress()
    notes: list[str] = []
    trl = dict(plan.resolved.trl)
    if trl.get("use_liger_kernel") and not liger_available():
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
    model = load_causal_lm(plan.model_path)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=to_dataset(data.train),
        eval_dataset=to_dataset(data.eval) if data.eval else None,
        processing_class=tokenizer,
        peft_config=peft_config(plan.resolved.ores.lora),
        callbacks=[trainer_callback(train_log, on_log)],
    )
    trainer.remove_callback(PrinterCallback)
    notes += resume_notes(plan.output_dir, resume)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    eval_loss = None
    if data.eval:
        eval_loss = trainer.evaluate().get("eval_loss")
    save_final(
        trainer,
        tokenizer,
        plan.output_dir,
        lora=plan.method == "lora",
        manifest={"kind": "sft", "base_model": plan.resolved.ores.model, "config_hash": plan.config_hash},
    )
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
