"""`ores sft`'s settings: TRL's own `SFTConfig` keys, verbatim, plus an `ores:` block for ours.

    sft:
      learning_rate: 2.0e-4          # any trl.SFTConfig field, spelt as TRL spells it
      num_train_epochs: 2
      max_length: 4096
      ores:                          # SftSettings below
        model: embedded
        overlong: truncate
        eval_split: 0.05
        lora: {r: 16}
        launch: {accelerate_config: recipes/accelerate/zero3.yaml}

Layering is the project's (`config.resolve`): defaults < `ORES_SFT_<KEY>` (ores keys) < the recipe
< flags. A key that is neither an `SFTConfig` field nor `ores` is refused with the nearest valid
name; a value TRL rejects is reported as one line naming the recipe. `TRL_DEFAULTS` are ores's
defaults where TRL's do not suit whole-trace SFT (TRL truncates at 1,024 tokens, for one).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from oresearch_cli.config import Recipe, apply, bounded, env_settings, nearest
from oresearch_cli.errors import ConfigError
from oresearch_cli.train.launch import LaunchSettings

SECTION = "sft"
ORES_KEY = "ores"

# Where ores differs from TRL's defaults, and why.
TRL_DEFAULTS: dict[str, Any] = {
    "max_length": 16384,  # whole traces; TRL's 1,024 would cut nearly every one (the paper trains at 64k)
    "num_train_epochs": 2.0,
    "per_device_train_batch_size": 1,  # traces differ in length by 10x: pad little, accumulate instead
    "gradient_accumulation_steps": 8,
    "learning_rate": 2e-5,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.03,  # a ratio when below 1 (transformers 5 folded warmup_ratio into it)
    "logging_steps": 1,
    "save_strategy": "steps",
    "save_steps": 25,
    "save_total_limit": 2,
    "report_to": "none",
    "disable_tqdm": True,  # ores draws its own progress (rich on a terminal, a line per log otherwise)
    "seed": 42,
    "include_num_input_tokens_seen": "non_padding",  # tokens seen, for the catalog and throughput
}


@dataclass
class LoraSettings:
    """`r: 0` is full fine-tuning; above 0, PEFT LoRA of that rank on `target_modules`."""

    r: int = bounded(0, low=0)
    alpha: int | None = None  # None: 2 x r
    dropout: float = bounded(0.05, low=0.0, high=1.0)
    target_modules: str | list[str] = "all-linear"


@dataclass
class SftSettings:
    """The `ores:` block: what ores adds around TRL."""

    model: str = (
        "embedded"  # a checkpoint dir, a name under models/, an sft run id, a hub id; `embedded`: SmolLM2
    )
    traces: str | None = None  # None: the workspace's accepted set; or a file, an export dir, '-'
    field: str | None = None  # the trace column of a file
    filtered_run: str | None = None  # which filter run's accepted set (default: the latest)
    ignore_gate: bool = False
    overlong: Literal["drop", "truncate"] = "truncate"
    eval_split: float = bounded(0.05, low=0.0, high=0.5)
    name: str | None = None  # the model's folder under models/; default sft-<config hash>
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)
    launch: LaunchSettings = dataclasses.field(default_factory=LaunchSettings)


@dataclass(frozen=True)
class ResolvedSft:
    trl: dict[str, Any]  # SFTConfig keyword arguments, before output_dir
    ores: SftSettings

    def to_dict(self) -> dict[str, Any]:
        return {**self.trl, ORES_KEY: dataclasses.asdict(self.ores)}


def sft_config_fields() -> set[str]:
    from trl import SFTConfig

    return {f.name for f in dataclasses.fields(SFTConfig) if f.init}


# Keys ores sets itself: a recipe naming them would be overridden silently, so it is refused.
MANAGED = {
    "output_dir",
    "dataset_text_field",
    "dataset_kwargs",
    "completion_only_loss",
    "assistant_only_loss",
}


def resolve_sft(
    recipe: Recipe,
    trl_flags: Mapping[str, Any] | None = None,
    ores_flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ResolvedSft:
    """TRL keys and the ores block, each layered defaults < env < recipe < flags."""
    trl, ores = resolve_trainer_section(
        recipe, SECTION, sft_config_fields(), TRL_DEFAULTS, SftSettings(), trl_flags, ores_flags, environ
    )
    max_length = trl.get("max_length")
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 16:
        raise ConfigError(
            f"{recipe.where}: sft.max_length must be an integer of at least 16, got {max_length!r}"
        )
    return ResolvedSft(trl, ores)


S = TypeVar("S")


def resolve_trainer_section(
    recipe: Recipe,
    section_name: str,
    valid: set[str],
    trl_defaults: Mapping[str, Any],
    ores_defaults: S,
    trl_flags: Mapping[str, Any] | None,
    ores_flags: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None,
    managed: set[str] = MANAGED,
    config_name: str = "trl.SFTConfig",
) -> tuple[dict[str, Any], S]:
    """A trainer stage's section: TRL's own config keys (checked against `valid`) and the `ores:`
    block (a dataclass), each layered defaults < `ORES_<SECTION>_<KEY>` < recipe < flags."""
    environ = os.environ if environ is None else environ
    section = recipe.section(section_name)
    ores_block = section.pop(ORES_KEY, None) or {}
    if not isinstance(ores_block, Mapping):
        raise ConfigError(
            f"{recipe.where}: {section_name}.ores must be a mapping of ores settings; fix the value"
        )
    for key in section:
        if key in managed:
            raise ConfigError(
                f"{recipe.where}: {section_name}.{key} is set by ores itself; remove it from the recipe"
            )
        if key not in valid:
            raise ConfigError(
                f"{recipe.where}: {section_name}.{key} is not a {config_name} setting; "
                f"{nearest(str(key), valid | {ORES_KEY})}"
            )
    trl = {**trl_defaults, **section, **{k: v for k, v in (trl_flags or {}).items() if v is not None}}
    ores = ores_defaults
    prefix = f"{section_name}.ores."
    for key, value in env_settings(section_name, type(ores_defaults), environ).items():
        ores = apply(ores, {key: value}, f"env ORES_{section_name.upper()}_{key.upper()}", from_text=True)
    ores = apply(ores, ores_block, recipe.where, prefix)
    if ores_flags:
        ores = apply(ores, {k: v for k, v in ores_flags.items() if v is not None}, "flags", prefix)
    return trl, ores


# `report_to` names and the package each needs (transformers' integrations).
_REPORTERS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow",
              "comet_ml": "comet_ml", "clearml": "clearml", "swanlab": "swanlab", "dvclive": "dvclive"}  # fmt: skip


def check_report_to(report_to: Any, where: str) -> None:
    """A `report_to` whose package is missing fails here, in one line, before any run starts
    (transformers would raise when the trainer is built, after the run was registered)."""
    from transformers.integrations import get_available_reporting_integrations

    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    available = set(get_available_reporting_integrations())
    for name in names:
        if name in ("none", "all") or name in available:
            continue
        package = _REPORTERS.get(name, name)
        raise ConfigError(
            f"{where}: report_to {name!r} needs the {package} package; pip install {package}, or use --report-to none"
        )


def _gpu_has_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def build_sft_config(trl: Mapping[str, Any], output_dir: str, where: str) -> Any:
    """`trl.SFTConfig` from the resolved keys; TRL's own checks become one ConfigError line."""
    from trl import SFTConfig

    return build_trainer_config(SFTConfig, "sft", trl, output_dir, where)


def build_trainer_config(
    config_class: Any, stage: str, trl: Mapping[str, Any], output_dir: str, where: str
) -> Any:
    """A TRL config (`SFTConfig`, `GRPOConfig`) from resolved keys; its own checks become one line."""
    kwargs = dict(trl)
    if "bf16" not in kwargs and "fp16" not in kwargs:
        # TRL turns bf16 on by default and then refuses a machine without a GPU: unset, bf16
        # means "where the GPU has it", so one recipe runs on a laptop and on a cluster.
        kwargs["bf16"] = _gpu_has_bf16()
    try:
        return config_class(output_dir=output_dir, **kwargs)
    except (TypeError, ValueError) as exc:
        message = " ".join(str(exc).split())
        raise ConfigError(
            f"{where}: TRL refused the {stage} settings ({message[:300]}); fix the recipe or flags"
        ) from None
