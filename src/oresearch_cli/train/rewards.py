"""The rewards of `ores rl`: the paper's R_base (report quality), R_tool (tool use) and R_format.

    reward = w_base * R_base + w_tool * R_tool + w_format * R_format     (`--reward-weights 0.6,0.2,0.2`)

Each is a reward function of TRL's GRPOTrainer, logged by TRL as `rewards/<name>/mean`:
`base` (`BaseReward`, the judge role), `tool` (`tool_reward`) and `format` (`format_reward`).
They read the rollout extra `trace_text` (exactly what the model and the environment wrote),
never `completions`, which TRL decodes lossily; they accept and ignore every other keyword
(TRL passes the dataset columns, the rollout extras, `trainer_state`, `log_extra`, `log_metric`).
A judge failure is `None` (TRL makes it NaN and leaves it out of the group baseline), never 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import inspect
import math
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oresearch_cli.errors import ConfigError, OresError
from oresearch_cli.filtering.config import JudgeSettings
from oresearch_cli.filtering.judge import JudgeCache, JudgeTask, judge_all
from oresearch_cli.scoring.race import RaceTask, race_all
from oresearch_cli.trace import (
    Bounds,
    CrawlPage,
    Observation,
    Problem,
    Text,
    Trace,
    WebSearch,
    analyze_report,
    find_urls,
    has_tags,
    page_key,
    parse,
    validate,
)

if TYPE_CHECKING:
    from oresearch_cli.llm import LLMClient

REWARD_NAMES = ("base", "tool", "format")  # the order of `--reward-weights BASE,TOOL,FORMAT`
DEFAULT_WEIGHTS = "0.6,0.2,0.2"  # the paper's
WEIGHTS_FLAG = "--reward-weights"
REWARD_FUNC_FLAG = "--reward-func"

# -- R_format ---------------------------------------------------------------------------------------

# What each *distinct* problem code of `trace.validate` costs. Distinct codes, not occurrences: a
# model that fixes one kind of structural error sees its reward rise by a fixed step, whatever
# the length of the trace. Errors break the protocol (`ores filter` rejects them), warnings only
# describe what should not be learned, so they cost less; five distinct errors reach the floor 0.
ERROR_PENALTY = 0.2
WARNING_PENALTY = 0.05
# Tool-call bounds of the paper's R_tool; `format_reward` validates with them per subtask, as the
# filter does by default, and `tool_reward` applies them to the whole rollout.
MIN_TOOL_CALLS = 2
MAX_TOOL_CALLS = 8


def format_score(problems: Sequence[Problem]) -> float:
    """1.0 for no problem, minus ERROR_PENALTY per distinct error code and WARNING_PENALTY per
    distinct warning code, floored at 0."""
    errors = {p.code for p in problems if p.severity == "error"}
    warnings = {p.code for p in problems if p.severity != "error"}
    return max(0.0, 1.0 - ERROR_PENALTY * len(errors) - WARNING_PENALTY * len(warnings))


def format_reward(trace_text: list[str], **kw: Any) -> list[float]:
    """R_format of each rollout, from the validator `ores filter` uses. A text without a single
    trace tag is 0.0: it has no format to grade (its few missing-element errors would leave it
    well above 0)."""
    bounds = Bounds(MIN_TOOL_CALLS, MAX_TOOL_CALLS)
    scores = []
    for text in trace_text:
        trace = parse(text)
        scores.append(format_score(validate(trace, bounds)) if has_tags(trace) else 0.0)
    return scores


format_reward.__name__ = "format"

# -- R_tool -----------------------------------------------------------------------------------------

# Inside the bounds: TOOL_FLOOR + (1 - TOOL_FLOOR) * (DISTINCT_WEIGHT * distinct + CITED_WEIGHT * cited),
# in [TOOL_FLOOR, 1]. distinct: the share of the queries and crawled pages (normalized; across all
# calls) that are not repeats. cited: the share of calls whose observation shows (or, for a crawl,
# who fetched) a page the report's cited references or links name. The floor keeps any in-bounds
# rollout above the 0 of too few calls, so staying in bounds always pays.
TOOL_FLOOR = 0.1
DISTINCT_WEIGHT = 0.5
CITED_WEIGHT = 0.5


def _query_key(query: str) -> str:
    return " ".join(query.casefold().split())


def _distinct_share(calls: list[WebSearch | CrawlPage]) -> float:
    items: list[tuple[str, str]] = []
    for call in calls:
        if isinstance(call, WebSearch):
            items += [("q", _query_key(q)) for q in call.queries if q.strip()]
        else:
            items += [("u", page_key(u)) for u in call.urls if u.strip()]
    return len(set(items)) / len(items) if items else 0.0


def _observed_per_call(trace: Trace) -> list[set[str]]:
    """Page keys each tool call brought in: the URLs in its observation, plus a crawl's own URLs
    when it was answered (a crawled page's text rarely repeats its address). One set per call."""
    result: list[set[str]] = []
    for _, steps in trace.groups():
        for index, step in enumerate(steps):
            if not isinstance(step, WebSearch | CrawlPage):
                continue
            answer = next((s for s in steps[index + 1 :] if not isinstance(s, Text)), None)
            seen: set[str] = set()
            if isinstance(answer, Observation):
                seen = {page_key(u) for u in find_urls(answer.text)}
                if isinstance(step, CrawlPage):
                    seen |= {page_key(u) for u in step.urls}
            result.append(seen)
    return result


def tool_score(trace: Trace, n_calls: int) -> float:
    """R_tool of one rollout that made `n_calls` tool calls: 0.0 below MIN_TOOL_CALLS, -1.0 above
    MAX_TOOL_CALLS, else the in-bounds score above (in [TOOL_FLOOR, 1]).

    The bounds apply to the whole rollout, not per subtask as the filter's rule does: the budget a
    call spends (the environment's calls, the context, the time) is the rollout's total."""
    if n_calls < MIN_TOOL_CALLS:
        return 0.0
    if n_calls > MAX_TOOL_CALLS:
        return -1.0
    calls = trace.tool_calls
    cited_share = 0.0
    if calls and trace.report is not None:
        cited = {page_key(u) for u in analyze_report(trace.report.text).cited_urls}
        observed = _observed_per_call(trace)
        cited_share = sum(bool(seen & cited) for seen in observed) / len(calls)
    quality = DISTINCT_WEIGHT * _distinct_share(calls) + CITED_WEIGHT * cited_share
    return TOOL_FLOOR + (1.0 - TOOL_FLOOR) * quality


def tool_reward(
    trace_text: list[str], n_tool_calls: Sequence[int | None] | None = None, **kw: Any
) -> list[float]:
    """R_tool of each rollout. The count is `n_tool_calls[i]` (the calls the environment ran; calls
    over its budget are answered with a notice and not counted) when the rollout gives it, else
    the tool calls in the parsed trace."""
    scores = []
    for i, text in enumerate(trace_text):
        trace = parse(text)
        given = n_tool_calls[i] if n_tool_calls is not None else None
        scores.append(tool_score(trace, len(trace.tool_calls) if given is None else int(given)))
    return scores


tool_reward.__name__ = "tool"

# -- R_base -----------------------------------------------------------------------------------------


class JudgeUnreachable(OresError):
    """Every judgement of a batch failed at the endpoint: the run stops rather than train without R_base."""


class BaseReward:
    """R_base: the judge role's overall score of the report (filter's rubric, mean of its six
    criteria 0-10) divided by 10, through the judge cache `ores filter` shares; or, for a question
    that comes with a reference report (a `reference` column), its RACE-style share against that
    report, T / (T + R) in [0, 1] (`scoring.race`; 0.5 = as good as the reference).

    TRL runs async reward functions on its own event-loop thread, and the LLM client's HTTP
    connections belong to the loop they were opened on, so the client is opened lazily, by
    awaiting `open_client()` on the first call, inside TRL's loop. `aclose()` closes it and must
    run on that loop too, e.g. `asyncio.run_coroutine_threadsafe(reward.aclose(), trainer.async_loop)`.
    The cache is the caller's to close.

    Counters for the run's catalog: `calls` (judge requests, re-asks included), `cached` (samples
    answered from the cache), `failed` (samples the judge gave no usable score: reward None).
    A rollout without a report scores 0.0 without a judge call: the model failed, not the judge.
    Malformed judgements, or an endpoint failing for some samples, leave those samples' reward
    missing; when the endpoint fails for every sample of a batch, `JudgeUnreachable` stops the run.
    """

    def __init__(
        self,
        open_client: Callable[[], Awaitable[LLMClient]],
        cache: JudgeCache,
        settings: JudgeSettings | None = None,
    ) -> None:
        self.__name__ = "base"  # TRL names the reward (and its logged metrics) after this
        self.open_client = open_client
        self.cache = cache
        self.settings = settings or JudgeSettings()
        self.calls = 0
        self.cached = 0
        self.failed = 0
        self._client: LLMClient | None = None
        self._opening: asyncio.Future[LLMClient] | None = None

    async def client(self) -> LLMClient:
        """The open client; the first caller opens it and concurrent callers wait for the same one."""
        if self._client is None:
            if self._opening is None:
                self._opening = asyncio.ensure_future(self.open_client())
            opening = self._opening
            try:
                client = await opening
            except BaseException:
                if self._opening is opening:
                    self._opening = None  # the next call tries again
                raise
            self._client, self._opening = client, None
        return self._client

    async def __call__(
        self,
        prompts: list[Any],
        completions: list[Any],
        trace_text: list[str],
        question: Sequence[str | None],
        reference: Sequence[str | None] | None = None,
        **kw: Any,
    ) -> list[float | None]:
        rewards: list[float | None] = [0.0] * len(trace_text)
        pointwise: list[JudgeTask] = []
        relative: list[RaceTask] = []
        for i, text in enumerate(trace_text):
            report = parse(text).report
            if report is None or not report.text.strip():
                continue
            against = reference[i] if reference is not None else None
            if against:
                relative.append(RaceTask(str(i), question[i] or "", report.text, against))
            else:
                pointwise.append(JudgeTask(str(i), question[i] or "", text, report.text))
        if pointwise or relative:
            client = await self.client()
            judged, raced = await asyncio.gather(
                judge_all(pointwise, client, self.settings, self.cache),
                race_all(relative, client, self.settings, self.cache),
            )
            scored: list[tuple[str, float | None, bool, int]] = [
                (r.id, None if r.overall is None else r.overall / 10.0, r.cached, r.attempts) for r in judged
            ]
            scored += [(r.id, r.score, r.cached, r.attempts) for r in raced]
            errors = [r.error or "" for r in judged] + [r.error or "" for r in raced]
            unreachable = [e for e in errors if e.startswith("endpoint:")]
            if unreachable and len(unreachable) == len(scored):
                # not one score for the batch and the endpoint is why: training on the other
                # components alone would change the objective silently
                raise JudgeUnreachable(
                    f"the judge gave no score for any report of this batch ({unreachable[0]}); start "
                    "the judge's endpoint or fix --judge-config, then rerun: training resumes from "
                    "the last checkpoint"
                )
            for index, value, cached, attempts in scored:
                self.cached += cached
                self.calls += 0 if cached else attempts
                if value is None:
                    self.failed += 1
                rewards[int(index)] = None if value is None else min(1.0, max(0.0, value))
        log_metric = kw.get("log_metric")
        if callable(log_metric) and trace_text:
            log_metric("base/judge_failed", sum(r is None for r in rewards) / len(rewards))
        return rewards

    async def aclose(self) -> None:
        """Close the client's connections on the running loop (the one it was used on)."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


# -- configuration ----------------------------------------------------------------------------------


def parse_reward_weights(text: str | Sequence[float]) -> tuple[float, float, float]:
    """`--reward-weights BASE,TOOL,FORMAT` (or a recipe's list) -> three finite, non-negative
    weights, not all zero; anything else is a one-line ConfigError naming the fix."""
    fix = f"give three numbers BASE,TOOL,FORMAT, e.g. {WEIGHTS_FLAG} {DEFAULT_WEIGHTS}"
    parts: list[Any] = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    shown = text if isinstance(text, str) else ",".join(str(p) for p in parts)
    where = f"{WEIGHTS_FLAG} {shown!r}"
    if len(parts) != len(REWARD_NAMES):
        raise ConfigError(f"{where}: {len(parts)} values, expected {len(REWARD_NAMES)}; {fix}")
    weights = []
    for name, part in zip(REWARD_NAMES, parts, strict=True):
        try:
            if isinstance(part, bool):
                raise ValueError
            value = float(part)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: the {name} weight {part!r} is not a number; {fix}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{where}: the {name} weight must be a finite number; {fix}")
        if value < 0:
            raise ConfigError(f"{where}: the {name} weight {value:g} is negative; weights are 0 or more")
        weights.append(value)
    if not any(weights):
        raise ConfigError(f"{where}: all weights are 0, so nothing would be rewarded; {fix}")
    return weights[0], weights[1], weights[2]


def load_reward_function(spec: str) -> Callable[..., Any]:
    """A custom reward `module:function` or `path/to/file.py:function` (`--reward-func`).

    The function must take keyword arguments: TRL passes every dataset column and rollout extra."""
    where = f"{REWARD_FUNC_FLAG} {spec!r}"
    source, sep, name = spec.rpartition(":")
    if not sep or not source or not name or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
        raise ConfigError(f"{where}: expected module:function or path/to/file.py:function")
    if source.endswith(".py") or "/" in source or "\\" in source:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ConfigError(f"{where}: no file {path}; give the path of a Python file")
        module_name = "_ores_reward_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigError(f"{where}: {path} cannot be imported as Python; give a .py file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module  # dataclasses and pickling look the module up there
        try:
            module_spec.loader.exec_module(module)
        except ImportError as exc:
            sys.modules.pop(module_name, None)
            raise ConfigError(f"{where}: importing {path} failed: {exc}; install what it needs") from None
    else:
        try:
            module = importlib.import_module(source)
        except ImportError as exc:
            raise ConfigError(
                f"{where}: cannot import module {source!r} ({exc}); check the name and that it is on PYTHONPATH"
            ) from None
    target: Any = module
    for part in name.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"{where}: {source} has no attribute {name!r}; check the function's name")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{where}: {name} is a {type(target).__name__}, not a function")
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: let TRL's call decide
        return target
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        raise ConfigError(
            f"{where}: {name} must accept **kwargs (TRL passes every dataset column and rollout extra)"
        )
    return target
