"""LLM configuration: precedence of flags, YAML, environment and defaults; errors; prices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oresearch_cli.errors import OresError
from oresearch_cli.llm import ROLES, LLMConfigError, PriceTable, load_config
from oresearch_cli.llm.config import DEFAULT_BASE_URL
from oresearch_cli.llm.pricing import is_local_url

YAML = """\
llm:
  max_concurrency: 32
  defaults:
    model: qwen2.5-7b-instruct
    base_url: http://10.0.0.5:8000/v1
    temperature: 0.7
    max_tokens: 4096
    rpm: 600
  planner:
    model: gpt-4.1
    base_url: https://api.openai.com/v1
    api_key_env: MY_OPENAI_KEY
  worker:
    base_urls: [http://10.0.0.5:8000/v1, "http://10.0.0.6:8000/v1/"]
    tpm: 2000000
    max_concurrency: 48
  judge:
    model: gpt-4o-mini
    temperature: 0
    json_mode: json_schema
  prices:
    qwen2.5-7b-instruct: {input: 0.1, output: 0.2}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_defaults_need_only_a_model() -> None:
    config = load_config(environ={"ORES_LLM_MODEL": "smollm2"})
    for role in ROLES:
        rc = config.role(role)
        assert rc.model == "smollm2" and rc.base_urls == (DEFAULT_BASE_URL,)
        assert rc.api_key_env == "OPENAI_API_KEY" and rc.temperature is None
    assert config.max_concurrency == 64


def test_yaml_shape(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, YAML), environ={"MY_OPENAI_KEY": "sk-x"})
    planner, worker, judge = config.role("planner"), config.role("worker"), config.role("judge")
    assert (planner.model, planner.base_urls, planner.api_key_env) == (
        "gpt-4.1",
        ("https://api.openai.com/v1",),
        "MY_OPENAI_KEY",
    )
    assert planner.temperature == 0.7 and planner.rpm == 600  # from defaults
    assert worker.model == "qwen2.5-7b-instruct"
    assert worker.base_urls == ("http://10.0.0.5:8000/v1", "http://10.0.0.6:8000/v1")
    assert worker.tpm == 2_000_000 and worker.max_concurrency == 48 and worker.max_tokens == 4096
    assert judge.temperature == 0 and judge.json_mode == "json_schema"
    assert config.max_concurrency == 32
    assert config.prices.cost("qwen2.5-7b-instruct", 1_000_000, 0) == pytest.approx(0.1)


def test_precedence_flags_over_yaml_over_env_over_defaults(tmp_path: Path) -> None:
    env = {
        "OPENAI_BASE_URL": "http://env-a:8000/v1, http://env-b:8000/v1",
        "ORES_LLM_MODEL": "env-model",
        "ORES_SUMMARIZER_MODEL": "env-summarizer",
        "ORES_JUDGE_TEMPERATURE": "0.2",
        "ORES_LLM_MAX_CONCURRENCY": "8",
    }
    yaml_path = write(tmp_path, "worker: {model: yaml-worker}\njudge: {max_tokens: 512}\n")
    flags = {"judge.model": "flag-judge", "temperature": 0.9, "max_tokens": None}
    config = load_config(yaml_path, flags, environ=env)

    assert config.role("planner").model == "env-model"  # env for all roles
    assert config.role("summarizer").model == "env-summarizer"  # env for the role
    assert config.role("worker").model == "yaml-worker"  # YAML over env
    assert config.role("judge").model == "flag-judge"  # flags over all
    assert config.role("judge").max_tokens == 512  # an unset flag (None) changes nothing
    # A flag for all roles beats the role's own setting from a lower source.
    assert config.role("judge").temperature == 0.9
    assert config.role("planner").base_urls == ("http://env-a:8000/v1", "http://env-b:8000/v1")
    assert config.max_concurrency == 8


def test_role_key_variables(tmp_path: Path) -> None:
    env = {
        "ORES_JUDGE_API_KEY_ENV": "JUDGE_KEY",
        "JUDGE_KEY": "sk-judge",
        "ORES_SUMMARIZER_API_KEY": "sk-sum",
    }
    config = load_config(overrides={"model": "m"}, environ=env)
    assert config.role("judge").api_key_env == "JUDGE_KEY"
    assert config.role("summarizer").api_key_env == "ORES_SUMMARIZER_API_KEY"
    assert config.role("worker").api_key_env == "OPENAI_API_KEY"
    # The configuration holds names of variables, never keys.
    dumped = json.dumps(config.to_dict())
    assert "sk-judge" not in dumped and "sk-sum" not in dumped and "JUDGE_KEY" in dumped


def test_to_dict_drops_credentials_from_urls() -> None:
    config = load_config(
        overrides={"model": "m", "base_url": "https://bob:hunter2@llm.example.com/v1"}, environ={}
    )
    dumped = json.dumps(config.to_dict())
    assert "hunter2" not in dumped and "https://llm.example.com/v1" in dumped  # a ?query is refused


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "env", "message"),
    [
        (None, {}, {}, "llm worker: no model set; pass --model, set ORES_WORKER_MODEL or ORES_LLM_MODEL"),
        ("worker: [oops\n", {}, {}, "invalid YAML at line"),
        ("planer: {model: x}\n", {}, {}, "unknown key 'planer'; did you mean 'planner'?"),
        ("llm: {}\nsynht: {max_steps: 3}\n", {}, {}, "unknown section 'synht'; did you mean 'synth'?"),
        (None, {"wroker.model": "x"}, {}, "unknown role 'wroker'"),
        ("worker: {modle: x}\n", {}, {}, "unknown setting 'modle'; did you mean 'model'?"),
        (
            None,
            {"model": "m", "judge.api_key_env": "NOPE_KEY"},
            {},
            "reads its API key from $NOPE_KEY, which is not set",
        ),
        (
            None,
            {"model": "m"},
            {"ORES_PLANNER_API_KEY_ENV": "GONE"},
            "env ORES_PLANNER_API_KEY_ENV: llm planner reads its API key from $GONE",
        ),
        (
            None,
            {"model": "gpt-4o", "base_url": "https://api.openai.com/v1"},
            {},
            "needs an API key; set OPENAI_API_KEY",
        ),
        (None, {"model": "m", "base_url": "localhost:8000"}, {}, "not an http(s) URL"),
        (None, {"model": "m", "timeout_s": 0}, {}, "invalid timeout_s"),
        (None, {"model": "m", "rpm": "fast"}, {}, "invalid rpm"),
        (None, {"model": "m", "json_mode": "xml"}, {}, "use one of none, json_object, json_schema"),
        ("- a\n- b\n", {}, {}, "expected a mapping at the top"),
        ("prices: {m: {input: 1}}\n", {}, {}, "expected {input: USD, output: USD}"),
    ],
)
def test_errors_are_one_line_with_a_fix(tmp_path: Path, yaml_text, overrides, env, message) -> None:
    path = write(tmp_path, yaml_text) if yaml_text is not None else None
    with pytest.raises(LLMConfigError) as info:
        load_config(path, overrides, environ=env, require=["worker"])
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text and ";" in text and isinstance(info.value, OresError)


def test_missing_file_and_unknown_role(tmp_path: Path) -> None:
    with pytest.raises(LLMConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", environ={})
    config = load_config(overrides={"model": "m"}, environ={})
    with pytest.raises(LLMConfigError, match="unknown role 'critic'; use one of planner, worker"):
        config.role("critic")


def test_only_required_roles_must_have_a_model() -> None:
    config = load_config(overrides={"judge.model": "gpt-4o-mini"}, environ={}, require=["judge"])
    assert config.role("judge").model == "gpt-4o-mini"
    with pytest.raises(LLMConfigError, match="llm planner: no model set"):
        config.role("planner")


def test_zero_means_no_limit() -> None:
    config = load_config(overrides={"model": "m", "rpm": 0, "tpm": "none", "max_concurrency": 0}, environ={})
    assert config.role("worker").rpm is None and config.role("worker").tpm is None
    assert config.max_concurrency is None


# -- prices -----------------------------------------------------------------------------------------


def test_price_lookup() -> None:
    prices = PriceTable()
    assert prices.cost("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(12.5)
    assert prices.cost("gpt-4o-2024-08-06", 1_000_000, 0) == pytest.approx(2.5)  # snapshot -> family
    assert prices.cost("openai/gpt-5-mini", 0, 1_000_000) == pytest.approx(2.0)
    assert prices.cost("gpt-4o-mini", 2000, 1000) == pytest.approx((2000 * 0.15 + 1000 * 0.6) / 1e6)
    # Unknown: None (not 0) on a hosted API; 0 for a self-hosted endpoint.
    assert prices.cost("mystery-model", 10, 10, "https://api.example.com/v1") is None
    assert prices.cost("Qwen/Qwen2.5-7B-Instruct", 10, 10, "http://127.0.0.1:8000/v1") == 0.0
    assert prices.cost("gpt-4o-audio-preview", 10, 10) is None  # not priced like gpt-4o


def test_local_urls() -> None:
    assert is_local_url("http://localhost:8000/v1") and is_local_url("http://192.168.1.4/v1")
    assert is_local_url("http://[::1]:8000/v1")
    assert not is_local_url("https://api.openai.com/v1") and not is_local_url(None)
