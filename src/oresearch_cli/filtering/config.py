"""Filter settings: which rules run and their bounds, dedup thresholds, the judge's thresholds.

Settings come from (later wins): the defaults here, `ORES_FILTER_<KEY>` variables, the recipe's
`filter:` section (`--config`, read by `oresearch_cli.config`), then flags. Unknown keys are an
error naming the nearest valid one, so a typo never silently does nothing.

    rules:              # rule name -> on/off (see `oresearch_cli.filtering.rules.RULES`)
      language: false
    min_tool_calls: 2
    max_fallback_share: 0.3
    judge:
      min_overall: 6.5
      min_criterion: {faithfulness: 6}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from oresearch_cli.config import apply, bounded, load_recipe, resolve
from oresearch_cli.errors import ConfigError, InputError

# The judge's score scale (`filtering.judge` scores every criterion 0-10; overall is their mean):
# every threshold on a judge score must lie in it.
SCORE_MIN = 0.0
SCORE_MAX = 10.0


@dataclass(frozen=True)
class JudgeSettings:
    enabled: bool = True
    min_overall: float = bounded(6.0, low=SCORE_MIN, high=SCORE_MAX)
    # One floor for every criterion, and optional floors per criterion that override it.
    min_each: float = bounded(4.0, low=SCORE_MIN, high=SCORE_MAX)
    min_criterion: dict[str, float] = field(default_factory=dict)
    max_attempts: int = 3  # the first ask plus stricter re-asks after malformed output
    max_chars: int = 24_000  # how much of the trace the judge reads
    concurrency: int = 8


@dataclass(frozen=True)
class FilterConfig:
    rules: dict[str, bool] = field(default_factory=dict)  # missing: on
    # the share of a trace's pieces (subtask list, steps, plans, answers, report) written by
    # orchestrator fallbacks instead of the model, at most (synth's steps log; see
    # `oresearch_cli.agent.authorship`): over it, the trace is not the model's work
    max_fallback_share: float = bounded(0.5, low=0.0, high=1.0)
    # tool calls per subtask (the paper's tool reward: 0 below 2, -1 above 8)
    min_tool_calls: int = 2
    max_tool_calls: int = 8
    # total tagged steps of the trace
    min_steps: int = 6
    max_steps: int = 200
    # report sources: distinct cited pages
    min_sources: int = 3
    # lengths in tokens (the target model's tokenizer when `tokenizer` names one, else an estimate)
    min_report_tokens: int = 150
    max_report_tokens: int = 16_000
    max_trace_tokens: int = 64_000
    tokenizer: str | None = None
    # repetition: a line of at least `repeat_min_chars` seen `max_line_repeats` times or more, or
    # model-written text that compresses below `min_compression` (only texts over 2,000 characters)
    repeat_min_chars: int = 30
    max_line_repeats: int = 3
    min_compression: float = 0.12
    # markers of prompt text or chat-template tokens that must not reach a report
    leak_markers: tuple[str, ...] = (
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<|eot_id|>",
        "<|start_header_id|>",
        "[INST]",
        "[/INST]",
        "As an AI language model",
        "You are a research assistant",
        "You are a helpful assistant",
        "Respond in the following format",
    )
    # dedup
    dedup: bool = True
    question_threshold: float = 0.9
    report_threshold: float = 0.8
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    workers: int = 0  # processes for the rules; 0: one per core when the batch is big enough

    def enabled(self, rule: str) -> bool:
        return self.rules.get(rule, True)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["leak_markers"] = list(self.leak_markers)
        data.pop("workers")  # how fast, not what: kept out of the config hash
        return data


def from_dict(
    data: dict[str, Any], base: FilterConfig | None = None, where: str = "filter config"
) -> FilterConfig:
    """`base` with the settings of `data` applied and checked (nested `judge`, `rules` and
    `min_criterion` merge, not replace)."""
    from oresearch_cli.filtering.rules import RULES

    config = apply(base or FilterConfig(), data, where, "filter.")
    check_scores(config.judge, where)
    unknown = sorted(set(config.rules) - set(RULES))
    if unknown:
        raise InputError(f"{where}: unknown rule(s) {', '.join(unknown)}; rules are {', '.join(RULES)}")
    return config


def check_scores(judge: JudgeSettings, where: str) -> None:
    """Every judge threshold a number on the judge's scale (`bounded` checks min_overall and
    min_each as they are set; this also covers the per-criterion floors and NaN)."""
    floors = {
        "min_overall": judge.min_overall,
        "min_each": judge.min_each,
        **{f"min_criterion.{k}": v for k, v in judge.min_criterion.items()},
    }
    for name, value in floors.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and SCORE_MIN <= value <= SCORE_MAX):
            raise ConfigError(
                f"{where}: filter.judge.{name} must be a judge score between {SCORE_MIN:g} and "
                f"{SCORE_MAX:g}, got {value!r}; use a value in that range"
            )


def load_filter_config(
    path: str | Path | None,
    overrides: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> FilterConfig:
    """The recipe's `filter:` section over `ORES_FILTER_<KEY>` variables over the defaults, then
    `overrides` (flags)."""
    recipe = load_recipe(path)
    config = resolve(FilterConfig, recipe, "filter", environ=environ)
    check_scores(config.judge, recipe.where)
    return from_dict(overrides or {}, config, "flags")
