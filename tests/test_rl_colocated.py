"""Rollouts on TRL's colocated vLLM engine (`ColocatedVllmGenerator`), without vLLM.

vLLM's wheels are CUDA-only and cannot run here, so a stand-in `vllm` module (its
`SamplingParams` records what it was given) and a stand-in `vllm.LLM` (its `generate` plays the
scripted turns of tests/test_single_loop.py and answers in vLLM's `RequestOutput` shape) check
what ores builds and reads: the sampling settings of each turn, the ids, log probs and stop
strings read back, turns of concurrent rollouts batched into one `generate` call, and a whole
rollout through `PolicyRollouts` with the factory `ores rl` uses in colocate mode.
"""

from __future__ import annotations

import asyncio
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from oresearch_cli.agent.generators import ChatTokenizer, SamplingParams
from oresearch_cli.tools import open_toolbox
from oresearch_cli.train.colocated import ColocatedVllmGenerator, generation_of, vllm_sampling_kwargs
from oresearch_cli.train.rl_settings import RolloutBudget
from oresearch_cli.train.rollouts import PolicyRollouts, PromptInfo, RolloutBook
from oresearch_cli.workspace import Workspace
from test_single_loop import QUESTION, TURN_CRAWL, TURN_REPORT, TURN_SEARCH, ScriptedModel, corpus_ws  # noqa: F401

STOPS = ("</web_search>", "</crawl_page>")


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A `vllm` module whose SamplingParams keeps its keyword arguments."""
    module = ModuleType("vllm")

    class SamplingParams:  # noqa: D101 - vLLM's name
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    module.SamplingParams = SamplingParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def request_output(
    token_ids: Sequence[int], text: str, finish: str, stop: Any, logprobs: Sequence[float]
) -> Any:
    """vLLM's RequestOutput with one CompletionOutput (`logprobs=0`: the sampled token's own)."""
    steps = [{t: SimpleNamespace(logprob=lp, rank=1)} for t, lp in zip(token_ids, logprobs, strict=True)]
    completion = SimpleNamespace(
        index=0, text=text, token_ids=list(token_ids), logprobs=steps, finish_reason=finish, stop_reason=stop
    )
    return SimpleNamespace(prompt_token_ids=[], outputs=[completion])


class ScriptedLLM:
    """Stands in for `vllm.LLM`: `generate(prompts, sampling_params=..., use_tqdm=...)`, synchronous,
    one output per prompt in order, each the next scripted turn (decoded, cut at a stop string as
    vLLM does). Records each call's prompts and sampling kwargs, and the thread it ran on."""

    def __init__(self, turns: Sequence[str]) -> None:
        self.scripted = ScriptedModel(turns)
        self.calls: list[list[dict[str, Any]]] = []
        self.threads: list[threading.Thread] = []
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=4096))

    def generate(
        self, prompts: list[dict[str, Any]], sampling_params: list[Any], use_tqdm: bool
    ) -> list[Any]:
        assert use_tqdm is False and len(prompts) == len(sampling_params)
        self.threads.append(threading.current_thread())
        self.calls.append(
            [
                {"prompt_token_ids": p["prompt_token_ids"], **s.kwargs}
                for p, s in zip(prompts, sampling_params, strict=True)
            ]
        )
        outputs = []
        for prompt, sampling in zip(prompts, sampling_params, strict=True):
            kw = sampling.kwargs
            params = SamplingParams(max_tokens=kw["max_tokens"], temperature=kw["temperature"], top_p=kw["top_p"],
                                    stop=tuple(kw.get("stop", ())), seed=kw.get("seed"))  # fmt: skip
            made = asyncio.run(self.scripted.generate(prompt["prompt_token_ids"], params))
            finish = "length" if made.finish_reason == "length" else "stop"
            outputs.append(
                request_output(made.token_ids or (), made.text, finish, made.stop, made.logprobs or ())
            )
        return outputs


def test_the_sampling_settings_of_a_turn() -> None:
    params = SamplingParams(max_tokens=700, temperature=0.7, top_p=0.9, seed=11, stop=STOPS)
    assert vllm_sampling_kwargs(params) == {
        "max_tokens": 700, "temperature": 0.7, "top_p": 0.9, "logprobs": 0, "stop": list(STOPS), "seed": 11,
    }  # fmt: skip
    assert vllm_sampling_kwargs(SamplingParams(max_tokens=5)) == {
        "max_tokens": 5, "temperature": 1.0, "top_p": 1.0, "logprobs": 0,
    }  # fmt: skip


def test_a_request_output_reads_as_a_generation() -> None:
    stopped = generation_of(
        request_output([5, 6, 7], "<web_search>x", "stop", "</web_search>", [-0.1, -0.2, -0.3]), STOPS
    )
    assert (stopped.text, stopped.finish_reason, stopped.stop) == ("<web_search>x", "stop", "</web_search>")
    assert stopped.token_ids == (5, 6, 7) and stopped.logprobs == (-0.1, -0.2, -0.3)
    at_eos = generation_of(request_output([5], "done", "stop", None, [-0.5]), STOPS)
    assert (at_eos.finish_reason, at_eos.stop) == ("stop", None)  # the end-of-turn token
    at_stop_id = generation_of(request_output([5], "done", "stop", 151645, [-0.5]), STOPS)
    assert at_stop_id.stop is None  # a stop token id is not one of the protocol's stop strings
    cut = generation_of(request_output([5, 6], "abc", "length", None, [-0.1, -0.2]), STOPS)
    assert cut.finish_reason == "length"
    # log probs of other tokens than the sampled ones are not the policy's: none rather than wrong
    odd = request_output([5], "a", "stop", None, [-0.1])
    odd.outputs[0].logprobs = [{9: SimpleNamespace(logprob=-2.0)}]
    assert generation_of(odd, STOPS).logprobs is None


def test_concurrent_turns_share_one_generate_call_off_the_event_loop(fake_vllm: ModuleType) -> None:
    llm = ScriptedLLM([TURN_SEARCH, TURN_SEARCH, TURN_SEARCH, TURN_REPORT])
    generator = ColocatedVllmGenerator(llm, ChatTokenizer(llm.scripted.tokenizer.tokenizer, name="toy"))
    params = SamplingParams(max_tokens=400, temperature=0.7, stop=STOPS, seed=3)

    async def main() -> list[Any]:
        ids = generator.encode("question")
        together = await asyncio.gather(*(generator.generate(ids, params) for _ in range(3)))
        later = await generator.generate(ids + list(together[0].token_ids or ()), params)
        await generator.aclose()
        return [*together, later]

    results = asyncio.run(main())
    assert generator.calls == 2 and [len(c) for c in llm.calls] == [3, 1]
    assert all(t is not threading.main_thread() for t in llm.threads)  # tools keep the loop meanwhile
    assert llm.calls[0][0] | {"prompt_token_ids": None} == {
        "prompt_token_ids": None, "max_tokens": 400, "temperature": 0.7, "top_p": 1.0, "logprobs": 0,
        "stop": list(STOPS), "seed": 3,
    }  # fmt: skip
    assert [r.stop for r in results[:3]] == ["</web_search>"] * 3
    assert results[3].stop is None and "<suggested_answer>" in results[3].text


def test_an_engine_failure_fails_every_turn_of_its_batch(fake_vllm: ModuleType) -> None:
    class Broken:
        def generate(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("CUDA out of memory")

    tokenizer = ScriptedModel([]).tokenizer
    generator = ColocatedVllmGenerator(Broken(), tokenizer)

    async def main() -> list[Any]:
        ids = generator.encode("q")
        return await asyncio.gather(*(generator.generate(ids, SamplingParams(max_tokens=5)) for _ in range(2)),
                                    return_exceptions=True)  # fmt: skip

    assert [str(e) for e in asyncio.run(main())] == ["CUDA out of memory"] * 2


class _Trainer:
    """What the rollout function and the colocate factory read of a GRPOTrainer."""

    def __init__(self, llm: ScriptedLLM) -> None:
        self.state = SimpleNamespace(global_step=0)
        self.accelerator = SimpleNamespace(unwrap_model=lambda m: m, num_processes=1, process_index=0)
        self.model = SimpleNamespace(training=True, eval=lambda: None, train=lambda mode=True: None)
        self.processing_class = llm.scripted.tokenizer.tokenizer
        self.vllm_generation = SimpleNamespace(llm=llm)


def test_a_rollout_runs_on_the_colocated_engine_with_real_tools(
    fake_vllm: ModuleType,
    corpus_ws: Workspace,  # noqa: F811
    tmp_path: Path,
) -> None:
    from oresearch_cli.train.rl import RlPlan, rollout_generator
    from oresearch_cli.train.rl_settings import ResolvedRl, RlSettings

    args = SimpleNamespace(
        use_vllm=True, vllm_mode="colocate", vllm_tensor_parallel_size=1, vllm_enable_sleep_mode=False
    )
    plan = RlPlan(ResolvedRl({}, RlSettings()), "models/policy", tmp_path, {}, "h", "recipe.yaml")
    llm = ScriptedLLM([TURN_SEARCH, TURN_CRAWL, TURN_REPORT])
    rollouts = PolicyRollouts(
        open_tools=lambda: open_toolbox(corpus_ws, search="local:mini", crawl="local", cache=False),
        prompts={QUESTION: PromptInfo("q-photo", QUESTION, "en")},
        budget=RolloutBudget(max_tool_calls=4, max_new_tokens=4096, max_turn_tokens=2048),
        book=RolloutBook(None, ["format"]),
        make_generator=rollout_generator(args, plan),
    )
    out = rollouts([[{"role": "user", "content": QUESTION}]], _Trainer(llm))
    (text,), (ids,), (mask,), (logprobs,) = (
        out["trace_text"],
        out["completion_ids"],
        out["env_mask"],
        out["logprobs"],
    )
    assert len(llm.calls) == 3 and out["n_tool_calls"] == [2]
    assert "<suggested_answer>" in text and len(re.findall(r"<observation>", text)) == 2
    # the model's tokens carry vLLM's log probs (but where the loop re-encoded a turn's end); the
    # observations' tokens are the environment's: masked, without any
    model_logprobs = [lp for lp, m in zip(logprobs, mask, strict=True) if m == 1]
    assert sum(lp is not None for lp in model_logprobs) > 0.9 * len(model_logprobs)
    assert all(lp is None for lp, m in zip(logprobs, mask, strict=True) if m == 0) and 0 in mask
    assert len(ids) == len(mask)
