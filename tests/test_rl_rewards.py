"""The GRPO rewards of `ores rl`: format from the validator, tool-use bounds and quality, the judge's
report score (through a scripted client), the weights flag and custom reward functions."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from oresearch_cli.errors import ConfigError
from oresearch_cli.filtering.config import JudgeSettings
from oresearch_cli.filtering.judge import CRITERIA, JudgeCache
from oresearch_cli.llm import ChatResult, LLMError, MalformedOutput, Usage
from oresearch_cli.scoring.race import (
    DIMENSIONS,
    RaceOutputError,
    check_pair_scores,
    clean_article,
    relative_score,
)
from oresearch_cli.trace import Problem, parse, validate
from oresearch_cli.train.rewards import (
    MAX_TOOL_CALLS,
    MIN_TOOL_CALLS,
    REWARD_NAMES,
    BaseReward,
    JudgeUnreachable,
    format_reward,
    format_score,
    load_reward_function,
    parse_reward_weights,
    tool_reward,
    tool_score,
)

EXAMPLE = (Path(__file__).parent / "fixtures" / "trace_example.txt").read_text(encoding="utf-8")
REPORT = EXAMPLE.index("<suggested_answer>")
TRL_EXTRAS: dict[str, Any] = {
    "prompts": ["p"],
    "completions": ["lossy decoding, not the trace"],
    "completion_ids": [[1, 2]],
    "trainer_state": None,
    "log_extra": lambda column, values: None,
    "some_dataset_column": ["x"],
}


def cut(text: str, tag: str) -> str:
    begin = text.index(f"<{tag}>")
    end = text.index(f"</{tag}>", begin) + len(f"</{tag}>")
    return text[:begin] + text[end:]


def url(slug: str) -> str:
    return f"https://example.org/{slug}"


def build_trace(calls: list[tuple[str, str]], cite: list[str]) -> str:
    """A trace in the protocol with one subtask making `calls` (("search", query) or ("crawl", url));
    a search's observation shows the page of its query's slug; the report cites `cite`."""
    steps = []
    for kind, arg in calls:
        steps.append("<think>\nNext I look this up.\n</think>")
        if kind == "search":
            slug = "-".join(arg.split())
            steps.append(f"<web_search>{arg}&serp_num=3</web_search>")
            steps.append(f"<observation>\n1. [{arg}]({url(slug)})\nA snippet.\n</observation>")
        else:
            steps.append(f"<crawl_page>{arg}</crawl_page>")
            steps.append("<observation>\nThe page text.\n</observation>")
    refs = "\n".join(f"[{n}]. {u} - Source {n}" for n, u in enumerate(cite, start=1))
    marks = "".join(f"[{n}]" for n in range(1, len(cite) + 1))
    return "\n".join(
        [
            "<subtask_list>\n1. What is known?\n</subtask_list>",
            "<subtask>\nWhat is known?\n</subtask>",
            *steps,
            f"<subtask_answer>\nIt is known {marks}.\n</subtask_answer>",
            "<suggested_answer>\n## Introduction\nAn answer.\n\n## Body\nDetails "
            f"{marks}.\n\n## Conclusion\nDone.\n\n## References\n{refs}\n</suggested_answer>",
        ]
    )


def searches(n: int) -> list[tuple[str, str]]:
    return [("search", f"topic number {i}") for i in range(n)]


# -- format -------------------------------------------------------------------------------------------


def test_format_is_one_for_the_valid_example_and_falls_as_the_trace_breaks() -> None:
    assert validate(EXAMPLE) == []
    broken = [
        EXAMPLE,
        EXAMPLE[:REPORT],  # no report
        cut(EXAMPLE[:REPORT], "think"),  # and a tool call without its think
        cut(EXAMPLE[:REPORT], "think").replace("</plan>", "", 1),  # and an unclosed tag
    ]
    scores = format_reward(broken, **TRL_EXTRAS)
    assert scores[0] == 1.0
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), scores
    assert all(0.0 <= s <= 1.0 for s in scores)
    # each break is seen on its own too, and the reward equals the pure score of the validator's problems
    for text in (EXAMPLE[:REPORT], cut(EXAMPLE, "think"), EXAMPLE.replace("</think>", "", 1)):
        assert format_reward([text])[0] == format_score(validate(text)) < 1.0


def test_format_score_counts_distinct_codes_and_errors_outweigh_warnings() -> None:
    error = Problem("missing-report", "error", "no report")
    other = Problem("unclosed-tag", "error", "open")
    warning = Problem("empty-step", "warning", "empty")
    assert format_score([]) == 1.0
    assert format_score([error, error, error]) == format_score([error])  # occurrences are not codes
    assert format_score([error, other]) < format_score([error]) < format_score([warning]) < 1.0
    assert format_score([warning, error]) < format_score([error])
    many = [Problem(f"code-{i}", "error", "x") for i in range(50)]
    assert format_score(many) == 0.0


def test_format_of_text_without_any_tag_is_zero() -> None:
    assert format_reward(["Just an essay about photosynthesis, no tags at all."]) == [0.0]


# -- tool ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expect"),
    [
        (MIN_TOOL_CALLS - 1, "zero"),
        (MIN_TOOL_CALLS, "in"),
        (MAX_TOOL_CALLS, "in"),
        (MAX_TOOL_CALLS + 1, "neg"),
    ],
)
def test_tool_reward_bounds_on_the_calls_counted_in_the_trace(n: int, expect: str) -> None:
    calls = searches(n)
    text = build_trace(calls, [url("-".join(q.split())) for _, q in calls])
    assert len(parse(text).tool_calls) == n
    [score] = tool_reward([text], **TRL_EXTRAS)
    if expect == "zero":
        assert score == 0.0
    elif expect == "neg":
        assert score == -1.0
    else:
        assert 0.0 < score <= 1.0


def test_tool_reward_takes_the_environments_count_when_given() -> None:
    text = build_trace(searches(3), [url("topic-number-0")])
    in_bounds = tool_reward([text])[0]
    assert 0.0 < in_bounds <= 1.0
    assert tool_reward([text] * 3, n_tool_calls=[1, MAX_TOOL_CALLS + 1, 3]) == [0.0, -1.0, in_bounds]
    assert tool_reward([text], n_tool_calls=[None]) == [in_bounds]  # no count for that sample: parse


def test_repeated_queries_score_lower_than_distinct_ones() -> None:
    cite = [url("topic-number-0"), url("topic-number-1")]  # the same report: only the calls differ
    distinct = build_trace([("search", "topic number 0"), ("search", "topic number 1")], cite)
    repeated = build_trace([("search", "topic number 0"), ("search", "topic number 0")], cite)
    d, r = tool_reward([distinct, repeated])
    assert 0.0 < r < d


def test_cited_pages_score_higher_than_pages_fetched_and_never_used() -> None:
    calls = [("search", "topic number 0"), ("crawl", url("deep-page"))]
    used = build_trace(calls, [url("topic-number-0"), url("deep-page")])
    unused = build_trace(calls, [url("topic-number-0"), url("never-fetched")])
    nothing_cited = build_trace(calls, [url("never-fetched")])
    u, n, z = tool_reward([used, unused, nothing_cited])
    assert u > n > z > 0.0  # the floor keeps any in-bounds rollout above too few calls
    assert tool_score(parse(EXAMPLE), len(parse(EXAMPLE).tool_calls)) >= u  # distinct and all cited


def test_a_rollout_without_report_still_gets_a_positive_in_bounds_tool_score() -> None:
    text = build_trace(searches(2), [])
    no_report = text[: text.index("<suggested_answer>")]
    assert (
        0.0
        < tool_reward([no_report])[0]
        < tool_reward([build_trace(searches(2), [url("topic-number-0")])])[0]
    )


# -- base (the judge) ---------------------------------------------------------------------------------


def scores_json(values: dict[str, int]) -> str:
    return json.dumps({c: {"score": values[c], "reason": f"{c} judged"} for c in CRITERIA})


class ScriptedJudge:
    """Stands in for `LLMClient` where `judge_all` uses it: `config.role(...).model`, `chat_json`, `aclose`."""

    def __init__(self, reply: Callable[[list[dict[str, str]]], str]) -> None:
        self.config = SimpleNamespace(role=lambda name: SimpleNamespace(model="scripted-judge"))
        self.reply = reply
        self.requests: list[list[dict[str, str]]] = []
        self.closed = False

    async def chat_json(
        self, role: str, messages: list[dict[str, str]], schema: Any, **kw: Any
    ) -> ChatResult:
        assert role == "judge"
        self.requests.append(messages)
        text = self.reply(messages)
        result = ChatResult(text, "stop", Usage(), 0.0, None, "scripted-judge", "http://judge", 1, role=role)
        try:
            data = json.loads(text)
        except ValueError:
            raise MalformedOutput("not JSON", raw=text, result=result, reason="no JSON object") from None
        return ChatResult(
            text, "stop", Usage(), 0.0, None, "scripted-judge", "http://judge", 1, role=role, data=data
        )

    async def aclose(self) -> None:
        self.closed = True


class Opener:
    """The lazy `open_client` factory: counts opens and the loop each ran on."""

    def __init__(self, client: ScriptedJudge) -> None:
        self.client = client
        self.loops: list[asyncio.AbstractEventLoop] = []

    async def __call__(self) -> Any:
        self.loops.append(asyncio.get_running_loop())
        return self.client


def call(reward: BaseReward, texts: list[str], **extra: Any) -> list[float | None]:
    return asyncio.run(
        reward(
            prompts=["p"] * len(texts),
            completions=["c"] * len(texts),
            trace_text=texts,
            question=["How does photosynthesis work?"] * len(texts),
            **extra,
        )
    )


@pytest.fixture
def cache(tmp_path: Path):
    cache = JudgeCache(tmp_path / "judge.sqlite")
    yield cache
    cache.close()


VALUES = {c: 3 + i for i, c in enumerate(CRITERIA)}


def test_base_reward_is_the_judges_overall_over_ten(cache: JudgeCache) -> None:
    judge = ScriptedJudge(lambda messages: scores_json(VALUES))
    opener = Opener(judge)
    reward = BaseReward(opener, cache)
    assert reward.__name__ == "base" and inspect.iscoroutinefunction(reward.__call__)
    assert opener.loops == []  # nothing opened before the first call
    metrics: list[tuple[str, float]] = []
    [score] = call(reward, [EXAMPLE], log_metric=lambda name, value: metrics.append((name, value)))
    assert score == pytest.approx(sum(VALUES.values()) / len(VALUES) / 10)
    assert "## Report" in judge.requests[0][-1]["content"]
    assert (reward.calls, reward.cached, reward.failed) == (1, 0, 0)
    assert metrics == [("base/judge_failed", 0.0)]


def test_malformed_judge_answers_give_none_and_count_a_failure(cache: JudgeCache) -> None:
    judge = ScriptedJudge(lambda messages: "I liked it, maybe a seven.")
    settings = JudgeSettings(max_attempts=3)
    reward = BaseReward(Opener(judge), cache, settings)
    assert call(reward, [EXAMPLE]) == [None]
    assert reward.failed == 1 and reward.calls == len(judge.requests) == settings.max_attempts
    # not cached: the next step asks again
    assert call(reward, [EXAMPLE]) == [None] and reward.failed == 2 and reward.cached == 0


def test_no_report_scores_zero_without_a_judge_call(cache: JudgeCache) -> None:
    judge = ScriptedJudge(lambda messages: pytest.fail("the judge must not be asked"))
    opener = Opener(judge)
    reward = BaseReward(opener, cache)
    empty_report = EXAMPLE[:REPORT] + "<suggested_answer>\n \n</suggested_answer>\n"
    assert call(reward, [EXAMPLE[:REPORT], empty_report]) == [0.0, 0.0]
    assert judge.requests == [] and opener.loops == [] and reward.failed == 0


def test_mixed_batch_keeps_each_sample_in_its_place(cache: JudgeCache) -> None:
    def reply(messages: list[dict[str, str]]) -> str:
        return "nonsense" if "Calvin" not in messages[-1]["content"] else scores_json(VALUES)

    other = EXAMPLE.replace("Calvin", "Krebs")
    reward = BaseReward(Opener(ScriptedJudge(reply)), cache, JudgeSettings(max_attempts=1))
    scores = call(reward, [other, EXAMPLE[:REPORT], EXAMPLE])
    assert scores[0] is None and scores[1] == 0.0
    assert scores[2] == pytest.approx(sum(VALUES.values()) / len(VALUES) / 10)
    assert reward.failed == 1


def test_a_cached_judgement_makes_no_call(cache: JudgeCache) -> None:
    first = BaseReward(Opener(ScriptedJudge(lambda messages: scores_json(VALUES))), cache)
    [scored] = call(first, [EXAMPLE])
    silent = ScriptedJudge(lambda messages: pytest.fail("a cached trace must not be judged again"))
    again = BaseReward(Opener(silent), cache)
    assert call(again, [EXAMPLE]) == [scored]
    assert silent.requests == [] and (again.calls, again.cached, again.failed) == (0, 1, 0)


def test_client_opens_once_on_the_callers_loop_and_closes_there(cache: JudgeCache) -> None:
    """As under TRL: the reward runs on an event loop in another thread, twice."""
    judge = ScriptedJudge(lambda messages: scores_json(VALUES))
    opener = Opener(judge)
    reward = BaseReward(opener, cache)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        for _ in range(2):
            coro = reward(prompts=["p"], completions=["c"], trace_text=[EXAMPLE], question=["q"])
            assert asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)[0] is not None
        assert opener.loops == [loop]
        asyncio.run_coroutine_threadsafe(reward.aclose(), loop).result(timeout=30)
        assert judge.closed
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def test_a_failing_open_is_retried_on_the_next_call(cache: JudgeCache) -> None:
    judge = ScriptedJudge(lambda messages: scores_json(VALUES))
    attempts: list[int] = []

    async def open_client() -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("endpoint not up yet")
        return judge

    reward = BaseReward(open_client, cache)
    with pytest.raises(OSError):
        call(reward, [EXAMPLE])
    assert call(reward, [EXAMPLE])[0] is not None and len(attempts) == 2


# -- weights ------------------------------------------------------------------------------------------


def test_reward_weights_parse() -> None:
    assert REWARD_NAMES == ("base", "tool", "format")
    assert parse_reward_weights("0.6,0.2,0.2") == (0.6, 0.2, 0.2)
    assert parse_reward_weights(" 1 , 0,0 ") == (1.0, 0.0, 0.0)
    assert parse_reward_weights([0.5, 0.25, "0.25"]) == (0.5, 0.25, 0.25)
    assert parse_reward_weights((1, 2, 3)) == (1.0, 2.0, 3.0)


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("0.6,0.4", "2 values, expected 3"),
        ("0.5,0.2,0.2,0.1", "4 values, expected 3"),
        ("", "1 values, expected 3"),
        ("0.6,much,0.2", "the tool weight 'much' is not a number"),
        ("0.6,0.2,", "the format weight '' is not a number"),
        ("0.6,-0.2,0.6", "the tool weight -0.2 is negative"),
        ("0,0,0", "all weights are 0"),
        ("nan,0.2,0.2", "the base weight must be a finite number"),
        ("0.6,inf,0.2", "the tool weight must be a finite number"),
        ([True, 0, 0], "the base weight True is not a number"),
        ([0.6, None, 0.2], "the tool weight None is not a number"),
    ],
)
def test_bad_reward_weights_are_refused_in_one_line(given: Any, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_reward_weights(given)
    message = str(err.value)
    assert message.startswith("--reward-weights ") and says in message and "\n" not in message


# -- custom reward functions --------------------------------------------------------------------------


def test_load_reward_function_from_a_module_and_a_file(tmp_path: Path) -> None:
    assert load_reward_function("oresearch_cli.train.rewards:format_reward") is format_reward
    path = tmp_path / "my_rewards.py"
    path.write_text(
        "from dataclasses import dataclass\n\n"
        "@dataclass\nclass Box:\n    n: int\n\n"
        "def length(trace_text, **kwargs):\n    return [float(Box(len(t)).n) for t in trace_text]\n",
        encoding="utf-8",
    )
    fn = load_reward_function(f"{path}:length")
    assert fn(trace_text=["ab", "abcd"], prompts=["p", "p"]) == [2.0, 4.0]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("no_colon_here", "expected module:function"),
        ("oresearch_cli.train.rewards:", "expected module:function"),
        ("no_such_module_for_ores_tests:f", "cannot import module 'no_such_module_for_ores_tests'"),
        ("oresearch_cli.train.rewards:no_such_function", "has no attribute 'no_such_function'"),
        ("oresearch_cli.train.rewards:REWARD_NAMES", "REWARD_NAMES is a tuple, not a function"),
        ("oresearch_cli.train.rewards:parse_reward_weights", "must accept **kwargs"),
        ("{tmp}/missing.py:f", "no file"),
        ("{tmp}/broken_import.py:f", "importing"),
        ("{tmp}/ok.py:g", "has no attribute 'g'"),
    ],
)
def test_load_reward_function_failures_are_one_line(tmp_path: Path, spec: str, says: str) -> None:
    (tmp_path / "broken_import.py").write_text("import no_such_dependency_for_ores_tests\n", encoding="utf-8")
    (tmp_path / "ok.py").write_text("def f(**kwargs):\n    return []\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_reward_function(spec.format(tmp=tmp_path))
    message = str(err.value)
    assert message.startswith("--reward-func ") and says in message and "\n" not in message


# -- R_base against a reference report (RACE-style) ----------------------------------------------


def race_json(target: int, reference: int) -> str:
    return json.dumps({d: {"target": target, "reference": reference} for d in DIMENSIONS})


REFERENCE = "## Introduction\nPhotosynthesis has two stages [1].\n\n## References\n[1] http://ref.example/a\n"


def test_relative_score_is_the_targets_share_and_cleaning_cuts_citations() -> None:
    even = {d: {"target": 5.0, "reference": 5.0} for d in DIMENSIONS}
    assert relative_score(even) == 0.5
    better = {d: {"target": 6.0, "reference": 4.0} for d in DIMENSIONS}
    assert relative_score(better) == pytest.approx(0.6)
    # weights move the share toward the dimensions that weigh more
    mixed = {**even, "insight": {"target": 10.0, "reference": 0.0}}
    assert relative_score(mixed, {"insight": 3.0}) > relative_score(mixed) > 0.5
    assert relative_score({d: {"target": 0.0, "reference": 0.0} for d in DIMENSIONS}) is None
    assert clean_article(REFERENCE) == "## Introduction\nPhotosynthesis has two stages."
    assert clean_article("A claim [2, 3] and another [4-6].\nSources:\n- x") == "A claim and another."
    with pytest.raises(RaceOutputError, match="insight.reference must be a number from 0 to 10"):
        check_pair_scores(
            {
                **{d: {"target": 1, "reference": 1} for d in DIMENSIONS},
                "insight": {"target": 1, "reference": 11},
            }
        )


def test_a_question_with_a_reference_is_scored_against_it(cache: JudgeCache) -> None:
    def reply(messages: list[dict[str, str]]) -> str:
        prompt = messages[-1]["content"]
        return race_json(6, 4) if "## Reference report" in prompt else scores_json(VALUES)

    judge = ScriptedJudge(reply)
    reward = BaseReward(Opener(judge), cache)
    other = EXAMPLE.replace("Calvin", "Krebs")
    scores = call(reward, [EXAMPLE, other, EXAMPLE[:REPORT]], reference=[REFERENCE, None, REFERENCE])
    assert scores[0] == pytest.approx(0.6)  # 6 / (6 + 4) on every dimension
    assert scores[1] == pytest.approx(sum(VALUES.values()) / len(VALUES) / 10)  # no reference: pointwise
    assert scores[2] == 0.0  # no report: 0 without a call
    (race_prompt,) = [m[-1]["content"] for m in judge.requests if "## Reference report" in m[-1]["content"]]
    report = parse(EXAMPLE).report
    assert report is not None and "Photosynthesis has two stages." in race_prompt
    assert "http://ref.example/a" not in race_prompt and "[1]" not in race_prompt  # cleaned, both sides
    assert (reward.calls, reward.failed) == (2, 0)
    # cached under its own rubric: the same pair again makes no call
    silent = BaseReward(Opener(ScriptedJudge(lambda m: pytest.fail("cached"))), cache)
    assert call(silent, [EXAMPLE], reference=[REFERENCE]) == [scores[0]] and silent.cached == 1


def test_a_malformed_comparison_is_missing_not_zero(cache: JudgeCache) -> None:
    judge = ScriptedJudge(lambda messages: json.dumps({"comprehensiveness": {"target": 7}}))
    reward = BaseReward(Opener(judge), cache, JudgeSettings(max_attempts=2))
    assert call(reward, [EXAMPLE], reference=[REFERENCE]) == [None]
    assert reward.failed == 1 and len(judge.requests) == 2
    assert "comprehensiveness.reference must be a number from 0 to 10" in judge.requests[1][-1]["content"]


# -- an unreachable judge ---------------------------------------------------------------------------


def test_a_judge_down_for_the_whole_batch_stops_the_run(cache: JudgeCache) -> None:
    def down(messages: list[dict[str, str]]) -> str:
        raise LLMError("judge: cannot connect to http://127.0.0.1:9/v1 (connection refused)")

    reward = BaseReward(Opener(ScriptedJudge(down)), cache)
    other = EXAMPLE.replace("Calvin", "Krebs")
    with pytest.raises(
        JudgeUnreachable, match=r"no score for any report of this batch \(endpoint: judge: cannot"
    ):
        call(reward, [EXAMPLE, other], reference=[REFERENCE, None])  # both kinds of judgement

    # Down for some samples only: those are missing, the batch goes on.
    def flaky(messages: list[dict[str, str]]) -> str:
        if "Krebs" in messages[-1]["content"]:
            raise LLMError("judge: HTTP 503")
        return scores_json(VALUES)

    reward = BaseReward(Opener(ScriptedJudge(flaky)), cache)
    scores = call(reward, [EXAMPLE, other])
    assert scores[0] is not None and scores[1] is None and reward.failed == 1


def test_a_judge_nobody_listens_to_is_reported_through_the_real_client(tmp_path: Path) -> None:
    from oresearch_cli.llm import LLMClient, load_config

    from model_support import free_port

    config = load_config(
        None,
        {"judge.base_url": f"http://127.0.0.1:{free_port()}/v1", "judge.model": "m", "judge.api_key_env": "",
         "judge.max_attempts": 1, "judge.timeout_s": 5},
        require=["judge"],
    )  # fmt: skip
    cache = JudgeCache(tmp_path / "judge.sqlite")

    async def open_client() -> Any:
        return await LLMClient(config).__aenter__()

    reward = BaseReward(open_client, cache, JudgeSettings(max_attempts=1))

    async def score() -> list[float | None]:
        try:
            return await reward(prompts=[], completions=[], trace_text=[EXAMPLE], question=["q"])
        finally:
            await reward.aclose()
            cache.close()

    with pytest.raises(
        JudgeUnreachable, match=r"127\.0\.0\.1.*start the judge's endpoint or fix --judge-config"
    ):
        asyncio.run(score())
