"""The one config loader (`oresearch_cli.config`): recipe sections, typed settings layered flags >
recipe > environment > defaults, and one-line errors naming the key, the file and the nearest key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from oresearch_cli.config import load_recipe, resolve
from oresearch_cli.errors import ConfigError, OresError
from oresearch_cli.workspace import Workspace


@dataclass(frozen=True)
class Judge:
    min_overall: float = 6.0
    min_criterion: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    max_steps: int = 10
    sequential: bool = False
    tokenizer: str | None = None
    markers: tuple[str, ...] = ("a",)
    judge: Judge = field(default_factory=Judge)


def recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_layers_flags_over_recipe_over_environment_over_defaults(tmp_path: Path) -> None:
    path = recipe(tmp_path, "synth: {max_steps: 4, judge: {min_criterion: {depth: 5}}}\n")
    env = {"ORES_SYNTH_MAX_STEPS": "3", "ORES_SYNTH_SEQUENTIAL": "true", "ORES_SYNTH_TOKENIZER": "gpt2"}
    settings = resolve(Settings, load_recipe(path), "synth", {"tokenizer": "qwen", "max_steps": None}, env)
    assert settings.max_steps == 4  # the recipe beats the environment; an unset flag (None) is no flag
    assert settings.sequential is True  # the environment beats the default
    assert settings.tokenizer == "qwen"  # the flag beats everything
    assert settings.markers == ("a",) and settings.judge.min_overall == 6.0  # defaults
    # A nested section merges key by key, mappings too.
    merged = resolve(
        Settings, load_recipe(path), "synth", {"judge": {"min_criterion": {"faithfulness": 7}}}, {}
    )
    assert merged.judge.min_criterion == {"depth": 5.0, "faithfulness": 7.0}


def test_no_recipe_and_an_empty_section_give_the_defaults(tmp_path: Path) -> None:
    assert resolve(Settings, load_recipe(None), "synth", environ={}) == Settings()
    assert (
        resolve(Settings, load_recipe(recipe(tmp_path, "synth:\nllm: {}\n")), "synth", environ={})
        == Settings()
    )


@pytest.mark.parametrize(
    ("text", "flags", "env", "needle"),
    [
        (
            "synth: {max_stepz: 3}\n",
            {},
            {},
            "r.yaml: synth.max_stepz is not a synth setting; did you mean 'max_steps'?",
        ),
        (
            "synth: {judge: {min_overal: 3}}\n",
            {},
            {},
            "synth.judge.min_overal is not a synth.judge setting; did you mean 'min_overall'?",
        ),
        ("synth: {max_steps: true}\n", {}, {}, "r.yaml: synth.max_steps must be int, got True"),
        ("synth: {sequential: 'yes'}\n", {}, {}, "synth.sequential must be bool, got 'yes'"),
        ("synth: {markers: [1, 2]}\n", {}, {}, "synth.markers must be tuple"),
        ("synht: {max_steps: 3}\n", {}, {}, "r.yaml: unknown section 'synht'; did you mean 'synth'?"),
        ("synth: [1, 2]\n", {}, {}, "`synth:` must be a mapping"),
        ("synth: {max_steps: [oops\n", {}, {}, "r.yaml: invalid YAML at line"),
        ("- a\n", {}, {}, "expected a mapping at the top"),
        (
            None,
            {"max_stps": 3},
            {},
            "flags: synth.max_stps is not a synth setting; did you mean 'max_steps'?",
        ),
        (
            None,
            {},
            {"ORES_SYNTH_MAX_STEPS": "many"},
            "env ORES_SYNTH_MAX_STEPS: max_steps must be int, got 'many'",
        ),
    ],
)
def test_errors_are_one_line_naming_the_key_the_source_and_the_fix(
    tmp_path, text, flags, env, needle
) -> None:
    path = recipe(tmp_path, text) if text is not None else None
    with pytest.raises(ConfigError) as info:
        resolve(Settings, load_recipe(path), "synth", flags, env)
    message = str(info.value)
    assert needle in message, message
    assert "\n" not in message and isinstance(info.value, OresError)


def test_a_missing_file_and_a_directory_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_recipe(tmp_path)


def test_a_file_with_no_section_is_an_llm_configuration(tmp_path: Path) -> None:
    bare = load_recipe(recipe(tmp_path, "worker: {model: m}\n"))
    assert bare.bare and bare.section("llm") == {"worker": {"model": "m"}} and bare.section("synth") == {}


def test_every_stage_reads_its_section_through_the_one_loader(tmp_path: Path) -> None:
    """synth, filter and the LLM roles read one recipe; a typo in any section is refused by all."""
    from oresearch_cli.filtering.config import load_filter_config
    from oresearch_cli.llm import LLMConfigError, load_config
    from oresearch_cli.stages.synth import synth_options

    path = recipe(
        tmp_path,
        "llm: {defaults: {model: m}}\nsynth: {max_steps: 4}\nfilter: {min_sources: 1, judge: {min_overall: 7}}\n",
    )
    assert synth_options({}, path, environ={}).research.max_steps == 4
    assert load_filter_config(path, environ={}).judge.min_overall == 7
    assert load_config(path, environ={}).role("judge").model == "m"
    typo = recipe(tmp_path, "llm: {defaults: {model: m}}\nfilter: {min_sorces: 1}\n")
    with pytest.raises(
        ConfigError, match="filter.min_sorces is not a filter setting; did you mean 'min_sources'"
    ):
        load_filter_config(typo)
    bad_section = recipe(tmp_path, "llm: {defaults: {model: m}}\nfiltr: {}\n")
    for read in (lambda: load_filter_config(bad_section), lambda: load_config(bad_section, environ={})):
        with pytest.raises(
            (ConfigError, LLMConfigError), match="unknown section 'filtr'; did you mean 'filter'"
        ):
            read()
    # The environment layer reaches stage settings too.
    assert synth_options({}, None, environ={"ORES_SYNTH_SERP_NUM": "3"}).research.serp_num == 3
    assert load_filter_config(None, environ={"ORES_FILTER_MIN_SOURCES": "5"}).min_sources == 5


def test_seed_and_spotcheck_read_their_sections_too(tmp_path: Path, run_ores) -> None:
    from oresearch_cli.stages.seed import seed_options
    from oresearch_cli.stages.spotcheck import spotcheck_options

    path = recipe(
        tmp_path, "seed: {limit: 2, near_dup_threshold: 0.9}\nspotcheck: {n: 20, max_reject: 0.2}\n"
    )
    options = seed_options({"limit": None, "sample_seed": 7}, path, environ={}, field="q")
    assert (options.limit, options.near_dup_threshold, options.sample_seed, options.field) == (2, 0.9, 7, "q")
    check = spotcheck_options({"n": None, "seed": 3}, path, environ={"ORES_SPOTCHECK_MAX_REJECT": "0.5"})
    assert (check.n, check.seed, check.max_reject) == (20, 3, 0.2)  # the recipe beats the environment
    with pytest.raises(
        ConfigError, match=r"flags: spotcheck.max_reject must be between 0.0 and 1.0, got 1.5"
    ):
        spotcheck_options({"max_reject": 1.5}, None, environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: {limit: 0}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml: seed.limit must be at least 1, got 0; fix the value"):
        seed_options({}, bad, environ={})
    # Through the CLI: the recipe's limit keeps two of three questions; a flag still wins.
    (tmp_path / "q.jsonl").write_text(
        "".join(
            f'{{"question": "Question number {w} about a different topic?"}}\n' for w in ("one", "two", "six")
        )
    )
    assert run_ores("seed", "q.jsonl", "--config", str(path)).returncode == 0
    assert Workspace.open(tmp_path / "ores-ws").latest_artifact("seeds").n_rows == 2
    assert run_ores("seed", "q.jsonl", "--config", str(path), "--limit", "3").returncode == 0
    assert Workspace.open(tmp_path / "ores-ws").latest_artifact("seeds").n_rows == 3
