"""`ores rl`: agentic GRPO on TRL's `GRPOTrainer`, the policy researching with real tool calls.

    plan = plan_rl(ws, resolve_rl(recipe, flags), where, questions)   # --dry-run prints this
    result = run_rl(ws, plan, questions, on_log=print_line)           # result.record: the models row

Each step the policy researches its prompts (`rollouts.PolicyRollouts`: the single-model loop
on the trainer's own weights, tools run concurrently, observations masked by `env_mask`); the
rollouts are scored by R_base (the judge), R_tool and R_format (`rewards`), combined by TRL's
`reward_weights`; TRL does the GRPO update, logging `rewards/<name>/mean` for each component.

The run is a workspace run like `ores sft`'s and shares its folder rules (`runs`): models/<name>/
with checkpoints, resumed from the last complete one; one `models` row at the end with the reward
and KL curves, tool calls and the judge's calls; a `train_log` line per step and a `rollouts`
line per scored rollout, both flushed as they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from oresearch_cli.agent.protocol import protocol_version
from oresearch_cli.errors import ConfigError
from oresearch_cli.train.inputs import QuestionSource
from oresearch_cli.train.rewards import (
    REWARD_NAMES,
    BaseReward,
    format_reward,
    load_reward_function,
    tool_reward,
)
from oresearch_cli.train.rl_settings import ResolvedRl, build_grpo_config
from oresearch_cli.train.rollouts import ROLLOUTS_KIND, PolicyRollouts, PromptInfo, RolloutBook, recorded
from oresearch_cli.train.runs import (
    CHECKPOINTS,
    MODELS_KIND,
    TRAIN_LOG_KIND,
    LogHook,
    check_output_dir,
    is_main_process,
    last_checkpoint,
    load_causal_lm,
    load_tokenizer,
    peft_config,
    quiet_library_progress,
    registered_model,
    resolve_base_model,
    resume_notes,
    save_final,
    time_budget_callback,
    trainer_callback,
    write_run_file,
)
from oresearch_cli.train.settings import check_report_to
from oresearch_cli.workspace import ArtifactRecord, StageSpec, Workspace, config_hash


@dataclass
class RlModelRecord(ArtifactRecord):
    """A model trained by `ores rl`: one row per run in the `models` artifact."""

    KIND: ClassVar[str] = MODELS_KIND

    id: str
    path: str
    base_model: str
    method: str  # grpo-full | grpo-lora
    config_hash: str
    inputs: str  # the seed run or file the questions came from
    n_questions: int = 0
    steps: int = 0
    rollouts: int = 0
    tokens_seen: int = 0
    reward_weights: str = "[]"  # JSON, in the order of reward_names
    reward_names: str = "[]"
    reward_curve: str = "[]"  # JSON [[step, {name: mean, ..., "total": mean}], ...]
    kl_curve: str = "[]"  # JSON [[step, kl], ...]
    mean_tool_calls: float | None = None
    judge_calls: int = 0
    judge_cached: int = 0
    judge_failed: int = 0
    seconds: float = 0.0
    resumed_from: str | None = None


RL = StageSpec.of("rl", RlModelRecord)


@dataclass(frozen=True)
class RlPlan:
    resolved: ResolvedRl
    model_path: str
    output_dir: Path
    config: dict[str, Any]
    config_hash: str
    where: str

    @property
    def name(self) -> str:
        return self.output_dir.name

    @property
    def method(self) -> str:
        return "grpo-lora" if self.resolved.ores.lora.r > 0 else "grpo-full"

    @property
    def reward_names(self) -> list[str]:
        return [*REWARD_NAMES, *self.resolved.ores.custom_rewards]

    @property
    def reward_weights(self) -> list[float]:
        ores = self.resolved.ores
        return [*ores.reward_weights, *ores.custom_rewards.values()]


def plan_rl(ws: Workspace, resolved: ResolvedRl, where: str, questions: QuestionSource) -> RlPlan:
    """The policy, the output folder and the config hash. The hash covers what changes the trained
    model: TRL's settings, the rewards and their weights, the rollout budget and tools, the
    starting model, the protocol and which questions (not the judge's concurrency, nor how the
    run is launched or reported)."""
    ores = resolved.ores
    check_report_to(resolved.trl.get("report_to"), where)
    for spec in ores.custom_rewards:
        load_reward_function(spec)  # fail before any run starts
    model_path = resolve_base_model(ws, ores.model)
    hashed = {
        "trl": {
            k: v for k, v in resolved.trl.items() if k not in {"report_to", "disable_tqdm", "logging_steps"}
        },
        "ores": {
            "search": ores.search,
            "crawl": ores.crawl,
            "budget": vars(ores.budget),
            "reward_weights": ores.reward_weights,
            "custom_rewards": ores.custom_rewards,
            "judge": {"llm_config": ores.judge.llm_config, "model": ores.judge.model},
            "lora": vars(ores.lora),
        },
        "base_model": ores.model,
        "protocol": protocol_version(),
        "questions": config_hash({"ids": sorted(q.id for q in questions.questions)}),
    }
    chash = config_hash(hashed)
    output_dir = ws.models_dir / (ores.name or f"rl-{chash[:10]}")
    config = {**resolved.to_dict(), "base_model_path": model_path, "inputs": questions.name, "hashed": hashed}
    return RlPlan(resolved, model_path, output_dir, config, chash, where)


@dataclass
class RlResult:
    record: RlModelRecord
    run_id: str | None
    skipped: bool = False
    notes: list[str] = field(default_factory=list)


def run_rl(
    ws: Workspace,
    plan: RlPlan,
    questions: QuestionSource,
    *,
    on_log: LogHook | None = None,
) -> RlResult:
    """Train (or resume) and register the model. Rank 0 writes the workspace; every rank trains."""
    state = check_output_dir(plan.output_dir, plan.config_hash, "rl")
    if state == "done":
        row = registered_model(ws, "rl", plan.output_dir, plan.config_hash, plan.name)
        return RlResult(RlModelRecord.from_row(row), None, skipped=True)
    llm_config = judge_llm_config(plan)
    if not is_main_process():
        opener = judge_opener(llm_config, None, "")
        outcome = _train(ws, plan, questions, opener, train_log=None, rollouts_log=None, on_log=None)
        return RlResult(_record(ws, plan, questions, outcome.fields), None, notes=outcome.notes)
    from oresearch_cli.llm import CALLS_KIND

    with ws.start_run(RL, plan.config, inputs=[questions.name]) as run:
        write_run_file(plan.output_dir, plan.config_hash, run.run_id, "running")
        train_log = run.open_log(TRAIN_LOG_KIND)
        rollouts_log = run.open_log(ROLLOUTS_KIND)
        opener = judge_opener(llm_config, run.open_log(CALLS_KIND), run.run_id)
        started = time.monotonic()
        outcome = _train(
            ws, plan, questions, opener, train_log=train_log, rollouts_log=rollouts_log, on_log=on_log
        )
        fields = {**outcome.fields, "seconds": round(time.monotonic() - started, 2)}
        record = _record(ws, plan, questions, fields)
        run.append(record)
        # A run its time budget stopped is "paused": rerunning it resumes from the checkpoint
        # saved at the stop (anything but "done" resumes); the model saved now is servable.
        write_run_file(plan.output_dir, plan.config_hash, run.run_id, "paused" if outcome.paused else "done")
    return RlResult(record, run.run_id, notes=outcome.notes)


def _record(ws: Workspace, plan: RlPlan, questions: QuestionSource, fields: dict[str, Any]) -> RlModelRecord:
    return RlModelRecord(
        id=plan.name,
        path=ws.relative(plan.output_dir),
        base_model=plan.resolved.ores.model,
        method=plan.method,
        config_hash=plan.config_hash,
        inputs=questions.name,
        n_questions=len(questions.questions),
        reward_weights=json.dumps(plan.reward_weights),
        reward_names=json.dumps(plan.reward_names),
        **fields,
    )


# -- the judge ------------------------------------------------------------------------------------


def judge_llm_config(plan: RlPlan) -> Any | None:
    """The LLM configuration of the judge role from `rl.ores.judge` (an LLM config with a `judge`
    role, the model overridable), or None when R_base weighs nothing. A judge that is needed but
    not configured is refused now, in one line, before any rollout."""
    ores = plan.resolved.ores
    if ores.reward_weights[0] == 0:
        return None
    from oresearch_cli.llm import LLMConfigError, load_config

    overrides = {"judge.model": ores.judge.model} if ores.judge.model else None
    try:
        return load_config(ores.judge.llm_config, overrides, require=["judge"])
    except LLMConfigError as exc:
        raise ConfigError(
            f"{exc}; R_base needs a judge: pass --judge-config with a judge role, "
            "or give it weight 0 with --reward-weights 0,W_TOOL,W_FORMAT"
        ) from None


def judge_opener(llm_config: Any | None, calls_log: Path | None, run_id: str) -> Callable[[], Any] | None:
    """An async context manager factory yielding the judge's open client, every call logged to
    the run's `calls` (what the judge cost), or None without a judge."""
    if llm_config is None:
        return None

    @contextlib.asynccontextmanager
    async def open_client() -> AsyncIterator[Any]:
        from oresearch_cli.llm import CallLog, LLMClient

        with contextlib.ExitStack() as stack:
            calls = stack.enter_context(CallLog(calls_log, run_id)) if calls_log is not None else None
            async with LLMClient(llm_config, calls) as client:
                yield client

    return open_client


# -- training -------------------------------------------------------------------------------------


@dataclass
class _TrainOutcome:
    fields: dict[str, Any]
    notes: list[str]
    paused: bool = False  # stopped by the time budget before max_steps


def _dataset(questions: QuestionSource) -> Any:
    from datasets import Dataset

    columns: dict[str, list[Any]] = {
        "prompt": [[{"role": "user", "content": q.question}] for q in questions.questions],
        "question": [q.question for q in questions.questions],
        "seed_id": [q.id for q in questions.questions],
    }
    if any(q.reference for q in questions.questions):  # TRL hands it to R_base as a keyword
        columns["reference"] = [q.reference for q in questions.questions]
    return Dataset.from_dict(columns)


class _JudgeSession:
    """The judge's client for TRL's reward loop: opened on that loop on first use, closed there."""

    def __init__(self, opener: Callable[[], Any]) -> None:
        self.opener = opener
        self.stack: contextlib.AsyncExitStack | None = None

    async def open(self) -> Any:
        self.stack = contextlib.AsyncExitStack()
        return await self.stack.enter_async_context(self.opener())

    async def close(self) -> None:
        if self.stack is not None:
            await self.stack.aclose()
            self.stack = None


def _rewards(
    ws: Workspace, plan: RlPlan, opener: Callable[[], Any] | None, book: RolloutBook
) -> tuple[list[Any], BaseReward | None, _JudgeSession | None]:
    from oresearch_cli.filtering.judge import JudgeCache

    base: BaseReward | None = None
    session: _JudgeSession | None = None
    funcs: list[Any] = []
    if opener is not None:
        session = _JudgeSession(opener)
        base = BaseReward(session.open, JudgeCache.for_workspace(ws))
        funcs.append(recorded("base", base, book))
    else:
        funcs.append(recorded("base", _missing, book))  # weight 0: logged as missing, never scored
    funcs.append(recorded("tool", tool_reward, book))
    funcs.append(recorded("format", format_reward, book))
    for spec in plan.resolved.ores.custom_rewards:
        funcs.append(recorded(spec.rsplit(":", 1)[-1], load_reward_function(spec), book))
    return funcs, base, session


def _missing(trace_text: list[str], **kw: Any) -> list[float | None]:
    return [None] * len(trace_text)


def _train(
    ws: Workspace,
    plan: RlPlan,
    questions: QuestionSource,
    opener: Callable[[], Any] | None,
    *,
    train_log: Path | None,
    rollouts_log: Path | None,
    on_log: LogHook | None,
) -> _TrainOutcome:
    from transformers import PrinterCallback
    from trl import GRPOTrainer

    from oresearch_cli.tools import open_toolbox

    quiet_library_progress()
    # rollout_func is experimental in TRL 1.16; ores pins TRL's minor version and tests it
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    notes: list[str] = []
    ores = plan.resolved.ores
    trl = dict(plan.resolved.trl)
    args = build_grpo_config(trl, plan.reward_weights, str(plan.output_dir / CHECKPOINTS), plan.where)
    resume = last_checkpoint(plan.output_dir)
    tokenizer = load_tokenizer(plan.model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # TRL pads completions with it
    model = load_causal_lm(plan.model_path)
    book = RolloutBook(rollouts_log, plan.reward_names)
    funcs, base, session = _rewards(ws, plan, opener, book)
    rollouts = PolicyRollouts(
        make_generator=rollout_generator(args, plan),
        open_tools=lambda: open_toolbox(ws, search=ores.search, crawl=ores.crawl),
        prompts={q.question: PromptInfo(q.id, q.question, q.language) for q in questions.questions},
        budget=ores.budget,
        book=book,
        temperature=float(args.temperature),
        top_p=float(args.top_p),
        seed=int(args.seed),
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=_dataset(questions),
        processing_class=tokenizer,
        peft_config=peft_config(ores.lora),
        rollout_func=rollouts,
        callbacks=[trainer_callback(train_log, on_log)],
    )
    trainer.remove_callback(PrinterCallback)
    budget = time_budget_callback(ores.max_train_seconds) if ores.max_train_seconds else None
    if budget is not None:
        trainer.add_callback(budget)
    notes += resume_notes(plan.output_dir, resume)
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        book.share(trainer.accelerator)  # the other ranks' rollouts of the last batch
    finally:
        if session is not None and getattr(trainer, "async_loop", None) is not None:
            asyncio.run_coroutine_threadsafe(session.close(), trainer.async_loop).result(timeout=30)
        if base is not None:
            base.cache.close()
    paused = (
        budget is not None and budget.stopped_at is not None and budget.stopped_at < trainer.state.max_steps
    )
    if rollouts.lockstep_batches:
        notes.append(
            f"{rollouts.lockstep_batches} generation batches decoded in lockstep over "
            f"{trainer.accelerator.num_processes} ranks (ZeRO-3, weights left sharded)"
        )
    if paused:
        notes.append(
            f"stopped at step {trainer.state.global_step} of {trainer.state.max_steps}: "
            f"the {ores.max_train_seconds:g} s training budget was spent; rerun to resume"
        )
    save_final(
        trainer,
        tokenizer,
        plan.output_dir,
        lora=ores.lora.r > 0,
        manifest={"kind": "rl", "base_model": ores.model, "config_hash": plan.config_hash},
    )
    return _TrainOutcome(_curves(trainer, plan, book, base, resume), notes, paused)


def rollout_generator(args: Any, plan: RlPlan) -> Callable[[Any, Any, int], Any] | None:
    """Where rollouts are generated. None: an in-process `Engine` over the trainer's weights on
    each rank (a CPU or a GPU; under ZeRO-3 gathered, or kept in step across ranks: see
    `rollouts.generation_policy`). With TRL's `use_vllm` in server mode: the `vllm serve` TRL
    syncs the weights to before each generation batch, through its OpenAI `/v1/completions`
    (token-id prompts, stop strings, the sampled ids and log probs back). In colocate mode: the
    `vllm.LLM` TRL keeps on each rank's GPU, its turns batched by `ColocatedVllmGenerator`.

    The factory is called with (trainer, tokenizer, number of rollouts) per generation batch."""
    if not args.use_vllm:
        return None
    from oresearch_cli.agent.generators import ChatTokenizer, EndpointGenerator

    if args.vllm_mode == "colocate":
        if args.vllm_tensor_parallel_size > 1:
            raise ConfigError(
                f"{plan.where}: rl.vllm_tensor_parallel_size {args.vllm_tensor_parallel_size} in colocate "
                "mode: multi-turn rollouts decode each rank's own turns, which a tensor-parallel group "
                "cannot; use vllm_mode: server for a policy that needs tensor parallelism"
            )
        if args.vllm_enable_sleep_mode:
            raise ConfigError(
                f"{plan.where}: rl.vllm_enable_sleep_mode: ores's multi-turn rollouts keep the colocated "
                "engine awake between turns; turn it off and size vllm_gpu_memory_utilization instead"
            )
        from oresearch_cli.train.colocated import ColocatedVllmGenerator

        def colocated(trainer: Any, tokenizer: Any, batch: int) -> ColocatedVllmGenerator:
            llm = trainer.vllm_generation.llm
            return ColocatedVllmGenerator(
                llm,
                ChatTokenizer(tokenizer, name="policy"),
                context_length=int(llm.llm_engine.model_config.max_model_len),
            )

        return colocated
    if args.vllm_mode != "server":
        raise ConfigError(
            f"{plan.where}: rl.vllm_mode {args.vllm_mode!r}: use vllm_mode server (`vllm serve` on its "
            "own GPUs) or colocate (vLLM on the training GPUs)"
        )

    base = (args.vllm_server_base_url or f"http://{args.vllm_server_host}:{args.vllm_server_port}").rstrip(
        "/"
    )
    served = plan.resolved.ores.vllm_model or plan.model_path

    def endpoint(trainer: Any, tokenizer: Any, batch: int) -> EndpointGenerator:
        return EndpointGenerator(
            f"{base}/v1", served, ChatTokenizer(tokenizer, name=served), token_logprobs=True
        )

    return endpoint


def _curves(
    trainer: Any, plan: RlPlan, book: RolloutBook, base: BaseReward | None, resume: Path | None
) -> dict[str, Any]:
    history = trainer.state.log_history
    rewards: list[Any] = []
    kl: list[Any] = []
    for entry in history:
        if "reward" not in entry:
            continue
        components = {name: entry.get(f"rewards/{name}/mean") for name in plan.reward_names}
        rewards.append([entry["step"], {**components, "total": entry["reward"]}])
        if "kl" in entry:
            kl.append([entry["step"], entry["kl"]])
    return {
        "steps": int(trainer.state.global_step),
        "rollouts": book.written,
        "tokens_seen": int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0),
        "reward_curve": json.dumps(rewards),
        "kl_curve": json.dumps(kl),
        "mean_tool_calls": book.mean_tool_calls,
        "judge_calls": base.calls if base else 0,
        "judge_cached": base.cached if base else 0,
        "judge_failed": base.failed if base else 0,
        "resumed_from": resume.name if resume else None,
    }
