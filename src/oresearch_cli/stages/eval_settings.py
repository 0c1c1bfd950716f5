"""The `eval:` section of a recipe (or `ORES_EVAL_<KEY>`, or flags): one settings class for
`ores eval run` and `ores eval score`, since a recipe section is checked against one set of keys."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from oresearch_cli.agent.single import LoopBudget
from oresearch_cli.config import load_recipe, resolve
from oresearch_cli.errors import ConfigError

CLEAN_METHODS = ("llm", "rules", "none")


@dataclass(frozen=True)
class EvalSettings:
    # `ores eval run --model`: the tools, questions at once, and each question's loop budget
    search: str = "local"
    crawl: str = "auto"
    concurrency: int = 4
    max_tool_calls: int = 16
    max_turns: int = 40
    max_new_tokens: int = 8192
    max_turn_tokens: int = 4096
    max_seconds: float = 900.0
    max_context_tokens: int | None = None
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    # `ores eval score`: how articles reach the judge and how hard it is pressed
    clean: str = "llm"  # DRB cleans citations out with an LLM; rules: a regex; none: as written
    judge_max_chars: int | None = None  # cut each article to fit a small judge's context
    judge_attempts: int = 2  # the first ask and one strict re-ask
    judge_concurrency: int = 4  # tasks judged at once
    complete: bool = False  # re-ask a RACE reply that misses or mangles a criterion (DRB does not)
    criteria_samples: int = 5  # --bench generate: dimension-weight samples averaged per task (DRB: 5)
    judge_integer_scores: bool = False  # bind scores to integers (schema endpoints; small judges)
    judge_analysis_chars: int | None = None  # bound each criterion's analysis (small judges)

    def budget(self) -> LoopBudget:
        names = LoopBudget.__dataclass_fields__
        return LoopBudget(**{k: v for k, v in asdict(self).items() if k in names})

    def check(self) -> None:
        self.budget()
        if self.clean not in CLEAN_METHODS:
            raise ConfigError(f"eval.clean {self.clean!r}: use one of {', '.join(CLEAN_METHODS)}")
        if self.judge_attempts < 1 or self.judge_concurrency < 1:
            raise ConfigError("eval.judge_attempts and eval.judge_concurrency must be 1 or more; change them")
        if self.judge_max_chars is not None and self.judge_max_chars < 200:
            raise ConfigError(
                f"eval.judge_max_chars {self.judge_max_chars}: under 200 leaves nothing to judge"
            )


def eval_settings(
    flags: dict[str, Any], config: str | Path | None = None, environ: dict[str, str] | None = None
) -> EvalSettings:
    """Flags (None: unset) over the recipe's `eval:` section over `ORES_EVAL_<KEY>` over defaults."""
    settings = resolve(EvalSettings, load_recipe(config), "eval", flags, environ)
    settings.check()  # before any model loads
    return settings
