"""DeepResearch Bench's RACE protocol with DRB's own arithmetic: prompt, reply parsing, scores.

One judge call per task sees the task, the target article (article_1) and the reference article
(article_2), and the task's criteria (text and explanation; the weights stay hidden), and answers

    {"comprehensiveness": [{"criterion": ..., "analysis": ..., "article_1_score": 0-10,
                            "article_2_score": 0-10}, ...], "insight": [...], ...}

The arithmetic follows DRB's `calculate_weighted_scores` and `process_single_item` step for step,
quirks included, so our numbers match a DRB run on the same judge replies:

- per dimension, a criterion-weighted mean over the scored items: sum(w*s) / sum(w) over the items
  the judge returned; a criterion it left out is simply not in either sum (the mean renormalizes),
  and one it scored twice counts twice;
- an item's weight is found by exact criterion text, then case-insensitively, then by substring
  either way; an item matching none gets the mean weight of the dimension's criteria;
- an item with an unreadable score (not float()-able) is skipped; numeric strings are read;
  without "article_2_score" it counts for the target only, and when the last score read in a
  dimension has none, the dimension's reference mean is 0 (DRB's check looks at the last item);
- total = sum over dimensions of dimension weight * dimension mean (weights as given, not
  renormalized); overall = T / (T + R), per dimension t / (t + r), each 0 when the sum is not > 0;
- the summary is the plain mean of each of the five numbers over the tasks that got a score
  (failed tasks are left out, not counted as 0), printed to 4 decimals.

What DRB does beyond this is not here: its LLM cleaning of citations from both articles (the
caller passes the articles as they should be judged) and its regex salvage of unparseable replies
(here such a reply is asked again).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from oresearch_cli.llm.jsonout import JSONExtractError, extract_json
from oresearch_cli.scoring.drb import DIMENSIONS, DrbTask, TaskCriteria

TARGET_KEY, REFERENCE_KEY, POINTWISE_KEY = "article_1_score", "article_2_score", "target_score"
LABELS = {
    "comprehensiveness": "Comprehensiveness",
    "insight": "Insight",
    "instruction_following": "Instruction Following",
    "readability": "Readability",
}

# --- the prompt ---------------------------------------------------------------------------------

_SYSTEM = {
    "en": "You are an exacting, careful and impartial reviewer of research reports. You compare two "
    "reports written for the same task against specific criteria, and give precise scores with clear reasons.",
    "zh": "你是一位严谨、细致、公正的调研报告评审专家，善于依据具体的评估标准对比同一任务下的两篇报告，"
    "给出准确的分数和清楚的理由。",
}

_USER = {
    "en": """## The task
A deep-research task was given, and two reports were written for it. They are judged on four \
dimensions: comprehensiveness, insight, instruction following and readability.
<task>
{task}
</task>

## The two reports
<article_1>
{article_1}
</article_1>

<article_2>
{article_2}
</article_2>

## Criteria
Judge the two reports against every criterion in this list. Each criterion comes with an \
explanation of what it asks for; read it closely.
<criteria_list>
{criteria}
</criteria_list>

## What to do
For each criterion, one by one: consider how each report meets it, compare the two with the \
criterion's explanation in mind, then give each report its own score from 0 to 10 (decimals allowed):
- 0-2: very poor, the criterion is barely met at all;
- 2-4: weak, met only in small part, with clear gaps;
- 4-6: middling, met on the whole, neither good nor bad;
- 6-8: good, mostly met, with real strengths;
- 8-10: excellent, fully met or exceeded.

## Answer format
Reply with this JSON object and nothing else (no introduction, no summary). Under each of the four \
dimensions, list every criterion of that dimension in the order given, copying its text exactly:
{{
  "comprehensiveness": [
    {{"criterion": "<text of the first comprehensiveness criterion>", "analysis": "<comparison>", \
"article_1_score": <0-10>, "article_2_score": <0-10>}},
    {{"criterion": "<text of the second comprehensiveness criterion>", "analysis": "<comparison>", \
"article_1_score": <0-10>, "article_2_score": <0-10>}},
    ...
  ],
  "insight": [ ... ],
  "instruction_following": [ ... ],
  "readability": [ ... ]
}}
Make sure the JSON parses: escape quotes and any other characters that would break it.""",
    "zh": """## 任务
下面是一个深度调研任务，以及针对它写成的两篇报告。评估从四个维度进行：全面性、洞察力、指令遵循和可读性。
<task>
{task}
</task>

## 两篇报告
<article_1>
{article_1}
</article_1>

<article_2>
{article_2}
</article_2>

## 评估标准
请依据下面列表中的每一条标准评估这两篇报告。每条标准都附有说明，请仔细阅读。
<criteria_list>
{criteria}
</criteria_list>

## 要求
逐条进行：思考每篇报告如何满足该标准，结合标准说明对比两篇报告，再分别为两篇报告打 0-10 分（可用小数）：
- 0-2：很差，几乎没有满足该标准；
- 2-4：较差，只满足一小部分，缺陷明显；
- 4-6：一般，大体满足，不好不坏；
- 6-8：较好，大部分满足，有明显优点；
- 8-10：出色，完全满足或超出要求。

## 输出格式
只输出下面这个 JSON 对象，不要任何引言或总结。在四个维度下按给出的顺序列出该维度的每一条标准，标准文本须原样照抄：
{{
  "comprehensiveness": [
    {{"criterion": "<全面性第一条标准的原文>", "analysis": "<对比分析>", "article_1_score": <0-10>, "article_2_score": <0-10>}},
    {{"criterion": "<全面性第二条标准的原文>", "analysis": "<对比分析>", "article_1_score": <0-10>, "article_2_score": <0-10>}},
    ...
  ],
  "insight": [ ... ],
  "instruction_following": [ ... ],
  "readability": [ ... ]
}}
请确保 JSON 可以被解析：引号等可能破坏 JSON 的字符都要转义。""",
}


# Pointwise mode: no reference article, so no T / (T + R). The same criteria are scored for the one
# article; the result is the criterion-weighted mean divided by 10 (0-1, like a RACE share), and it
# is labelled pointwise wherever it is shown: it is not comparable with DRB's published numbers.
_POINTWISE_SYSTEM = {
    "en": "You are an exacting, careful and impartial reviewer of research reports. You judge a report "
    "against specific criteria and give precise scores with clear reasons.",
    "zh": "你是一位严谨、细致、公正的调研报告评审专家，善于依据具体的评估标准评判报告，给出准确的分数和清楚的理由。",
}

_POINTWISE_USER = {
    "en": """## The task
A deep-research task was given, and a report was written for it. It is judged on four dimensions: \
comprehensiveness, insight, instruction following and readability.
<task>
{task}
</task>

## The report
<article>
{article}
</article>

## Criteria
Judge the report against every criterion in this list; each comes with an explanation of what it asks for.
<criteria_list>
{criteria}
</criteria_list>

## What to do
For each criterion, one by one: consider how the report meets it, then score it from 0 to 10 \
(decimals allowed): 0-2 very poor, 2-4 weak, 4-6 middling, 6-8 good, 8-10 excellent.

## Answer format
Reply with this JSON object and nothing else. Under each of the four dimensions, list every \
criterion of that dimension in the order given, copying its text exactly:
{{
  "comprehensiveness": [
    {{"criterion": "<text of the criterion>", "analysis": "<why>", "target_score": <0-10>}},
    ...
  ],
  "insight": [ ... ],
  "instruction_following": [ ... ],
  "readability": [ ... ]
}}""",
    "zh": """## 任务
下面是一个深度调研任务，以及针对它写成的一篇报告。评估从四个维度进行：全面性、洞察力、指令遵循和可读性。
<task>
{task}
</task>

## 报告
<article>
{article}
</article>

## 评估标准
请依据下面列表中的每一条标准评估这篇报告；每条标准都附有说明。
<criteria_list>
{criteria}
</criteria_list>

## 要求
逐条进行：思考报告如何满足该标准，再打 0-10 分（可用小数）：0-2 很差，2-4 较差，4-6 一般，6-8 较好，8-10 出色。

## 输出格式
只输出下面这个 JSON 对象。在四个维度下按给出的顺序列出该维度的每一条标准，标准文本须原样照抄：
{{
  "comprehensiveness": [
    {{"criterion": "<标准原文>", "analysis": "<理由>", "target_score": <0-10>}},
    ...
  ],
  "insight": [ ... ],
  "instruction_following": [ ... ],
  "readability": [ ... ]
}}""",
}

POINTWISE_SHAPE = (
    f"the keys {', '.join(DIMENSIONS)}, each a list with one entry per criterion holding "
    f'"criterion", "analysis" and "{POINTWISE_KEY}" (a number 0-10).'
)


def prompt_language(task: DrbTask) -> str:
    """The judge's language: Chinese for a zh task, English otherwise (as DRB picks it)."""
    return "zh" if task.language == "zh" else "en"


def criteria_list(criteria: TaskCriteria) -> str:
    """The criteria as the judge reads them: text and explanation per dimension, weights withheld
    so the judge scores each criterion on its merits."""
    shown = {
        d: [{"criterion": c.text, "explanation": c.explanation} for c in criteria.criteria[d]]
        for d in DIMENSIONS
    }
    return json.dumps(shown, ensure_ascii=False, indent=2)


def build_messages(
    task: DrbTask, criteria: TaskCriteria, target: str, reference: str, max_chars: int | None = None
) -> list[dict[str, str]]:
    """The judge's messages; the target is article_1, the reference article_2. DRB sends the
    articles whole; `max_chars` cuts each to fit a small judge's context."""
    language = prompt_language(task)

    def cut(text: str) -> str:
        return text if max_chars is None else text[:max_chars]

    user = _USER[language].format(
        task=task.prompt, article_1=cut(target), article_2=cut(reference), criteria=criteria_list(criteria)
    )
    return [{"role": "system", "content": _SYSTEM[language]}, {"role": "user", "content": user}]


def task_schema(
    criteria: TaskCriteria,
    *,
    pointwise: bool = False,
    analysis_chars: int | None = None,
    integer_scores: bool = False,
) -> dict[str, Any]:
    """The reply schema narrowed to one task, for endpoints that bind output to a schema: under
    each dimension exactly as many items as it has criteria, each naming one of them (an enum of
    their texts, so even a weak judge cannot mangle a criterion), the scores 0-10, and with
    `analysis_chars` the analysis bounded (a small judge otherwise writes until its token limit).
    `integer_scores` binds scores to the integers 0-10: a JSON number has no length bound, and a
    weak judge under a grammar can write `7.000000...` until its token limit."""
    score_type: dict[str, Any] = {
        "type": "integer" if integer_scores else "number",
        "minimum": 0,
        "maximum": 10,
    }
    score_keys = [POINTWISE_KEY] if pointwise else [TARGET_KEY, REFERENCE_KEY]
    analysis: dict[str, Any] = {"type": "string"}
    if analysis_chars is not None:
        analysis["maxLength"] = analysis_chars
    properties = {}
    for dim in DIMENSIONS:
        texts = [c.text for c in criteria.criteria[dim]]
        item = {
            "type": "object",
            "properties": {
                "criterion": {"type": "string", "enum": texts},
                "analysis": analysis,
                **{key: dict(score_type) for key in score_keys},
            },
            "required": ["criterion", "analysis", *score_keys],
            # without it a grammar lets a weak judge add a key after the required ones, never closed
            "additionalProperties": False,
        }
        properties[dim] = {"type": "array", "items": item, "minItems": len(texts), "maxItems": len(texts)}
    title = "drb_pointwise_scores" if pointwise else "drb_race_scores"
    return {
        "title": title,
        "type": "object",
        "properties": properties,
        "required": list(DIMENSIONS),
        "additionalProperties": False,
    }


def build_pointwise_messages(
    task: DrbTask, criteria: TaskCriteria, article: str, max_chars: int | None = None
) -> list[dict[str, str]]:
    """The judge's messages in pointwise mode (one article, no reference)."""
    language = prompt_language(task)
    text = article if max_chars is None else article[:max_chars]
    user = _POINTWISE_USER[language].format(task=task.prompt, article=text, criteria=criteria_list(criteria))
    return [{"role": "system", "content": _POINTWISE_SYSTEM[language]}, {"role": "user", "content": user}]


# What the strict re-ask after an unusable reply asks for.
SHAPE = (
    f"the keys {', '.join(DIMENSIONS)}, each a list with one entry per criterion holding "
    f'"criterion", "analysis", "{TARGET_KEY}" and "{REFERENCE_KEY}" (numbers 0-10).'
)


# --- reading the reply --------------------------------------------------------------------------


class DrbReplyError(ValueError):
    """The judge's reply cannot be scored; the message says exactly what is wrong."""


def parse_reply(text: str) -> dict[str, Any]:
    """The judge's JSON object, found in a code fence, after <think>, or amid prose; accepted as
    DRB accepts it: all four dimensions present. Items are read by `weighted_scores`."""
    try:
        data = extract_json(text)
    except JSONExtractError as exc:
        raise DrbReplyError(str(exc)) from None
    missing = [d for d in DIMENSIONS if d not in data]
    if missing:
        raise DrbReplyError(f"missing dimension(s): {', '.join(missing)}")
    return data


def _score(value: Any) -> float | None:
    """A score as DRB reads it, float(value); None when absent or unreadable."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _match(text: str, weights: Mapping[str, float]) -> str | None:
    """The criterion a judge's text names, by DRB's matching: exact, case-insensitive, then
    substring either way (first in list order)."""
    if text in weights:
        return text
    lower = text.lower()
    for key in weights:
        if key.lower() == lower:
            return key
    for key in weights:
        if lower in key.lower() or key.lower() in lower:
            return key
    return None


def _weights(criteria: TaskCriteria) -> dict[str, dict[str, float]]:
    # a dict built in file order, as DRB builds it: a repeated text keeps its first place, last weight
    return {d: {c.text: c.weight for c in criteria.criteria.get(d, ())} for d in criteria.criteria}


def coverage_problems(
    reply: Mapping[str, Any], criteria: TaskCriteria, *, pointwise: bool = False
) -> list[str]:
    """What the reply lacks against the task's criteria, one phrase each (empty: complete). DRB
    scores such replies anyway (see the module notes); a stricter caller re-asks on these."""
    problems: list[str] = []
    score_keys = (POINTWISE_KEY,) if pointwise else (TARGET_KEY, REFERENCE_KEY)
    weights = _weights(criteria)
    for dim in DIMENSIONS:
        items = reply.get(dim)
        if not isinstance(items, list):
            problems.append(f"{dim} is not a list of criterion scores")
            continue
        scored: set[str] = set()
        for n, item in enumerate(items, start=1):
            if not isinstance(item, Mapping):
                problems.append(f"{dim}[{n}] is not an object")
                continue
            text = item.get("criterion")
            text = text.strip() if isinstance(text, str) else ""
            if not text:
                problems.append(f"{dim}[{n}] has no criterion text")
                continue
            for key in score_keys:
                value = _score(item.get(key))
                if item.get(key) is None:
                    problems.append(f"{dim}[{n}] has no {key}")
                elif value is None:
                    problems.append(f"{dim}[{n}] {key} {item.get(key)!r} is not a number")
                elif not (math.isfinite(value) and 0 <= value <= 10):
                    problems.append(f"{dim}[{n}] {key} {value:g} is outside 0-10")
            matched = _match(text, weights[dim])
            if matched is None:
                problems.append(
                    f"{dim}[{n}] criterion {text[:60]!r} is not in the list (given the mean weight)"
                )
            elif matched in scored:
                problems.append(f"{dim}[{n}] criterion {matched[:60]!r} is scored twice (counted twice)")
            scored.add(matched or text)
        for c in criteria.criteria[dim]:
            if c.text not in scored:
                problems.append(f"{dim}: criterion {c.text[:60]!r} was not scored")
    return problems


# --- DRB's arithmetic ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightedScores:
    """Per-dimension criterion-weighted means and weighted totals of both articles; a dimension
    DRB skipped (not a list in the reply, say) has no entry."""

    target: dict[str, float]
    reference: dict[str, float]
    target_total: float
    reference_total: float
    unmatched: tuple[str, ...] = ()  # "dimension:criterion" scored at the mean weight


def weighted_scores(reply: Mapping[str, Any], criteria: TaskCriteria) -> WeightedScores:
    """DRB's `calculate_weighted_scores`, in the same order of operations (so the same floats)."""
    weights = _weights(criteria)
    target_dims: dict[str, float] = {}
    reference_dims: dict[str, float] = {}
    target_total = reference_total = 0.0
    unmatched: list[str] = []
    # DRB keeps the last score read in one variable across items and dimensions; its reference
    # mean depends on it, so it lives here too, updated exactly when DRB's would be.
    last_reference: float | None = None
    for dim, items in reply.items():
        if not isinstance(items, list) or dim not in criteria.dimension_weights or not weights.get(dim):
            continue
        dim_weights = weights[dim]
        target_sum = reference_sum = weight_sum = 0.0
        for item in items:
            if not isinstance(item, Mapping):
                continue
            raw_text = item.get("criterion")
            text = raw_text.strip() if isinstance(raw_text, str) else None
            raw_target, raw_reference = item.get(TARGET_KEY), item.get(REFERENCE_KEY)
            if item.get(POINTWISE_KEY) is not None and raw_target is None:
                raw_target = item[POINTWISE_KEY]  # DRB's single-article replies
            target_score = _score(raw_target)
            if raw_target is not None and target_score is None:
                continue  # unreadable target: DRB skips the item, its variables untouched
            reference_score = _score(raw_reference)
            if raw_reference is not None and reference_score is None:
                continue  # unreadable reference: skipped too, the last reference kept
            last_reference = reference_score
            if not text or target_score is None:
                continue
            key = _match(text, dim_weights)
            if key is not None:
                weight = dim_weights[key]
            else:
                unmatched.append(f"{dim}:{text}")
                weight = sum(dim_weights.values()) / len(dim_weights)
            target_sum += target_score * weight
            weight_sum += weight
            if reference_score is not None:
                reference_sum += reference_score * weight
        if weight_sum > 0:
            target_mean = target_sum / weight_sum
            reference_mean = reference_sum / weight_sum if last_reference is not None else 0
        else:
            target_mean = reference_mean = 0
        target_dims[dim], reference_dims[dim] = target_mean, reference_mean
        dim_weight = criteria.dimension_weights.get(dim, 0)
        target_total += target_mean * dim_weight
        reference_total += reference_mean * dim_weight
    return WeightedScores(target_dims, reference_dims, target_total, reference_total, tuple(unmatched))


@dataclass(frozen=True)
class DrbScore:
    """One task's RACE result: the target's share per dimension and overall (0.5 = on par)."""

    dimensions: dict[str, float]
    overall: float

    def as_row(self) -> dict[str, float]:
        """The fields of a DRB raw_results.jsonl row."""
        return {**self.dimensions, "overall_score": self.overall}


def _share(target: float, reference: float) -> float:
    return target / (target + reference) if target + reference > 0 else 0.0


def normalized(scores: WeightedScores) -> DrbScore:
    """Per dimension t / (t + r) and overall T / (T + R); 0 where the sum is not positive or the
    dimension was skipped, as DRB sets them."""
    dims = {
        d: _share(scores.target[d], scores.reference[d]) if d in scores.target else 0.0 for d in DIMENSIONS
    }
    return DrbScore(dims, _share(scores.target_total, scores.reference_total))


def score_reply(reply: Mapping[str, Any], criteria: TaskCriteria) -> DrbScore:
    return normalized(weighted_scores(reply, criteria))


def pointwise(scores: WeightedScores) -> DrbScore:
    """Pointwise mode: each dimension's weighted mean and the weighted total, divided by 10 (0-1)."""
    dims = {d: scores.target.get(d, 0.0) / 10 for d in DIMENSIONS}
    return DrbScore(dims, scores.target_total / 10)


@dataclass(frozen=True)
class DrbSummary:
    """The mean of each score over the scored tasks; `failed` tasks are not in the means."""

    dimensions: dict[str, float]
    overall: float
    scored: int
    failed: int

    def lines(self) -> list[str]:
        """DRB's race_result.txt, line for line (4 decimals)."""
        out = [f"{LABELS[d]}: {self.dimensions[d]:.4f}" for d in DIMENSIONS]
        return [*out, f"Overall Score: {self.overall:.4f}"]


def summarize(results: Iterable[DrbScore | None]) -> DrbSummary | None:
    """DRB's summary: plain means over the tasks that got a score (None = failed, left out);
    None when no task got one."""
    scored, failed = [], 0
    for result in results:
        if result is None:
            failed += 1
        else:
            scored.append(result)
    if not scored:
        return None
    n = len(scored)
    dims = {d: sum(s.dimensions[d] for s in scored) / n for d in DIMENSIONS}
    return DrbSummary(dims, sum(s.overall for s in scored) / n, n, failed)


# --- one judge call -----------------------------------------------------------------------------


@dataclass
class DrbJudgement:
    id: int
    score: DrbScore | None
    weighted: WeightedScores | None = None
    reply: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)  # coverage gaps DRB tolerated
    attempts: int = 0
    error: str | None = None
    # G-Eval: the reply with each score the judge wrote replaced by its probability-weighted
    # value (None without log probs), and the task's score from it
    weighted_reply: dict[str, Any] | None = None
    weighted_score: DrbScore | None = None


_SCORE_AT = re.compile(r'"(article_1_score|article_2_score|target_score)"\s*:\s*"?(\d+(?:\.\d+)?)')


def weighted_reply(reply: Mapping[str, Any], text: str, tokens: Any) -> dict[str, Any] | None:
    """`reply` (read from `text`) with each score replaced by its probability-weighted value from
    the reply's token log probs (`llm.logprob_scores.weighted_score`); a score whose token cannot
    be read keeps its written value. The scores are found in `text` in the order the reply lists
    them; None when the text and the reply do not line up (then nothing is weighted)."""
    from oresearch_cli.llm.logprob_scores import weighted_score

    matches = list(_SCORE_AT.finditer(text))
    out: dict[str, Any] = {}
    n = 0
    for dim, items in reply.items():
        if not isinstance(items, list):
            out[dim] = items
            continue
        copied = []
        for item in items:
            if not isinstance(item, Mapping):
                copied.append(item)
                continue
            new = dict(item)
            for key in item:
                if key not in (TARGET_KEY, REFERENCE_KEY, POINTWISE_KEY):
                    continue
                if (
                    n >= len(matches)
                    or matches[n].group(1) != key
                    or _score(item[key]) != float(matches[n].group(2))
                ):
                    return None
                value = weighted_score(tokens, text, matches[n].start(2))
                if value is not None:
                    new[key] = value
                n += 1
            copied.append(new)
        out[dim] = copied
    return out


async def judge_task(
    llm: Any,
    task: DrbTask,
    criteria: TaskCriteria,
    target: str,
    reference: str | None,
    *,
    max_attempts: int = 3,
    max_chars: int | None = None,
    complete: bool = False,
    analysis_chars: int | None = None,
    integer_scores: bool = False,
    top_logprobs: int | None = None,
    support: Any = None,
) -> DrbJudgement:
    """Judge one task through `llm`'s judge role. A reply is taken as DRB takes it (a JSON object
    with the four dimensions); with `complete`, one that misses or mangles a criterion is asked
    again. An unusable judgement is a failure (score None), never a made-up number. Without a
    `reference` the article is judged alone (`pointwise`). With `top_logprobs` the judge is asked
    for log probs too (`support`: a run's `LogprobSupport`), and where they come back the
    probability-weighted score is computed beside DRB's (`weighted_reply`, `weighted_score`)."""
    from oresearch_cli.llm import ask_for_scores
    from oresearch_cli.llm.logprob_judge import LogprobJudge, LogprobSupport

    alone = reference is None
    judge = LogprobJudge(llm, top_logprobs, support or LogprobSupport()) if top_logprobs is not None else None

    def check(reply: Mapping[str, Any]) -> dict[str, Any]:
        if complete and (problems := coverage_problems(reply, criteria, pointwise=alone)):
            raise DrbReplyError("; ".join(problems[:5]))
        return dict(reply)

    judged = await ask_for_scores(
        judge or llm,
        build_pointwise_messages(task, criteria, target, max_chars)
        if reference is None
        else build_messages(task, criteria, target, reference, max_chars),
        check,
        schema=task_schema(
            criteria, pointwise=alone, analysis_chars=analysis_chars, integer_scores=integer_scores
        ),
        shape=POINTWISE_SHAPE if alone else SHAPE,
        max_attempts=max_attempts,
        trace_id=str(task.id),
        from_text=parse_reply,
    )
    result = DrbJudgement(task.id, None, reply=judged.value, attempts=judged.attempts, error=judged.error)
    if judged.value is None:
        return result
    result.weighted = weighted_scores(judged.value, criteria)
    result.score = pointwise(result.weighted) if alone else normalized(result.weighted)
    result.problems = coverage_problems(judged.value, criteria, pointwise=alone)
    last = judge.last if judge is not None else None
    if last is not None and last.logprobs:
        result.weighted_reply = weighted_reply(judged.value, last.text or "", last.logprobs)
        if result.weighted_reply is not None:
            weighted = weighted_scores(result.weighted_reply, criteria)
            result.weighted_score = pointwise(weighted) if alone else normalized(weighted)
    return result
