"""`ores rl` on CPU: where a GRPO step's time goes, and how concurrently a group's tool calls run.

Two measurements, each a ratio taken inside one run:

- rollout overhead: the share of a GRPO step spent outside generation and the loss's forward and
  backward pass (target <= 10%). A few real GRPO steps run in-process on TRL's `GRPOTrainer`,
  built as `ores rl` builds it (`resolve_rl` + `build_grpo_config`, `PolicyRollouts` on the
  in-process `Engine` over the trainer's weights, real tool calls into a tiny local corpus,
  `recorded` R_tool and R_format through a `RolloutBook`, weights 0,0.5,0.5: no judge). The
  policy is the tiny Qwen2 of `tests/train_support.qwen2_style` (2 layers, hidden 64) first
  taught the tags by a short SFT (as tests/test_train_rl.py does), so its rollouts make some tool
  calls. Each step's wall time runs from the `on_step_begin` to the `on_step_end` callback (the
  optimizer step included; TRL's logging after it is reported apart, as the gap between steps).
  Inside it: generation is the time inside the rollout function (the engine, the research loop
  and its tool calls; the tool calls' own wall time is given apart, overlapping it); the
  loss forward is `trainer.compute_loss` and the backward `trainer.accelerator.backward`; the
  reference forward (the KL term's log probs, beta 0.01; and the old-policy log probs when TRL
  computes them) is `_get_per_token_logps_and_entropies` called outside `compute_loss`; rewards
  are `_calculate_rewards`; the optimizer runs from `on_pre_optimizer_step` to
  `on_optimizer_step`. "Everything else" is the step minus generation, the loss forward and
  backward, and the reference forward: TRL's padding, decoding, advantages and metrics, the
  rewards, the optimizer, grad clipping. The first step is a warm-up and not counted.
- tool concurrency: one batch of N rollouts of the same question (a group) through
  `PolicyRollouts`, each a scripted model (the scripted turns of tests/test_single_loop.py: a
  search, a crawl, a report) against a real toolbox over the corpus, every call made to wait
  TOOL_LATENCY_S first, as a slow page would. Achieved concurrency is the sum of the calls'
  durations over the wall time during which at least one call was in flight; the ideal is the
  number of calls over the longest rollout's number of calls (a rollout's calls run one after
  another, and all take about the latency): N when every rollout makes as many. The ratio is
  achieved / ideal. Best of ROUNDS batches, after a warm-up batch.

ORES_BENCH_QUICK=1 runs fewer SFT and GRPO steps, to check that it runs end to end. The note
gives the load average: another torch process on the same 2 cores moves these numbers a lot.
Needs `ores[train]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from common import Result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from oresearch_cli.agent.generators import ChatTokenizer, Generation, SamplingParams  # noqa: E402
from oresearch_cli.config import Recipe  # noqa: E402
from oresearch_cli.tools import open_toolbox  # noqa: E402
from oresearch_cli.tools.corpus import build_corpus  # noqa: E402
from oresearch_cli.train.rewards import format_reward, tool_reward  # noqa: E402
from oresearch_cli.train.rl_settings import RolloutBudget, build_grpo_config, resolve_rl  # noqa: E402
from oresearch_cli.train.rollouts import PolicyRollouts, PromptInfo, RolloutBook, recorded  # noqa: E402
from oresearch_cli.workspace import Workspace  # noqa: E402
from test_single_loop import ToyTokenizer  # noqa: E402  (tests/: the toy tokenizer the loop's tests use)

QUICK = os.environ.get("ORES_BENCH_QUICK", "") not in ("", "0")
SFT_STEPS = 20 if QUICK else 60  # teaching the tags, as tests/test_train_rl.py (60 steps at 3e-3)
GRPO_STEPS = 2 if QUICK else 8  # the first is a warm-up
N_ROLLOUTS = 8  # the tool-concurrency batch
TOOL_LATENCY_S = 0.2
ROUNDS = 3
NOISY_LOAD = 2.5  # 1-minute load average above which the note says so

QUESTION = "How does photosynthesis store light energy?"
PHOTO_URL = "https://en.wikipedia.org/wiki/Photosynthesis"
DOCS = [
    {"id": "photo", "title": "Photosynthesis", "url": PHOTO_URL,
     "text": "Photosynthesis converts light energy into chemical energy stored in sugars. Photosynthesis runs in chloroplasts."},
    {"id": "calvin", "title": "Calvin cycle", "url": "https://en.wikipedia.org/wiki/Calvin_cycle",
     "text": "The Calvin cycle fixes carbon dioxide in the stroma using ATP and NADPH."},
    {"id": "light", "title": "Light-dependent reactions", "url": "https://en.wikipedia.org/wiki/Light-dependent_reactions",
     "text": "The light-dependent reactions make ATP and NADPH in the thylakoid membranes and release oxygen."},
]  # fmt: skip
QUESTIONS = [("q-photo", QUESTION), ("q-calvin", "What does the Calvin cycle fix?")]

# The recipe of tests/test_train_rl.py: two questions x two generations per step, a small budget.
RL_SECTION: dict[str, Any] = {
    "num_generations": 2,
    "per_device_train_batch_size": 4,
    "learning_rate": 1.0e-3,
    "temperature": 1.0,
    "ores": {
        "search": "local:mini",
        "crawl": "local",
        "reward_weights": [0.0, 0.5, 0.5],
        "budget": {
            "max_tool_calls": 2,
            "max_turns": 3,
            "max_new_tokens": 400,
            "max_turn_tokens": 200,
            "max_seconds": 120,
        },
    },
}

# The scripted turns of tests/test_single_loop.py: a whole valid trace, one model turn per string,
# each running on past its stop string as a model would (the loop cuts it there).
TURN_SEARCH = (
    "<subtask_list>\n1. How does photosynthesis store light energy?\n</subtask_list>\n\n"
    "<subtask>\nHow does photosynthesis store light energy?\n</subtask>\n"
    "<think>\nI need an overview of photosynthesis.\n</think>\n"
    "<plan>\n1. Search for photosynthesis.\n2. Read the best page.\n</plan>\n"
    "<web_search>photosynthesis light energy&serp_num=2</web_search>\n<observation>\nmade up"
)
TURN_CRAWL = (
    "\n<think>\nThe first result is the overview; read it.\n</think>\n"
    f"<crawl_page>{PHOTO_URL}</crawl_page>\n<think>"
)
TURN_REPORT = (
    "\n<subtask_answer>\nPhotosynthesis stores light energy as chemical energy in sugars [1].\n</subtask_answer>\n\n"
    "<suggested_answer>\n# Photosynthesis\n## Introduction\nPlants store light as chemical energy [1].\n\n"
    "## Body\nPhotosynthesis converts light energy into chemical energy stored in sugars, in chloroplasts [1].\n\n"
    f"## Conclusion\nLight becomes sugar [1].\n\n## References\n[1]. {PHOTO_URL} - Photosynthesis\n"
    "</suggested_answer>\n<|end|>"
)
SCRIPT = (TURN_SEARCH, TURN_CRAWL, TURN_REPORT)


# -- timing the tool calls ------------------------------------------------------------------------


class TimedTools:
    """A toolbox whose every call first waits `latency` seconds (a slow page), then delegates;
    each call's (start, end) goes to `calls`."""

    def __init__(self, tools: Any, latency: float, calls: list[tuple[float, float]]) -> None:
        self.tools = tools
        self.latency = latency
        self.calls = calls

    async def call(self, tool: str, argument: str, context: Any = None) -> Any:
        started = time.perf_counter()
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            return await self.tools.call(tool, argument, context)
        finally:
            self.calls.append((started, time.perf_counter()))


def timed_opener(ws: Workspace, latency: float, calls: list[tuple[float, float]]) -> Callable[[], Any]:
    """`PolicyRollouts.open_tools`: the real toolbox over the "mini" corpus, timed."""

    @contextlib.asynccontextmanager
    async def opener() -> AsyncIterator[TimedTools]:
        async with open_toolbox(ws, search="local:mini", crawl="local", cache=False) as tools:
            yield TimedTools(tools, latency, calls)

    return opener


def covered(intervals: Sequence[tuple[float, float]]) -> float:
    """Seconds during which at least one interval was open."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


# -- a scripted model, for the tool-concurrency batch ---------------------------------------------


class ScriptedGroup:
    """A `Generator` that plays `SCRIPT` for every rollout calling it, concurrently: a call's turn
    is the number of observations already in its completion (the text after the prompt's
    generation header), so rollouts of the same question each get their own script. Stops as the
    engine does, at the first stop string (the token that completed it included)."""

    name = "scripted"
    context_length: int | None = None

    def __init__(self) -> None:
        self.tokenizer = ChatTokenizer(ToyTokenizer(), name="toy")
        self.seconds = 0.0

    def prompt_ids(self, chat: Sequence[Any]) -> list[int]:
        return self.tokenizer.prompt_ids(chat)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    async def aclose(self) -> None:
        return None

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        started = time.perf_counter()
        completion = self.decode(prompt_ids).rpartition("<|assistant|>\n")[2]
        turn = completion.count("</observation>")
        script = SCRIPT[turn] if turn < len(SCRIPT) else ""
        out: list[int] = []
        finish, stop, text = "stop", None, ""
        for token in self.encode(script):
            out.append(token)
            text = self.decode(out)
            hits = [(text.find(s), s) for s in params.stop if s in text]
            if hits:
                at, stop = min(hits)
                text = text[:at]
                break
            if len(out) >= params.max_tokens:
                finish = "length"
                break
        self.seconds += time.perf_counter() - started
        return Generation(text, finish, stop, tuple(out), tuple(-0.01 for _ in out))


class _Policy:
    """What the rollout function does to the trainer's model: eval() while sampling, then train()."""

    training = True

    def eval(self) -> None:
        self.training = False

    def train(self, mode: bool = True) -> None:
        self.training = mode


def _bench_tools(ws: Workspace) -> dict[str, Any]:
    calls: list[tuple[float, float]] = []
    generator = ScriptedGroup()
    rollouts = PolicyRollouts(
        open_tools=timed_opener(ws, TOOL_LATENCY_S, calls),
        prompts={QUESTION: PromptInfo("q-photo", QUESTION, "en")},
        budget=RolloutBudget(max_tool_calls=4, max_new_tokens=4096, max_turn_tokens=2048),
        book=RolloutBook(None, ["tool", "format"]),
        make_generator=lambda trainer, tokenizer, n: generator,
    )
    trainer = SimpleNamespace(
        state=SimpleNamespace(global_step=0),
        accelerator=SimpleNamespace(unwrap_model=lambda m: m, num_processes=1, process_index=0),
        model=_Policy(),
        processing_class=None,
    )
    prompts = [[{"role": "user", "content": QUESTION}]] * N_ROLLOUTS

    def batch() -> dict[str, Any]:
        calls.clear()
        generator.seconds = 0.0
        started = time.perf_counter()
        out = rollouts(prompts, trainer)
        wall = time.perf_counter() - started
        n_calls = list(out["n_tool_calls"])
        assert len(calls) == sum(n_calls), (len(calls), n_calls)
        durations = [b - a for a, b in calls]
        in_flight = covered(calls)
        return {
            "wall": wall,
            "in_flight": in_flight,
            "sum": sum(durations),
            "calls": len(calls),
            "per_rollout_calls": n_calls,
            "achieved": sum(durations) / in_flight,
            # a rollout's calls run one after another, and all take about the same time (the latency)
            "ideal": len(calls) / max(n_calls),
            "mean_call": sum(durations) / len(durations),
            "generate": generator.seconds,
            "valid": all(t.count("</observation>") == 2 for t in out["trace_text"]),
        }

    batch()  # warm-up: the corpus opened, imports
    runs = [batch() for _ in range(ROUNDS)]
    return max(runs, key=lambda r: r["achieved"] / r["ideal"])


# -- GRPO steps -----------------------------------------------------------------------------------


@dataclass
class StepClock:
    """Seconds per phase of each optimizer step; phases outside a step are not counted."""

    steps: list[dict[str, float]] = field(default_factory=list)
    current: dict[str, float] | None = None
    began: float = 0.0
    ended: float | None = None
    in_loss: bool = False

    def add(self, name: str, seconds: float) -> None:
        if self.current is not None:
            self.current[name] = self.current.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return fn(*args, **kwargs)

        return wrapper

    def begin(self) -> None:
        now = time.perf_counter()
        self.current = {"gap_before": now - self.ended} if self.ended is not None else {}
        self.began = now

    def end(self) -> None:
        if self.current is None:
            return
        now = time.perf_counter()
        self.current["step"] = now - self.began
        self.steps.append(self.current)
        self.current, self.ended = None, now


def _callback(clock: StepClock) -> Any:
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        optimizer_began = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            clock.begin()

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.optimizer_began = time.perf_counter()

        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            clock.add("optimizer", time.perf_counter() - self.optimizer_began)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            clock.end()

    return Clock()


def _instrument(trainer: Any, clock: StepClock) -> None:
    """Time the trainer's phases through its own seams (instance attributes over its methods)."""
    compute_loss = trainer.compute_loss
    logps = trainer._get_per_token_logps_and_entropies

    def timed_loss(*args: Any, **kwargs: Any) -> Any:
        clock.in_loss = True
        try:
            with clock.phase("loss_forward"):
                return compute_loss(*args, **kwargs)
        finally:
            clock.in_loss = False

    def timed_logps(*args: Any, **kwargs: Any) -> Any:
        if clock.in_loss:  # the policy's forward of the loss: counted there
            return logps(*args, **kwargs)
        with clock.phase("ref_forward"):  # the reference (KL) and old-policy log probs, no grad
            return logps(*args, **kwargs)

    trainer.compute_loss = timed_loss
    trainer._get_per_token_logps_and_entropies = timed_logps
    trainer._calculate_rewards = clock.timed("rewards", trainer._calculate_rewards)
    trainer.accelerator.backward = clock.timed("backward", trainer.accelerator.backward)


def _quiet() -> None:
    import datasets
    import transformers

    from oresearch_cli.train.runs import quiet_library_progress

    quiet_library_progress()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("trl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _teach_tags(model_dir: Path, out: Path) -> tuple[Path, float]:
    """The tiny Qwen2 after SFT_STEPS steps of SFT on valid traces (tests/test_train_rl.py's recipe),
    saved in `out`; and the seconds it took."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import SFTTrainer

    from oresearch_cli.train.examples import ChatFormat, Example, TraceItem, build_example
    from oresearch_cli.train.settings import TRL_DEFAULTS, build_sft_config
    from oresearch_cli.train.sft import to_dataset

    from filter_support import variant

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    fmt = ChatFormat(tokenizer)
    items = [
        TraceItem(f"g{i}", question, "en", trace)
        for i, (question, trace) in enumerate(map(variant, range(8)))
    ]
    examples = [e for e in (build_example(fmt, item, 4096) for item in items) if isinstance(e, Example)]
    settings = {
        **TRL_DEFAULTS,
        "gradient_accumulation_steps": 1,
        "warmup_steps": 0,
        "learning_rate": 3.0e-3,
        "lr_scheduler_type": "constant",
        "max_length": 4096,
        "activation_checkpointing": False,
        "max_steps": SFT_STEPS,
        "save_strategy": "no",
        "logging_strategy": "no",
    }
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto"),
        args=build_sft_config(settings, str(out / "checkpoints"), "bench_rl"),
        train_dataset=to_dataset(examples),
        processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    trainer.save_model(str(out))
    tokenizer.save_pretrained(out)
    return out, time.perf_counter() - started


def _bench_steps(ws: Workspace, policy: Path, out: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import GRPOTrainer

    from oresearch_cli.train.runs import load_causal_lm, load_tokenizer

    resolved = resolve_rl(Recipe(sections={"rl": RL_SECTION}), environ={})
    ores = resolved.ores
    trl = {**resolved.trl, "max_steps": GRPO_STEPS, "save_strategy": "no"}
    args = build_grpo_config(trl, ores.reward_weights, str(out), "bench_rl")
    tokenizer = load_tokenizer(str(policy))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    book = RolloutBook(None, ["base", "tool", "format"])

    def no_judge(trace_text: list[str], **kw: Any) -> list[float | None]:
        return [None] * len(trace_text)  # R_base at weight 0, as `ores rl` logs it: missing

    funcs: list[Any] = [
        recorded("base", no_judge, book),
        recorded("tool", tool_reward, book),
        recorded("format", format_reward, book),
    ]
    clock = StepClock()
    calls: list[tuple[float, float]] = []
    rollouts = PolicyRollouts(
        open_tools=timed_opener(ws, 0.0, calls),
        prompts={q: PromptInfo(i, q, "en") for i, q in QUESTIONS},
        budget=ores.budget,
        book=book,
        temperature=float(args.temperature),
        top_p=float(args.top_p),
        seed=int(args.seed),
    )

    def rollout_func(prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        calls.clear()
        with clock.phase("generation"):
            result = rollouts(prompts, trainer)
        clock.add("tool_wall", covered(calls))
        clock.add("tool_calls", float(len(calls)))
        clock.add("rollouts", float(len(prompts)))
        clock.add("model_tokens", float(sum(sum(m) for m in result["env_mask"])))
        clock.add("completion_tokens", float(sum(len(m) for m in result["env_mask"])))
        return result

    dataset = Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": q}] for _, q in QUESTIONS],
            "question": [q for _, q in QUESTIONS],
            "seed_id": [i for i, _ in QUESTIONS],
        }
    )
    trainer = GRPOTrainer(
        model=load_causal_lm(str(policy)),
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        rollout_func=rollout_func,
        callbacks=[_callback(clock)],
    )
    trainer.remove_callback(PrinterCallback)
    _instrument(trainer, clock)
    trainer.train()
    measured = clock.steps[1:] or clock.steps  # the first step is a warm-up
    total = {k: sum(s.get(k, 0.0) for s in measured) for k in {k for s in measured for k in s}}
    return {
        "n": len(measured),
        "total": total,
        "format": logged_means(trainer, "format"),
        "threads": torch.get_num_threads(),
        "beta": float(args.beta),
    }


def logged_means(trainer: Any, name: str) -> list[float]:
    """The mean reward `name` TRL logged at each step."""
    return [e[f"rewards/{name}/mean"] for e in trainer.state.log_history if f"rewards/{name}/mean" in e]


# -- the run --------------------------------------------------------------------------------------


def run() -> list[Result]:
    _quiet()
    from train_support import qwen2_style

    tmp = Path(tempfile.mkdtemp(prefix="ores-bench-rl-"))
    loads = [os.getloadavg()[0]]
    try:
        ws = Workspace.open(tmp / "ws")
        source = tmp / "docs.jsonl"
        source.write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
        build_corpus(ws, source, "mini")
        tools = _bench_tools(ws)
        loads.append(os.getloadavg()[0])
        policy, sft_s = _teach_tags(qwen2_style(tmp / "tiny-qwen2"), tmp / "tiny-sft")
        loads.append(os.getloadavg()[0])
        steps = _bench_steps(ws, policy, tmp / "rl")
        loads.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    load = f"load avg {min(loads):.1f}-{max(loads):.1f}"
    if max(loads) > NOISY_LOAD:
        load = f"NOISY, rerun: other processes were busy; {load}"
    mode = "QUICK mode (few steps, numbers mean little); " if QUICK else ""

    t, n = steps["total"], steps["n"]
    step = t["step"]
    gen, fwd, bwd, ref = (t.get(k, 0.0) for k in ("generation", "loss_forward", "backward", "ref_forward"))
    rest = step - gen - fwd - bwd - ref

    def ms(seconds: float) -> float:
        return 1000.0 * seconds / n

    def pct(seconds: float) -> str:
        return f"{100.0 * seconds / step:.1f}%"

    rollouts = max(1.0, t.get("rollouts", 0.0))
    setup = (
        f"{mode}tiny Qwen2 (2 layers, hidden 64) after {SFT_STEPS} SFT steps ({sft_s:.0f} s), {n} GRPO steps "
        f"measured after 1 warm-up, {int(rollouts / n)} rollouts/step on the in-process engine, "
        f"{steps['threads']} torch thread(s)"
    )
    tool_note = (
        f"{t.get('tool_calls', 0.0) / rollouts:.2f} tool calls/rollout, "
        f"{t.get('model_tokens', 0.0) / rollouts:.0f} model tokens/rollout "
        f"({t.get('completion_tokens', 0.0) / rollouts:.0f} with observations)"
    )
    results = [
        Result(
            name="rl step: time outside generation and loss fwd+bwd (GRPO, CPU)",
            ours=ms(rest),
            unit="ms/step",
            baseline=ms(step),
            baseline_label="whole step",
            target="<= 0.10x",
            note=(
                f"ratio = share of the step; {setup}; of it: rewards {pct(t.get('rewards', 0.0))}, optimizer "
                f"{pct(t.get('optimizer', 0.0))}, TRL's own (padding, decoding, advantages, metrics) the rest; "
                f"with the reference forward counted as overhead too: {pct(rest + ref)}; logging between "
                f"steps (outside the window) {ms(t.get('gap_before', 0.0)):.0f} ms/step; {load}"
            ),
        ),
        Result(
            name="rl step: generation (rollout function) share",
            ours=ms(gen),
            unit="ms/step",
            baseline=ms(step),
            baseline_label="whole step",
            note=(
                f"ratio = share of the step; the engine, the research loop and its tool calls; tool calls "
                f"in flight {ms(t.get('tool_wall', 0.0)):.0f} ms/step of it (local corpus, no added latency); "
                f"{tool_note}"
            ),
        ),
        Result(
            name="rl step: loss forward+backward share",
            ours=ms(fwd + bwd),
            unit="ms/step",
            baseline=ms(step),
            baseline_label="whole step",
            note=(
                f"ratio = share of the step; forward (compute_loss) {pct(fwd)}, backward {pct(bwd)}; "
                f"reference/old log-prob forward (no grad, beta {steps['beta']:g}) {pct(ref)} besides; "
                f"format reward by step {', '.join(f'{r:.2f}' for r in steps['format'])}"
            ),
        ),
        Result(
            name=f"rl tool concurrency: a group of {N_ROLLOUTS} rollouts, achieved vs ideal",
            ours=tools["achieved"],
            unit="calls in flight",
            baseline=tools["ideal"],
            baseline_label="ideal",
            target=">= 0.90x",
            note=(
                f"ratio = achieved / ideal; PolicyRollouts with a scripted model (search, crawl, report), every "
                f"call waiting {TOOL_LATENCY_S:.1f} s then going to the real toolbox; {tools['calls']} calls, "
                f"{tools['mean_call'] * 1000:.0f} ms each on average, sum {tools['sum']:.2f} s vs "
                f"{tools['in_flight']:.2f} s with any in flight (batch wall {tools['wall']:.2f} s, scripted "
                f"generation {tools['generate'] * 1000:.0f} ms); ideal = calls / the most calls one rollout made; "
                f"best of {ROUNDS}; every rollout made its 2 calls: {tools['valid']}; {load}"
            ),
        ),
    ]
    return results


if __name__ == "__main__":
    for result in run():
        print(
            f"{result.name}: {result.ours_text()} | {result.baseline_text()} | {result.ratio_text()} | {result.note}"
        )
