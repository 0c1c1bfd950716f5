"""Each hard rule rejects its broken trace (positive) and passes the fixture trace (negative)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from oresearch_cli.agent.authorship import PIECES, authorship_of
from oresearch_cli.errors import InputError
from oresearch_cli.filtering.config import FilterConfig, from_dict, load_filter_config
from oresearch_cli.filtering.funnel import build_funnel
from oresearch_cli.filtering.rules import RULE_ORDER, RULES, Item, evaluate, run_rules
from oresearch_cli.textutil.tokens import estimate_tokens

from filter_support import QUESTION, good_trace, steps_log

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


def written(*fallback: str) -> dict:
    """`Item.authorship` of a synth trace of 12 pieces whose kinds `fallback` are fallbacks."""
    authorship = authorship_of(steps_log(fallback=fallback))
    assert authorship is not None
    return authorship.to_dict()


# rule, code, how to break the trace, settings (the fixture passes the rule under default settings)
CASES = [
    ("status", "synth-failed", None, {}, {"status": "failed", "error": "worker crashed"}),
    ("authorship", "fallback-heavy", None, {}, {"authorship": written(*PIECES)}),
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
    # status and authorship have nothing to say of a trace with no status and no steps log
    assert set(RULE_ORDER) - {"status", "authorship"} <= set(outcome.details)


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


def test_fallback_heavy_rejects_over_the_share_and_passes_at_or_below_it() -> None:
    # 12 pieces: 1 subtask list, 6 steps, 2 plans, 2 answers, 1 report (filter_support.steps_log).
    half = evaluate(item(authorship=written("step")), CFG)  # 6 of 12: not over 0.5
    assert "authorship" not in half.fails and half.passed, half.fails
    assert half.details["authorship"] == {
        "model_written": 6,
        "fallback_written": 6,
        "fallback_share": 0.5,
        "max": 0.5,
        "fallback_pieces": {"step": 6},
    }
    over = evaluate(item(authorship=written("step", "report")), CFG)  # 7 of 12
    assert over.fails["authorship"] == ["fallback-heavy"] and over.reasons == ["fallback-heavy"]
    assert evaluate(item(authorship=written()), CFG).details["authorship"]["fallback_share"] == 0.0
    # The threshold is a setting: 0.25 rejects 3 of 12 only when over it (1 + 2 = 3 is 0.25 exactly).
    quarter = from_dict({"max_fallback_share": 0.25})
    assert evaluate(item(authorship=written("subtask_list", "answer")), quarter).passed
    assert not evaluate(item(authorship=written("subtask_list", "answer", "report")), quarter).passed
    assert evaluate(item(authorship=written(*PIECES)), from_dict({"max_fallback_share": 1.0})).passed
    assert not evaluate(item(authorship=written("plan")), from_dict({"max_fallback_share": 0.0})).passed


def test_a_trace_without_a_steps_log_is_not_fallback_heavy() -> None:
    # Imported traces have no record of who wrote them: no data is not a fallback.
    for authorship in (None, {}, {"model_written": 0, "fallback_written": 0, "pieces": {}}):
        outcome = evaluate(item(authorship=authorship), from_dict({"max_fallback_share": 0.0}))
        assert outcome.passed and "authorship" not in outcome.details, outcome.fails
    report = good_trace().split("<suggested_answer>")[1].split("</suggested_answer>")[0]
    assert evaluate(item(report), CFG).passed


def test_max_fallback_share_from_yaml_env_and_flags(tmp_path) -> None:
    assert FilterConfig().max_fallback_share == 0.5
    env = {"ORES_FILTER_MAX_FALLBACK_SHARE": "0.25"}
    assert load_filter_config(None, environ=env).max_fallback_share == 0.25
    path = tmp_path / "f.yaml"
    path.write_text("filter:\n  max_fallback_share: 0.3\n")
    assert load_filter_config(path, environ=env).max_fallback_share == 0.3  # the recipe over env
    assert load_filter_config(path, {"max_fallback_share": 0.9}, environ=env).max_fallback_share == 0.9
    with pytest.raises(InputError, match=r"max_fallback_share must be between 0.0 and 1.0"):
        load_filter_config(None, environ={"ORES_FILTER_MAX_FALLBACK_SHARE": "1.5"})
    path.write_text("filter:\n  max_fallback_share: -0.1\n")
    with pytest.raises(InputError, match="max_fallback_share"):
        load_filter_config(path)


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
    assert funnel.to_dict()["authorship"] is None  # no trace has a steps log


def test_funnel_reports_the_model_written_share_of_the_input() -> None:
    from oresearch_cli.agent.authorship import total_authorship

    written = [authorship_of(steps_log(fallback=f)) for f in ((), ("step",), tuple(PIECES))] + [None]
    outcomes = run_rules(
        [item(authorship=a.to_dict() if a else None) for a in written], replace(CFG, workers=1)
    )
    funnel = build_funnel(
        [o.fails for o in outcomes],
        [False] * 4,
        [False] * 4,
        judge_ran=False,
        reasons=[o.reasons for o in outcomes if not o.passed],
        authorship=total_authorship(written),
    )
    assert {r.stage: r.dropped for r in funnel.rows}["rule authorship"] == 1
    assert funnel.reasons == {"fallback-heavy": 1} and funnel.accepted == 3
    shown = funnel.to_dict()["authorship"]
    # 12 + 6 + 0 of 36 pieces by the model; the fourth trace has no steps log
    assert (shown["model_written"], shown["fallback_written"], shown["model_share"]) == (18, 18, 0.5)
    assert (shown["traces"], shown["unrecorded"]) == (3, 1)


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


def test_a_bare_report_line_written_twice_is_not_a_loop() -> None:
    # The bare text is both the trace's one text step and its report: counted once, a line the
    # report really has twice stays under max_line_repeats (3).
    report = good_trace().split("<suggested_answer>")[1].split("</suggested_answer>")[0]
    twice = report.replace("## Conclusion", REPEAT + "\n" + REPEAT + "\n## Conclusion")
    outcome = evaluate(item(twice), CFG)
    assert outcome.details["repetition"]["max_line_repeats"] == 2
    assert "repetition" not in outcome.fails
    thrice = report.replace("## Conclusion", REPEAT * 3 + "\n## Conclusion")
    assert "repetition-loop" in evaluate(item(thrice), CFG).fails["repetition"]


LANGUAGE_TEXTS = [
    "The light-dependent reactions take place on the thylakoid membranes of chloroplasts [1].",
    "Les réactions photochimiques ont lieu dans les membranes des thylakoïdes.",
    "Die Lichtreaktionen finden an den Thylakoidmembranen statt, sagt die Quelle [2].",
    "光合作用的光反应和卡尔文循环分别产生什么？",
    "光合作用とは何ですか。カルビン回路について説明してください。",
    "광합성의 명반응은 틸라코이드 막에서 일어납니다.",
    "Световые реакции происходят на мембранах тилакоидов.",
    "WHAT DOES THE CALVIN CYCLE PRODUCE",
    "12 345 % 2024",
    "",
    "   \n",
    "¿Qué producen las reacciones dependientes de la luz?",
]


def test_batched_language_detection_equals_the_per_text_function() -> None:
    from oresearch_cli.filtering.language import batch_available, detect_languages
    from oresearch_cli.textutil import detect_language

    report = good_trace().split("<suggested_answer>")[1].split("## References")[0]
    texts = LANGUAGE_TEXTS + [report, report.upper(), report[:2000] * 3]
    assert batch_available()  # py3langid's model arrays are where the batch path expects them
    assert detect_languages(texts) == [detect_language(t) for t in texts]


def test_a_batch_of_traces_gets_the_verdicts_of_one_at_a_time() -> None:
    from oresearch_cli.filtering.rules import evaluate_batch

    texts = [good_trace(), cut_before("## Conclusion")(good_trace()), good_trace()]
    questions = [QUESTION, QUESTION, "光合作用的光反应和卡尔文循环分别产生什么？"]
    items = [
        Item(id=str(i), text=t, question=q) for i, (t, q) in enumerate(zip(texts, questions, strict=True))
    ]
    batch = evaluate_batch(items, CFG)
    single = [evaluate(i, CFG) for i in items]
    assert [o.fails for o in batch] == [o.fails for o in single]
    assert [o.details["language"] for o in batch] == [o.details["language"] for o in single]
    assert batch[2].fails["language"] == ["language-mismatch"] and batch[2].language == "zh"


def _whitespace_tokenizer(path) -> str:
    """A real tokenizer saved to `path`: one token per whitespace-separated word."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {w for w in good_trace().split()} | {"[UNK]"}
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(sorted(words))}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(str(path))
    return str(path)


def test_length_counts_with_the_target_models_tokenizer(tmp_path) -> None:
    name = _whitespace_tokenizer(tmp_path / "tok")
    report = good_trace().split("<suggested_answer>")[1].split("</suggested_answer>")[0]
    words = len(report.split())
    assert words != estimate_tokens(report)  # so the two ways of counting can be told apart
    cfg = from_dict({"tokenizer": name, "min_report_tokens": words, "workers": 1})
    [outcome] = run_rules([item()], cfg)
    assert outcome.details["length"] == {
        "report_tokens": words,
        "trace_tokens": len(good_trace().split()),
        "tokenizer": name,
    }
    assert "length" not in outcome.fails
    [short] = run_rules([item()], replace(cfg, min_report_tokens=words + 1))
    assert short.fails["length"] == ["report-too-short"]
    with pytest.raises(InputError, match="--tokenizer"):
        run_rules([item()], replace(cfg, tokenizer=str(tmp_path / "missing")))
