"""Each hard rule rejects its broken trace (positive) and passes the fixture trace (negative)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from filter_support import QUESTION, good_trace
from oresearch_cli.errors import InputError
from oresearch_cli.filtering.config import FilterConfig, from_dict, load_filter_config
from oresearch_cli.filtering.funnel import build_funnel
from oresearch_cli.filtering.rules import RULE_ORDER, RULES, Item, estimate_tokens, evaluate, run_rules

CFG = FilterConfig()


def item(text: str | None = None, **kw) -> Item:
    return Item(
        id="t", text=good_trace() if text is None else text, question=kw.pop("question", QUESTION), **kw
    )


def mutate(old: str, new: str) -> Callable[[str], str]:
    def apply(text: str) -> str:
        assert old in text
        return text.replace(old, new, 1)

    return apply


def cut_before(marker: str) -> Callable[[str], str]:
    return lambda text: text[: text.index(marker)]


FIRST_THINK = "<think>\nI need the location of the light reactions and their products. An overview article should name both.\n</think>\n"
REPEAT = "The light reactions make ATP and NADPH on the thylakoid membranes.\n"

# rule, code, how to break the trace, settings (the fixture passes the rule under default settings)
CASES = [
    ("status", "synth-failed", None, {}, {"status": "failed", "error": "worker crashed"}),
    ("validation", "trace:think-before-action", mutate(FIRST_THINK, ""), {}, {}),
    ("tool_calls", "tool-calls-above-max", None, {"max_tool_calls": 1}, {}),
    ("tool_calls", "tool-calls-below-min", None, {"min_tool_calls": 3}, {}),
    ("steps", "too-few-steps", None, {"min_steps": 50}, {}),
    ("steps", "too-many-steps", None, {"max_steps": 10}, {}),
    ("sections", "report-missing-section", mutate("## Conclusion\n", ""), {}, {}),
    (
        "citations",
        "citation-unresolved",
        mutate("in two linked stages [2]", "in two linked stages [9]"),
        {},
        {},
    ),
    (
        "citations",
        "reference-url-not-observed",
        mutate("[4]. https://en.wikipedia.org/wiki/Thylakoid", "[4]. https://example.com/never-seen"),
        {},
        {},
    ),
    ("sources", "too-few-sources", None, {"min_sources": 5}, {}),
    ("length", "report-too-short", None, {"min_report_tokens": 1000}, {}),
    ("length", "report-too-long", None, {"max_report_tokens": 100}, {}),
    ("length", "trace-too-long", None, {"max_trace_tokens": 500}, {}),
    ("repetition", "repetition-loop", mutate("## Conclusion", REPEAT * 4 + "\n## Conclusion"), {}, {}),
    ("language", "language-mismatch", None, {}, {"question": "光合作用的光反应和卡尔文循环分别产生什么？"}),
    ("truncated", "truncated", cut_before("## Conclusion"), {}, {}),
    ("truncated", "truncated", cut_before("<suggested_answer>"), {}, {}),
    ("leaked", "leaked-tag", mutate("## Conclusion", "</think> leftover\n\n## Conclusion"), {}, {}),
    ("leaked", "leaked-prompt", mutate("## Conclusion", "<|im_end|>\n\n## Conclusion"), {}, {}),
]


def test_the_fixture_trace_passes_every_rule() -> None:
    outcome = evaluate(item(), CFG)
    assert outcome.passed, outcome.fails
    assert outcome.reasons == []
    assert set(RULE_ORDER) - {"status"} <= set(outcome.details)


@pytest.mark.parametrize(
    ("rule", "code", "change", "settings", "fields"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
def test_each_rule_rejects_its_case_and_passes_the_fixture(rule, code, change, settings, fields) -> None:
    cfg = from_dict(settings) if settings else CFG
    text = change(good_trace()) if change else good_trace()
    positive = evaluate(item(text, **fields), cfg)
    assert code in positive.fails.get(rule, []), (positive.fails, positive.details.get(rule))
    assert code in positive.reasons
    # negative: the unbroken fixture under default settings passes this rule
    assert rule not in evaluate(item(), CFG).fails
    # and the rule switched off never reports it
    off = evaluate(item(text, **fields), replace(cfg, rules={rule: False}))
    assert rule not in off.fails


def test_every_rule_has_documented_codes_and_a_case() -> None:
    assert set(RULES) == {c[0] for c in CASES}
    for rule in RULES.values():
        assert rule.doc and rule.codes


def test_a_bare_report_skips_the_trace_rules() -> None:
    report = good_trace().split("<suggested_answer>")[1].split("</suggested_answer>")[0]
    outcome = evaluate(item(report), CFG)
    assert outcome.mode == "report"
    assert outcome.passed, outcome.fails
    assert "tool_calls" not in outcome.details and "steps" not in outcome.details


def test_token_estimate_counts_cjk_per_character() -> None:
    assert estimate_tokens("abcd" * 10) == 10
    assert estimate_tokens("光合作用") == 4


def test_batch_in_worker_processes_equals_one_process() -> None:
    items = [item() for _ in range(3)] + [item(cut_before("## Conclusion")(good_trace()))]
    items = [replace(it, id=str(i)) for i, it in enumerate(items * 110)]
    serial = run_rules(items, replace(CFG, workers=1))
    parallel = run_rules(items, replace(CFG, workers=2))
    assert [o.reasons for o in serial] == [o.reasons for o in parallel]
    assert sum(not o.passed for o in parallel) == 110


def test_funnel_counts_add_up() -> None:
    fails = [
        {},
        {"validation": ["trace:x"]},
        {"length": ["report-too-short"], "validation": ["trace:y"]},
        {},
        {},
    ]
    funnel = build_funnel(fails, [False, False, False, True, False], [False] * 4 + [True], judge_ran=True)
    assert funnel.n_in == 5 and funnel.accepted == 1
    assert sum(r.dropped for r in funnel.rows) == funnel.n_in - funnel.accepted
    by_stage = {r.stage: r.dropped for r in funnel.rows}
    assert by_stage["rule validation"] == 2 and by_stage["rule length"] == 0
    assert by_stage["dedup"] == 1 and by_stage["judge"] == 1


def test_config_from_yaml_and_unknown_keys(tmp_path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("filter:\n  min_sources: 1\n  rules: {language: false}\n  judge: {min_overall: 7}\n")
    cfg = load_filter_config(path, {"max_steps": 99})
    assert (
        cfg.min_sources == 1
        and not cfg.enabled("language")
        and cfg.judge.min_overall == 7
        and cfg.max_steps == 99
    )
    path.write_text("filter:\n  min_sorces: 1\n")
    with pytest.raises(InputError, match="min_sorces"):
        load_filter_config(path)
    with pytest.raises(InputError, match="unknown rule"):
        from_dict({"rules": {"nope": False}})
