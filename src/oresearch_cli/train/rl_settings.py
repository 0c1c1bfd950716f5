"""`ores rl`'s settings: TRL's own `GRPOConfig` keys, verbatim, plus an `ores:` block for ours.

    rl:
      learning_rate: 1.0e-6          # any trl.GRPOConfig field, spelt as TRL spells it
      num_generations: 4
      beta: 0.01
      ores:                          # RlSettings below
        model: smollm2-135m-sft      # an sft run, a models/ name, a checkpoint dir (`--from`)
        questions: questions.jsonl   # default: the workspace's seeds
        search: local:wiki
        reward_weights: [0.6, 0.2, 0.2]
        budget: {max_tool_calls: 8, max_turn_tokens: 700}

Layering as `ores sft` (`settings.resolve_trainer_section`). `reward_weights` is ores's, not
TRL's key: ores builds TRL's list from it and any custom rewards, so a recipe that set TRL's
would be overridden silently and is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oresearch_cli.config import Recipe, bounded
from oresearch_cli.errors import ConfigError
from oresearch_cli.train.launch import LaunchSettings
from oresearch_cli.train.settings import ORES_KEY, LoraSettings, build_trainer_config, resolve_trainer_section

SECTION = "rl"

# Where ores differs from TRL's GRPO defaults, and why.
GRPO_DEFAULTS: dict[str, Any] = {
    "learning_rate": 1e-6,
    "num_generations": 4,  # a group: the advantage is a rollout's reward against its group's
    "per_device_train_batch_size": 4,  # one group per device step
    "gradient_accumulation_steps": 1,
    "temperature": 0.7,  # the rollouts sample at it and TRL scores their tokens at it: one value
    "beta": 0.01,  # a KL term to the starting model: logged each step, keeps the protocol from drifting
    "logging_steps": 1,
    "save_strategy": "steps",
    "save_steps": 10,
    "save_total_limit": 2,
    "report_to": "none",
    "disable_tqdm": True,
    "seed": 42,
    "activation_checkpointing": False,  # TRL turns it on; a CPU run has the memory and recomputing costs ~30%
    "log_completions": False,  # ores stores every rollout itself (the `rollouts` log)
}

MANAGED = {"output_dir", "reward_weights", "reward_funcs"}


@dataclass
class RolloutBudget:
    """`agent.single.LoopBudget`'s bounds for one rollout (sampling comes from TRL's keys)."""

    max_tool_calls: int = bounded(8, low=0)
    max_turns: int = bounded(24, low=1)
    max_new_tokens: int = bounded(2048, low=1)
    max_turn_tokens: int = bounded(700, low=1)
    max_seconds: float = bounded(600.0, low=1.0)
    max_context_tokens: int | None = (
        None  # prompt + rollout; None: the model's limit (bounds a step's memory)
    )


@dataclass
class JudgeChoice:
    """Which model judges report quality (R_base): an LLM config with a `judge` role, or a model
    name (`embedded` serves SmolLM2 in-process through `ores serve`'s embedded server)."""

    llm_config: str | None = None
    model: str | None = None
    concurrency: int = bounded(4, low=1)


@dataclass
class RlSettings:
    """The `ores:` block: what ores adds around TRL's GRPO."""

    model: str = "embedded"  # the policy to start from: an sft run, a models/ name, a checkpoint dir
    questions: str | None = None  # a JSONL/Parquet of questions, '-'; None: the workspace's seeds
    field: str | None = None  # the question column of a file
    search: str = "local:wiki"  # the toolbox's search backend (as `ores synth --search`)
    crawl: str = "auto"  # the crawl backend: `auto` answers corpus pages from the corpus, others from the web
    budget: RolloutBudget = dataclasses.field(default_factory=RolloutBudget)
    reward_weights: list[float] = dataclasses.field(default_factory=lambda: [0.6, 0.2, 0.2])
    custom_rewards: dict[str, float] = dataclasses.field(default_factory=dict)  # module:function -> weight
    judge: JudgeChoice = dataclasses.field(default_factory=JudgeChoice)
    vllm_model: str | None = None  # the name `vllm serve` serves the policy under (default: its path)
    name: str | None = None  # the model's folder under models/; default rl-<config hash>
    # Stop at the first step end after this many seconds of training (not part of the config
    # hash: rerunning resumes the same run with a new budget). None: max_steps / epochs decide.
    max_train_seconds: float | None = None
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)
    launch: LaunchSettings = dataclasses.field(default_factory=LaunchSettings)


@dataclass(frozen=True)
class ResolvedRl:
    trl: dict[str, Any]  # GRPOConfig keyword arguments, before output_dir and reward_weights
    ores: RlSettings

    def to_dict(self) -> dict[str, Any]:
        return {**self.trl, ORES_KEY: dataclasses.asdict(self.ores)}


def grpo_config_fields() -> set[str]:
    from trl import GRPOConfig

    return {f.name for f in dataclasses.fields(GRPOConfig) if f.init}


def resolve_rl(
    recipe: Recipe,
    trl_flags: Mapping[str, Any] | None = None,
    ores_flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ResolvedRl:
    """TRL keys and the ores block, each layered defaults < env < recipe < flags; the reward
    weights checked (`rewards.parse_reward_weights`)."""
    from oresearch_cli.train.rewards import parse_reward_weights

    trl, ores = resolve_trainer_section(
        recipe,
        SECTION,
        grpo_config_fields(),
        GRPO_DEFAULTS,
        RlSettings(),
        trl_flags,
        ores_flags,
        environ,
        managed=MANAGED,
        config_name="trl.GRPOConfig",
    )
    ores.reward_weights = list(parse_reward_weights(ores.reward_weights))
    for spec, weight in ores.custom_rewards.items():
        if not weight >= 0:
            raise ConfigError(
                f"{recipe.where}: rl.ores.custom_rewards {spec}: weight {weight} must be 0 or more"
            )
    generations = trl.get("num_generations")
    if not isinstance(generations, int) or generations < 2:
        raise ConfigError(
            f"{recipe.where}: rl.num_generations must be 2 or more (a group needs a baseline), got {generations!r}"
        )
    return ResolvedRl(trl, ores)


def build_grpo_config(trl: Mapping[str, Any], weights: list[float], output_dir: str, where: str) -> Any:
    """`trl.GRPOConfig` with ores's reward weights; TRL's own checks become one ConfigError line."""
    from trl import GRPOConfig

    return build_trainer_config(GRPOConfig, "rl", {**trl, "reward_weights": weights}, output_dir, where)
