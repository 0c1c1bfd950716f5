"""`ores rl`: agentic GRPO on TRL's GRPOTrainer with the real rollout function.

The rollout function is tested twice: alone, with a scripted model that makes real tool calls
against a tiny corpus (env_mask must cover exactly the observation tokens, each rollout is booked
with its rewards), and through `ores rl` itself on a tiny Qwen2 built by the test, in a
subprocess (the test process never imports torch): two GRPO steps, every reward component
logged, the rewards TRL logged equal to the reward functions applied to the stored rollouts,
then a rerun that finds the config trained.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from oresearch_cli.errors import ConfigError
from oresearch_cli.tools import open_toolbox
from oresearch_cli.tools.corpus import build_corpus
from oresearch_cli.train.rewards import format_reward, tool_reward
from oresearch_cli.train.rl_settings import RolloutBudget, resolve_rl
from oresearch_cli.train.rollouts import PolicyRollouts, PromptInfo, RolloutBook, recorded
from oresearch_cli.workspace import Workspace
from test_single_loop import DOCS, QUESTION, TURN_CRAWL, TURN_REPORT, TURN_SEARCH, ScriptedModel

from conftest import ores
from filter_support import traces_file
from model_support import skip_without_local_stack
from train_support import qwen2_style

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rl")
    ws = Workspace.open(root / "ws")
    source = root / "docs.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    build_corpus(ws, source, "mini")
    questions = [
        {"id": "q-photo", "question": QUESTION},
        {"id": "q-calvin", "question": "What does the Calvin cycle fix?"},
    ]
    (root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    return root


# -- the rollout function, with a scripted model -------------------------------------------------


class _State:
    global_step = 3


class _Accelerator:
    num_processes = 1
    process_index = 0

    @staticmethod
    def unwrap_model(model: Any) -> Any:
        return model


class _Policy:
    training = True

    def eval(self) -> None:
        self.training = False

    def train(self, mode: bool = True) -> None:
        self.training = mode


class _Trainer:
    """What the rollout function reads of a GRPOTrainer."""

    state = _State()
    accelerator = _Accelerator()

    def __init__(self) -> None:
        self.model = _Policy()
        self.processing_class = None


def test_rollout_masks_exactly_the_observations_and_books_each_rollout(
    corpus_root: Path, tmp_path: Path
) -> None:
    ws = Workspace.open(corpus_root / "ws")
    scripted = ScriptedModel([TURN_SEARCH, TURN_CRAWL, TURN_REPORT])
    book = RolloutBook(tmp_path / "rollouts.jsonl", ["tool", "format"])
    rollouts = PolicyRollouts(
        open_tools=lambda: open_toolbox(ws, search="local:mini", crawl="local", cache=False),
        prompts={QUESTION: PromptInfo("q-photo", QUESTION, "en")},
        budget=RolloutBudget(max_tool_calls=4, max_new_tokens=4096, max_turn_tokens=2048),
        book=book,
        make_generator=lambda trainer, tokenizer, n: scripted,
    )
    trainer = _Trainer()
    out = rollouts([[{"role": "user", "content": QUESTION}]], trainer)
    assert trainer.model.training  # put back in training mode after sampling

    (ids,), (mask,), (logprobs,), (text,) = (
        out["completion_ids"],
        out["env_mask"],
        out["logprobs"],
        out["trace_text"],
    )
    assert len(ids) == len(mask) == len(logprobs)
    assert out["prompt_ids"][0] == scripted.prompt_ids(
        [{"role": "system", "content": _system()}, {"role": "user", "content": QUESTION}]
    )
    decode = scripted.decode
    model_text = decode([t for t, m in zip(ids, mask, strict=True) if m == 1])
    env_text = decode([t for t, m in zip(ids, mask, strict=True) if m == 0])
    block = re.compile(r"<observation>.*?</observation>", re.S)
    assert out["n_tool_calls"] == [2] and len(block.findall(text)) == 2
    # the environment's tokens are the observation blocks (and the line breaks around them), all of them
    assert block.findall(env_text) == block.findall(text) and not block.sub("", env_text).strip()
    assert "<observation>" not in model_text and "<suggested_answer>" in model_text
    assert all(lp is None for lp, m in zip(logprobs, mask, strict=True) if m == 0)

    # A rollout is written once every reward component has scored it, with its rewards.
    tool = recorded("tool", tool_reward, book)
    fmt = recorded("format", format_reward, book)
    kwargs = {k: out[k] for k in ("trace_text", "n_tool_calls", "rollout_id")}
    tool_values = tool(prompts=[], completions=[], **kwargs)
    assert not (tmp_path / "rollouts.jsonl").exists()
    format_values = fmt(prompts=[], completions=[], **kwargs)
    (row,) = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert row["trace"] == text and row["step"] == 3 and row["seed_id"] == "q-photo"
    assert row["reward_tool"] == tool_values[0] and row["reward_format"] == format_values[0] == 1.0
    assert row["valid"] and row["n_tool_calls"] == 2


def _system() -> str:
    from oresearch_cli.agent.protocol import system_prompt

    return system_prompt("en")


def test_async_reward_is_booked_too(tmp_path: Path) -> None:
    book = RolloutBook(tmp_path / "r.jsonl", ["judge"])
    book.add({"id": "r1", "n_tool_calls": 3})

    async def judge(trace_text: list[str], **kw: Any) -> list[float | None]:
        return [None]  # the judge failed: missing, never 0

    booked = recorded("judge", judge, book)
    assert asyncio.run(booked(trace_text=["x"], rollout_id=["r1"])) == [None]
    row = json.loads((tmp_path / "r.jsonl").read_text())
    assert row["reward_judge"] is None and book.mean_tool_calls == 3


# -- settings ---------------------------------------------------------------------------------------


def test_settings_refuse_what_would_be_silently_wrong(tmp_path: Path) -> None:
    from oresearch_cli.config import load_recipe

    def recipe(text: str) -> Any:
        path = tmp_path / "r.yaml"
        path.write_text(text)
        return load_recipe(path)

    with pytest.raises(ConfigError, match="rl.reward_weights is set by ores itself"):
        resolve_rl(recipe("rl:\n  reward_weights: [1, 1, 1]\n"))
    with pytest.raises(ConfigError, match="not a trl.GRPOConfig setting; did you mean 'num_generations'"):
        resolve_rl(recipe("rl:\n  num_generation: 4\n"))
    with pytest.raises(ConfigError, match="num_generations must be 2 or more"):
        resolve_rl(recipe("rl:\n  num_generations: 1\n"))
    resolved = resolve_rl(recipe("rl:\n  ores:\n    reward_weights: [0.5, 0.25, 0.25]\n"))
    assert resolved.ores.reward_weights == [0.5, 0.25, 0.25] and resolved.trl["beta"] == 0.01


# -- `ores rl` on a tiny Qwen2 --------------------------------------------------------------------


def test_questions_carry_their_reference_report_when_the_file_has_one(tmp_path: Path) -> None:
    from oresearch_cli.errors import InputError
    from oresearch_cli.train.inputs import load_questions

    ws = Workspace.open(tmp_path / "ws")
    rows = [
        {
            "id": "a",
            "prompt": "What is X?",
            "language": "en",
            "article": "ignored",
            "reference": " A report. ",
        },
        {"id": "b", "prompt": "What is Y?"},
    ]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    questions = load_questions(ws, str(path)).questions
    assert [(q.id, q.question, q.reference) for q in questions] == [
        ("a", "What is X?", "A report."),
        ("b", "What is Y?", None),
    ]
    path.write_text(json.dumps({"id": "c", "question": "Q?", "reference": {"text": "x"}}) + "\n")
    with pytest.raises(InputError, match=r"q.jsonl:1: 'reference' is not text; give the reference report"):
        load_questions(ws, str(path))


# A tiny Qwen2 taught the tags by `ores sft` (60 steps at a high learning rate, ~10 s) writes
# some of the protocol, so the format reward is not zero everywhere.
SFT_RECIPE = """
sft:
  gradient_accumulation_steps: 1
  warmup_steps: 0
  learning_rate: 3.0e-3
  lr_scheduler_type: constant
  max_length: 4096
  activation_checkpointing: false
  save_steps: 100
  ores:
    eval_split: 0.0
    name: tiny-sft
"""

RECIPE = """
rl:
  num_generations: 2
  per_device_train_batch_size: 4
  learning_rate: 1.0e-3
  save_steps: 1
  temperature: 1.0
  ores:
    search: local:mini
    crawl: local
    reward_weights: [0.0, 0.5, 0.5]
    budget: {max_tool_calls: 2, max_turns: 3, max_new_tokens: 400, max_turn_tokens: 200, max_seconds: 120}
"""


@pytest.fixture(scope="module")
def tiny(corpus_root: Path) -> Path:
    skip_without_local_stack()
    qwen2_style(corpus_root / "tiny-qwen2")
    traces_file(corpus_root / "traces.jsonl", n_good=8, broken=False)
    (corpus_root / "sft.yaml").write_text(SFT_RECIPE)
    (corpus_root / "recipe.yaml").write_text(RECIPE)
    done = ores(
        "sft", "traces.jsonl", "--recipe", "sft.yaml", "--model", "tiny-qwen2", "--max-steps", "60", "--ws", "ws",
        cwd=corpus_root, timeout=300, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return corpus_root


def rl(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return ores(
        "rl", "questions.jsonl", "--recipe", "recipe.yaml", "--from", "tiny-sft", "--ws", "ws",
        *args, cwd=root, timeout=500, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip


def sql(root: Path, query: str) -> list[dict[str, Any]]:
    done = ores("ws", "sql", query, "--json", "--ws", "ws", cwd=root)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_grpo_trains_two_steps_on_real_rollouts(tiny: Path) -> None:
    done = rl(tiny, "--max-steps", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = sql(tiny, "select * from models_all where method = 'grpo-full'")
    assert row["steps"] == 2 and row["rollouts"] == 8  # 2 steps x 2 questions x 2 generations
    curve = json.loads(row["reward_curve"])
    assert [step for step, _ in curve] == [1, 2]
    for _, components in curve:
        assert components["tool"] is not None and components["format"] is not None
    assert all(kl is not None for _, kl in json.loads(row["kl_curve"]))
    assert (tiny / "ws" / row["path"] / "config.json").is_file()

    # The rewards TRL logged are the reward functions applied to the rollouts stored.
    rollouts = sql(tiny, "select * from rollouts order by id")
    assert len(rollouts) == 8 and {r["seed_id"] for r in rollouts} == {"q-photo", "q-calvin"}
    assert any(r["reward_format"] > 0 for r in rollouts)  # else the comparison below says little
    for r in rollouts:
        assert r["reward_tool"] == tool_reward([r["trace"]], [r["n_tool_calls"]])[0]
        assert r["reward_format"] == format_reward([r["trace"]])[0]
        assert r["reward_base"] is None  # weight 0: no judge, recorded as missing
    logged = sql(
        tiny,
        'select step, "rewards/format/mean" as fmt from train_log where "rewards/format/mean" is not null order by step',
    )
    for entry in logged:
        step_rewards = [r["reward_format"] for r in rollouts if r["step"] == entry["step"] - 1]
        assert entry["fmt"] == pytest.approx(sum(step_rewards) / len(step_rewards), abs=1e-6)

    again = rl(tiny, "--max-steps", "2")
    assert again.returncode == 0 and "already trained" in again.stderr


def test_a_time_budget_stops_training_and_saves_the_model(tiny: Path) -> None:
    done = rl(tiny, "--max-steps", "50", "--max-train-seconds", "1", "--name", "budget")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stopped at step 1 of 50: the 1 s training budget was spent; rerun to resume" in done.stderr
    (row,) = sql(tiny, "select * from models_all where id = 'budget'")
    assert row["steps"] == 1 and (tiny / "ws" / row["path"] / "config.json").is_file()
    # Paused, not done: the same command goes on from the checkpoint saved at the stop.
    again = rl(tiny, "--max-steps", "50", "--max-train-seconds", "1", "--name", "budget")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from checkpoint-1" in again.stderr and "stopped at step 2 of 50" in again.stderr


# Raises what R_base raises when its endpoint fails for a whole batch, from the second batch on
# while `judge-down` exists: a judge that goes away mid-run.
DYING_REWARD = """
from pathlib import Path
from oresearch_cli.train.rewards import JudgeUnreachable

def judge_goes_down(trace_text, **kwargs):
    calls = Path("judge-calls")
    calls.write_text(calls.read_text() + "x" if calls.exists() else "x")
    if Path("judge-down").exists() and len(calls.read_text()) > 1:
        raise JudgeUnreachable("the judge gave no score for any report of this batch (endpoint: refused); "
                               "start the judge's endpoint or fix --judge-config, then rerun")
    return [0.0] * len(trace_text)
"""


def test_a_judge_that_goes_away_mid_run_stops_it_in_one_line_and_a_rerun_resumes(tiny: Path) -> None:
    (tiny / "dying.py").write_text(DYING_REWARD)
    (tiny / "judge-down").write_text("")
    args = ("--max-steps", "2", "--reward-func", "dying.py:judge_goes_down", "--name", "judge-down")
    done = rl(tiny, *args)
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert "the judge gave no score for any report of this batch" in line and "Traceback" not in done.stderr
    folder = tiny / "ws" / "models" / "judge-down"
    assert json.loads((folder / "ores-run.json").read_text())["status"] == "running"
    assert (folder / "checkpoints" / "checkpoint-1" / "trainer_state.json").is_file()  # step 1 kept

    (tiny / "judge-down").unlink()  # the judge is back
    again = rl(tiny, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from checkpoint-1" in again.stderr
    (row,) = sql(tiny, "select * from models_all where id = 'judge-down'")
    assert row["steps"] == 2 and row["resumed_from"] == "checkpoint-1"


def test_a_missing_judge_is_refused_before_any_rollout(tiny: Path) -> None:
    done = rl(tiny, "--max-steps", "1", "--reward-weights", "0.6,0.2,0.2", "--name", "with-judge")
    assert done.returncode == 2
    assert "R_base needs a judge" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tiny / "ws" / "models" / "with-judge").exists()


@pytest.mark.parametrize(
    "weights,message",
    [("0.6,0.2", "3"), ("a,b,c", "number"), ("0,0,0", "all weights are 0"), ("-1,1,1", "negative")],
)
def test_bad_reward_weights_are_one_line(tiny: Path, weights: str, message: str) -> None:
    done = rl(tiny, "--reward-weights", weights, "--dry-run")
    assert done.returncode == 2 and message in done.stderr.lower(), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# -- R_base through a real model ------------------------------------------------------------------


def test_base_reward_scores_a_report_through_a_served_judge(
    judge_server: tuple[str, str], tmp_path: Path
) -> None:
    """The judge role's client, opened on the reward's own loop as in TRL, against `ores serve` of
    a tiny model trained to answer the judge's prompt: the reward is its overall score / 10, and a
    second scoring comes from the workspace's judge cache without a call."""
    from oresearch_cli.filtering.config import JudgeSettings
    from oresearch_cli.filtering.judge import JudgeCache
    from oresearch_cli.llm import LLMClient, load_config
    from oresearch_cli.train.rewards import BaseReward

    from judge_model_support import JUDGE_MAX_CHARS, JUDGE_SCORES

    base_url, model_name = judge_server
    config = load_config(
        None,
        {"judge.base_url": base_url, "judge.model": model_name, "judge.api_key_env": "",
         "judge.temperature": 0.0, "judge.max_tokens": 200, "judge.max_attempts": 1},
        require=["judge"],
    )  # fmt: skip
    traces = traces_file(tmp_path / "t.jsonl", n_good=1, broken=False)
    row = json.loads(traces.read_text().splitlines()[0])
    ws = Workspace.open(tmp_path / "ws")
    cache = JudgeCache.for_workspace(ws)

    async def open_client() -> LLMClient:
        return await LLMClient(config).__aenter__()

    reward = BaseReward(open_client, cache, JudgeSettings(max_chars=JUDGE_MAX_CHARS, concurrency=1))

    async def score_twice() -> tuple[list[float | None], list[float | None]]:
        try:
            kwargs = {"prompts": [], "completions": [], "question": [row["question"]] * 2}
            first = await reward(trace_text=[row["trace"], "<think>no report</think>"], **kwargs)
            again = await reward(trace_text=[row["trace"], "<think>no report</think>"], **kwargs)
            return first, again
        finally:
            await reward.aclose()
            cache.close()

    first, again = asyncio.run(score_twice())
    expected = sum(s["score"] for s in JUDGE_SCORES.values()) / len(JUDGE_SCORES) / 10
    assert first[0] == pytest.approx(expected, abs=0.001) and first[1] == 0.0  # no report: 0, no call
    assert again == first and reward.calls == 1 and reward.cached == 1 and reward.failed == 0


# Slow tier (~35 s): the RACE-style comparison is also covered through the tiny judge above; this
# one shows the embedded model writing schema-held scores for both reports.
@pytest.mark.slow
def test_race_reward_compares_with_the_reference_through_the_embedded_model(
    embedded_server: tuple[str, str], tmp_path: Path
) -> None:
    """R_base for a question with a reference report: the embedded SmolLM2, served with the
    schema enforced while decoding, scores both reports on the four dimensions; the reward is
    the report's share T / (T + R), and the same pair again comes from the judge cache."""
    from oresearch_cli.filtering.config import JudgeSettings
    from oresearch_cli.filtering.judge import JudgeCache
    from oresearch_cli.llm import LLMClient, load_config
    from oresearch_cli.train.rewards import BaseReward

    base_url, model_name = embedded_server
    config = load_config(
        None,
        {"judge.base_url": base_url, "judge.model": model_name, "judge.api_key_env": "",
         "judge.temperature": 0.0, "judge.max_tokens": 200, "judge.json_mode": "json_schema"},
        require=["judge"],
    )  # fmt: skip
    row = json.loads(traces_file(tmp_path / "t.jsonl", n_good=1, broken=False).read_text().splitlines()[0])
    reference = (
        "## Introduction\nA short overview of the topic with one claim [1].\n\n"
        "## Conclusion\nThe topic matters.\n\n## References\n[1] http://example.org/ref\n"
    )
    cache = JudgeCache.for_workspace(Workspace.open(tmp_path / "ws"))

    async def open_client() -> LLMClient:
        return await LLMClient(config).__aenter__()

    reward = BaseReward(open_client, cache, JudgeSettings(max_chars=6000, concurrency=1, max_attempts=2))

    async def score_twice() -> tuple[list[float | None], list[float | None]]:
        kwargs = {"prompts": [], "completions": [], "question": [row["question"]], "reference": [reference]}
        try:
            return await reward(trace_text=[row["trace"]], **kwargs), await reward(
                trace_text=[row["trace"]], **kwargs
            )
        finally:
            await reward.aclose()
            cache.close()

    first, again = asyncio.run(score_twice())
    assert reward.failed == 0 and first[0] is not None and 0.0 <= first[0] <= 1.0, first
    assert again == first and reward.cached == 1 and 1 <= reward.calls <= 2


# -- where rollouts are generated, and the GPU recipes ----------------------------------------------


def _plan(tmp_path: Path, vllm_model: str | None = None) -> Any:
    from oresearch_cli.train.rl import RlPlan
    from oresearch_cli.train.rl_settings import ResolvedRl, RlSettings

    return RlPlan(
        ResolvedRl({}, RlSettings(vllm_model=vllm_model)), "models/policy", tmp_path, {}, "h", "recipe.yaml"
    )


def _args(**kw: Any) -> Any:
    from types import SimpleNamespace

    base = {"use_vllm": False, "vllm_mode": "server", "vllm_server_base_url": None, "vllm_server_host": "0.0.0.0",
            "vllm_server_port": 8000, "deepspeed_plugin": None, "vllm_tensor_parallel_size": 1,
            "vllm_enable_sleep_mode": False}  # fmt: skip
    return SimpleNamespace(**(base | kw))


def test_rollouts_run_in_process_or_on_the_vllm_server(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from oresearch_cli.agent.generators import ChatTokenizer, EndpointGenerator
    from oresearch_cli.train.rl import rollout_generator

    assert rollout_generator(_args(), _plan(tmp_path)) is None  # the in-process engine
    # ZeRO-3 too: gathered or in lockstep (tests/test_train_zero3_rl.py)
    assert rollout_generator(_args(deepspeed_plugin=SimpleNamespace(zero_stage=3)), _plan(tmp_path)) is None
    # colocate: the LLM TRL keeps on each rank (tests/test_rl_colocated.py runs it)
    assert rollout_generator(_args(use_vllm=True, vllm_mode="colocate"), _plan(tmp_path)) is not None
    with pytest.raises(
        ConfigError, match=r"vllm_tensor_parallel_size 2 in colocate mode: .*use vllm_mode: server"
    ):
        rollout_generator(
            _args(use_vllm=True, vllm_mode="colocate", vllm_tensor_parallel_size=2), _plan(tmp_path)
        )
    with pytest.raises(ConfigError, match="vllm_enable_sleep_mode: .* turn it off"):
        rollout_generator(
            _args(use_vllm=True, vllm_mode="colocate", vllm_enable_sleep_mode=True), _plan(tmp_path)
        )
    with pytest.raises(ConfigError, match="rl.vllm_mode 'remote': use vllm_mode server"):
        rollout_generator(_args(use_vllm=True, vllm_mode="remote"), _plan(tmp_path))
    factory = rollout_generator(
        _args(use_vllm=True, vllm_server_base_url="http://gpu-node:8000/"), _plan(tmp_path)
    )
    assert factory is not None
    from test_single_loop import ToyTokenizer

    gen = factory(None, ToyTokenizer(), 8)
    assert isinstance(gen, EndpointGenerator) and isinstance(gen.tokenizer, ChatTokenizer)
    assert (gen.base_url, gen.model, gen.token_logprobs) == ("http://gpu-node:8000/v1", "models/policy", True)
    named = rollout_generator(_args(use_vllm=True, vllm_server_port=9000), _plan(tmp_path, "qwen-sft"))
    assert named is not None and (named(None, ToyTokenizer(), 1).base_url, named(None, ToyTokenizer(), 1).model) == (
        "http://0.0.0.0:9000/v1", "qwen-sft")  # fmt: skip


GPU_LAUNCHES = [
    ("qwen2.5-7b", (), "--config_file recipes/accelerate/zero3.yaml --num_processes 6 --num_machines 1 --machine_rank 0"),
    ("qwen2.5-72b", ("--machine-rank", "2", "--main-process-ip", "10.0.0.1"),
     "--config_file recipes/accelerate/multi-node.yaml --num_processes 32 --num_machines 4 --machine_rank 2 "
     "--main_process_ip 10.0.0.1 --main_process_port 29500"),
]  # fmt: skip


def test_gpu_recipes_build_their_launch_commands(tmp_path: Path) -> None:
    from conftest import REPO, ores_forked

    runs = ores_forked(
        *(("rl", "--recipe", f"recipes/rl/{recipe}.yaml", "--dry-run", "--ws", str(tmp_path / "ws"), *extra)
          for recipe, extra, _ in GPU_LAUNCHES),
        cwd=REPO,
    )  # fmt: skip
    for done, (recipe, _, expected) in zip(runs, GPU_LAUNCHES, strict=True):
        assert done.returncode == 0, done.stderr
        command = done.stdout.strip()
        assert (
            f"-m accelerate.commands.launch {expected} -m oresearch_cli rl --recipe recipes/rl/{recipe}.yaml"
            in command
        )
        assert "--dry-run" not in command
