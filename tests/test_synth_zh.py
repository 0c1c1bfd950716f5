"""A Chinese seed through synth gives a Chinese trace: prompts, the orchestrator's fallbacks
(subtasks, thoughts, plans, queries, answers, report), report headings and the filter's language
rule all follow the seed's language, and the report passes the validator.

The workflow runs against a small Chinese corpus (built here) with the scripted stand-in: a model
that writes junk (every fallback fires), one that writes English (every piece is refused for its
language, then the fallbacks write Chinese) and one that writes good Chinese pieces (all kept).
One end-to-end run goes through the real CLI and a real (tiny, random-weight) served model.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from oresearch_cli.agent import ResearchOptions, research
from oresearch_cli.agent.fallbacks import ObservedSource, broader_queries, content_words, fallback_answer
from oresearch_cli.agent.pieces import (
    PieceError,
    parse_answer,
    parse_step,
    parse_subtasks,
    with_citations,
    written_in,
)
from oresearch_cli.agent.prompts import phrase, phrases
from oresearch_cli.agent.workflow import ResearchResult
from oresearch_cli.filtering.config import FilterConfig
from oresearch_cli.filtering.language import primary_language, report_sample
from oresearch_cli.filtering.rules import evaluate
from oresearch_cli.filtering.scan import Item
from oresearch_cli.llm import LLMClient
from oresearch_cli.textutil import detect_language
from oresearch_cli.tools import open_toolbox
from oresearch_cli.tools.corpus import build_corpus
from oresearch_cli.trace import Plan, SubtaskAnswer, Think, analyze_report, is_valid, parse, validate
from oresearch_cli.workspace import Workspace

from conftest import REPO, ores
from standin_llm import Received, StandinLLM, ok
from synth_support import llm_config, piece_of

QUESTION = "大熊猫的栖息地和野生数量现状如何？"
# (id, title, text): the first three are about the question, the others are not.
DOCS = [
    ("habitat", "大熊猫的栖息地",
     "野生大熊猫生活在中国四川、陕西和甘肃的山区竹林中。栖息地破碎化是大熊猫面临的主要威胁。"
     "中国已经建立了六十多个自然保护区来保护大熊猫的栖息地。"),
    ("population", "大熊猫的野生数量",
     "第四次全国大熊猫调查显示，野生大熊猫的数量为一千八百六十四只，比十年前增加了百分之十七。"
     "世界自然保护联盟在二零一六年把大熊猫的等级从濒危下调为易危。"),
    ("diet", "大熊猫的食性",
     "大熊猫的食物中百分之九十九是竹子。成年大熊猫每天要花十多个小时进食，吃下十几公斤竹子。"),
    ("tea", "绿茶与健康",
     "绿茶含有丰富的茶多酚和咖啡因。适量饮茶可能有助于降低心血管疾病的风险。"),
    ("volcano", "火山",
     "火山是地壳上的裂口，岩浆、火山灰和气体从这里喷出地表。"),
]  # fmt: skip
URL = "https://zh.example.org/wiki/{}"
ZH_HEADINGS = [
    f"## {phrase('zh', k)}" for k in ("heading_introduction", "heading_conclusion", "heading_references")
]
EN_HEADINGS = [
    f"## {phrase('en', k)}" for k in ("heading_introduction", "heading_body", "heading_conclusion")
]
# What the orchestrator writes in English (up to its first placeholder): none may reach a zh trace.
EN_PHRASES = [
    text
    for key, value in phrases("en").items()
    if key.startswith(("fallback_", "heading_", "no_output")) and len(text := value.split("$")[0].strip()) > 3
]
OPTIONS = ResearchOptions(min_subtasks=2, max_subtasks=2, min_tool_calls=2, max_tool_calls=3, max_steps=4)


def write_zh_corpus(ws: Workspace, tmp: Path, name: str = "zh") -> str:
    path = tmp / f"{name}.jsonl"
    rows = [{"id": i, "title": t, "url": URL.format(i), "text": x} for i, t, x in DOCS]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    build_corpus(ws, path, name)
    return name


@pytest.fixture(scope="module")
def zh_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    tmp = tmp_path_factory.mktemp("zh")
    ws = Workspace.open(tmp / "ws")
    write_zh_corpus(ws, tmp)
    return ws


def run_zh(
    ws: Workspace, script: Any, options: ResearchOptions = OPTIONS, language: str = "zh"
) -> tuple[ResearchResult, StandinLLM]:
    with StandinLLM(script) as srv:

        async def main() -> ResearchResult:
            async with (
                open_toolbox(ws, search="local:zh", crawl="local", cache=False) as tools,
                LLMClient(llm_config(srv.url)) as llm,
            ):
                return await research(QUESTION, language, llm, tools, options, trace_id="zh1")

        return asyncio.run(main()), srv


def written_texts(trace_text: str, report: str) -> list[str]:
    """Every text of the trace that the model (or the orchestrator in its place) writes: the
    subtasks, thoughts, plans, subtask answers and the report."""
    trace = parse(trace_text)
    texts = [s.question for s in trace.subtasks] + [report]
    for subtask in trace.subtasks:
        texts += [step.text for step in subtask.steps if isinstance(step, Think | Plan | SubtaskAnswer)]
    return texts


def assert_chinese_trace(
    trace_text: str, report: str, question: str = QUESTION, language: str = "zh"
) -> None:
    problems = validate(trace_text)
    assert is_valid(problems), [p.to_dict() for p in problems]
    english = [
        t for t in written_texts(trace_text, report) if not written_in(t, "zh") or detect_language(t) != "zh"
    ]
    assert english == [], english
    assert not [t for t in EN_PHRASES if t in trace_text], [t for t in EN_PHRASES if t in trace_text]
    analysis = analyze_report(report)
    assert not analysis.missing_sections and analysis.references
    assert all(h in report for h in ZH_HEADINGS), report
    assert not any(h in report for h in EN_HEADINGS), report
    outcome = evaluate(Item("zh1", trace_text, question, language), FilterConfig())
    assert "language" not in outcome.fails, outcome.details["language"]
    assert outcome.details["language"]["report"] == "zh"


def observed_docs(trace_text: str) -> set[str]:
    """The corpus documents whose text some observation shows (a sentence of 12 characters)."""
    observations = "\n".join(o.text for o in parse(trace_text).observations)
    return {i for i, _, text in DOCS if any(s[:12] in observations for s in re.split("[。，]", text) if s)}


# -- the workflow with the stand-in --------------------------------------------------------------


def test_junk_model_every_fallback_writes_chinese(zh_ws: Workspace) -> None:
    result, _ = run_zh(zh_ws, lambda request: ok("asdf qwer zxcv ####"))
    pieces = {f.piece for f in result.failures if f.fallback}
    assert {"subtask_list", "step", "plan", "answer", "report"} <= pieces
    assert_chinese_trace(result.text, result.report)
    # The orchestrator's own queries are the question's content words, and they find its pages
    # (needs the corpus's CJK segmentation: a Chinese query used to match almost nothing).
    trace = parse(result.text)
    queries = [q for s in trace.subtasks for call in s.tool_calls for q in getattr(call, "queries", ())]
    assert queries and all("大熊猫" in q for q in queries)
    assert {"habitat", "population"} <= observed_docs(result.text)
    cited = {r.url for r in analyze_report(result.report).references}
    assert cited and cited <= {URL.format(i) for i, _, _ in DOCS[:3]}


def _question_message(request: Received) -> str:
    """The user message of the piece's prompt (a retry appends the strict prompt after it)."""
    return str(request.json()["messages"][1]["content"])


def _found(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    assert m is not None, (pattern, text)
    return m.group(1)


def _english(request: Received) -> Any:
    piece = piece_of(request)
    user = _question_message(request)
    if piece == "planner":
        return ok(
            json.dumps({"subtasks": ["Where do giant pandas live?", "How many wild pandas are there?"]})
        )
    if piece == "step":
        calls = int(_found(r"已调用工具\D*(\d+)", user))
        if calls >= 2:
            return ok(json.dumps({"thought": "The sources are enough.", "action": "answer"}))
        return ok(json.dumps({"thought": "I need facts about pandas.", "plan": "1. Search. 2. Answer.",
                              "action": "search", "queries": ["giant panda habitat"]}))  # fmt: skip
    if piece == "answer":
        return ok(
            json.dumps({"answer": "Wild giant pandas live in bamboo forests in Sichuan [1].", "sources": [1]})
        )
    return ok(json.dumps({"introduction": "This report covers pandas [1].",
                          "sections": [{"heading": "Habitat", "text": "Pandas live in Sichuan [1].", "sources": [1]}],
                          "conclusion": "Pandas are recovering [1]."}))  # fmt: skip


def test_english_pieces_for_a_chinese_question_are_refused_and_replaced_in_chinese(zh_ws: Workspace) -> None:
    result, srv = run_zh(zh_ws, _english)
    refused = phrase("zh", "not_in_language")
    failed = {f.piece for f in result.failures if f.attempt and f.reason == refused}
    assert failed == {"planner", "step", "answer", "report"}, [f.to_dict() for f in result.failures]
    # The retry tells the model, in Chinese, why its reply was refused.
    retries = [r for r in srv.chat_requests() if refused in r.last_user_text()]
    assert retries and all(len(r.json()["messages"]) == 4 for r in retries)
    assert_chinese_trace(result.text, result.report)


def _chinese(request: Received) -> Any:
    """A competent Chinese model: plain-text steps with Chinese keys, short Chinese answers."""
    piece = piece_of(request)
    user = _question_message(request)
    if piece == "planner":
        return ok(json.dumps({"子任务": ["大熊猫的栖息地", "野生大熊猫的数量变化"]}, ensure_ascii=False))
    if piece == "step":
        calls = int(_found(r"已调用工具\D*(\d+)", user))
        topic = _found(r"你的子任务：(.+)", user)
        if calls == 0:
            return ok(
                f"思考：我需要先搜索{topic}的基本事实。\n计划：1. 搜索。2. 阅读。3. 作答。\n搜索：{topic}"
            )
        if calls == 1:
            return ok(
                json.dumps(
                    {"thought": "第一个结果相关，阅读它。", "action": "阅读", "urls": [1]}, ensure_ascii=False
                )
            )
        return ok(json.dumps({"thought": "来源已经足够。", "action": "回答"}, ensure_ascii=False))
    if piece == "answer":  # 12 characters: as much as a 20-character English sentence says
        return ok(json.dumps({"answer": "大熊猫生活在竹林中。", "sources": [1]}, ensure_ascii=False))
    report = {
        "introduction": "本报告介绍大熊猫的栖息地和数量。",
        "sections": [{"heading": "栖息地与数量", "text": "大熊猫生活在四川等地的竹林中。", "sources": [1]}],
        "conclusion": "大熊猫的野生数量正在回升[1]。",
    }
    return ok(json.dumps(report, ensure_ascii=False))


def test_chinese_pieces_are_kept_as_the_model_wrote_them(zh_ws: Workspace) -> None:
    result, _ = run_zh(zh_ws, _chinese)
    assert result.failures == [], [f.to_dict() for f in result.failures]
    assert_chinese_trace(result.text, result.report)
    assert "## 栖息地与数量\n大熊猫生活在四川等地的竹林中。[1]" in result.report  # no space before [1]
    answers = [s.answer for s in parse(result.text).subtasks]
    assert all(re.fullmatch(r"大熊猫生活在竹林中。\[\d\]", a or "") for a in answers), answers
    assert "habitat" in observed_docs(result.text)


# -- the pieces and fallbacks, one by one -----------------------------------------------------------


def test_written_in_judges_chinese_by_script_links_and_urls_aside() -> None:
    assert written_in("我需要搜索 Apple Intelligence 在中国的发布时间。", "zh")
    assert written_in(
        "据[Giant Panda Survey 2015](https://www.worldwildlife.org/giant-panda-survey)，数量上升[1]。", "zh"
    )
    assert written_in("[1][2]", "zh")  # nothing to judge
    assert not written_in("I need facts about pandas in Sichuan (四川).", "zh")
    assert written_in("I need facts about pandas.", "en") and written_in(
        "任何文字", "en"
    )  # only Chinese is checked


def test_chinese_plain_text_steps_and_action_names_parse() -> None:
    step = parse_step("思考：需要数据\n计划：1. 搜索\n搜索：大熊猫 栖息地 | 大熊猫 数量", sources=[])
    assert (step.action, step.thought, step.plan, step.queries) == (
        "search", "需要数据", "1. 搜索", ["大熊猫 栖息地", "大熊猫 数量"]
    )  # fmt: skip
    urls = ["https://zh.example.org/wiki/habitat"]
    assert parse_step("想法：读第一个\n阅读：1", sources=urls).urls == urls
    assert parse_step('{"thought": "够了", "action": "回答"}', sources=[]).action == "answer"
    assert parse_step('{"思考": "读它", "行动": "阅读", "网址": [1]}', sources=urls).urls == urls


def test_short_chinese_pieces_are_long_enough() -> None:
    assert parse_answer("大熊猫主要吃竹子[1]。", 1) == "大熊猫主要吃竹子[1]。"
    with pytest.raises(PieceError, match="too short"):
        parse_answer("好的[1]。", 1)
    with pytest.raises(PieceError, match="too short"):
        parse_answer("Yes, ok [1].", 1)
    assert parse_subtasks('{"子任务": ["熊猫的食性", "熊猫的天敌", "好"]}') == ["熊猫的食性", "熊猫的天敌"]
    assert with_citations("大熊猫吃竹子。", [1, 2], 2) == "大熊猫吃竹子。[1][2]"
    assert with_citations("Pandas eat bamboo.", [1], 1) == "Pandas eat bamboo. [1]"


def test_fallback_answer_in_chinese_runs_its_cited_sentences_together() -> None:
    sources = [ObservedSource(n, t, x) for n, (_, t, x) in enumerate(DOCS, start=1)]
    answer = fallback_answer(QUESTION, sources, "zh")
    assert " " not in answer and re.search(r"。\[\d\][^\s]", answer), answer
    assert "[4]" not in answer and "[5]" not in answer  # tea and volcanoes share no word with it
    english = [ObservedSource(1, "Pandas", "Giant pandas live in Sichuan. The panda population is 1864.")]
    answer = fallback_answer("panda population Sichuan", english, "en")  # Latin sentences: spaced
    assert {s.strip() for s in answer.split(" [1]")} == {
        "",
        "The panda population is 1864.",
        "Giant pandas live in Sichuan.",
    }


def test_chinese_content_words_split_at_function_words_that_are_words() -> None:
    pytest.importorskip("rjieba")
    # 就 and 从 are function words, but not inside 就业 and 从事; a request's words are not the topic.
    assert content_words("中国的艺术生就业领域长期以来较为单一", "zh") == [
        "中国",
        "艺术生就业领域长期以来较为单一",
    ]
    assert content_words("能否给我提供一份详尽的报告，分析从事古代文学研究的学者", "zh") == [
        "从事古代文学研究",
        "学者",
    ]
    assert content_words("为什么亚马逊雨林对全球气候很重要？", "zh") == ["亚马逊雨林", "全球气候"]


def test_fallback_queries_broaden_instead_of_repeating() -> None:
    assert broader_queries(QUESTION, "zh") == ["大熊猫 栖息地 野生数量现状", "大熊猫 栖息地", "大熊猫"]
    assert broader_queries("What is it?", "en") == ["What is it?"]


def test_fallback_conclusion_without_sources_claims_no_citations() -> None:
    from oresearch_cli.agent.context import Context, Meter
    from oresearch_cli.agent.sources import SourceBook
    from oresearch_cli.agent.summarizer import fallback_report

    for lang in ("zh", "en"):
        ctx = Context(QUESTION, lang, None, None, ResearchOptions(), Meter())  # type: ignore[arg-type]
        report = fallback_report(ctx, [("子任务", phrase(lang, "no_output"))], SourceBook())
        assert phrase(lang, "fallback_conclusion_none") in report and "  " not in report
    assert set(phrases("zh")) == set(phrases("en"))


def test_chinese_headings_are_the_validators_and_the_single_model_protocols() -> None:
    from oresearch_cli.agent.protocol import system_prompt
    from oresearch_cli.trace.report import classify_heading

    kinds = {
        "introduction": "introduction",
        "body": "body",
        "conclusion": "conclusion",
        "references": "references",
    }
    for key, kind in kinds.items():
        heading = phrase("zh", f"heading_{key}")
        assert classify_heading(heading) == kind, heading
        if key != "body":  # the protocol's body sections are the model's own
            assert f"## {heading}\n" in system_prompt("zh")


# -- the filter's language rule -------------------------------------------------------------------

ZH_REPORT = (
    "## 引言\n本报告根据 [Giant Panda Population Survey](https://www.worldwildlife.org/species/giant-panda-survey-2015) "
    "和 [IUCN Red List: Ailuropoda melanoleuca](https://www.iucnredlist.org/species/712/121745669) 的数据[1][2]，"
    "分析 giant panda (Ailuropoda melanoleuca) 的 population trend。\n\n"
    "## 主要发现\n据 WWF (World Wildlife Fund) 报告 (https://www.worldwildlife.org/press-releases/giant-panda-no-longer-endangered)，"
    "野生数量为 1864 只[1]。\n\n## 结论\n数量上升[2]。\n\n## 参考文献\n"
    "[1]. https://www.worldwildlife.org/species/giant-panda - Giant Panda Survey Report\n"
    "[2]. https://www.iucnredlist.org/species/712 - IUCN Red List of Threatened Species: Ailuropoda melanoleuca\n"
)
EN_REPORT = (
    "## Introduction\nWild giant pandas live in Sichuan [1].\n\n## Findings\nThe wild population is 1864 [1].\n\n"
    "## Conclusion\nIt rose by 17 percent [1].\n\n## References\n[1]. https://zh.example.org/wiki/population - 大熊猫的野生数量\n"
)


@pytest.mark.parametrize("given", ["zh", "zh-CN", "zh_Hans", None])
def test_language_rule_zh_report_with_english_links_passes_and_english_report_fails(
    given: str | None,
) -> None:
    zh = evaluate(Item("a", ZH_REPORT, QUESTION, given), FilterConfig())
    assert "language" not in zh.fails and zh.details["language"]["report"] == "zh", zh.details["language"]
    en = evaluate(Item("b", EN_REPORT, QUESTION, given), FilterConfig())
    assert en.fails.get("language") == ["language-mismatch"], en.details["language"]


def test_report_sample_is_the_prose_of_the_body() -> None:
    span = analyze_report(ZH_REPORT).references_span
    sample = report_sample(ZH_REPORT, span)
    assert (
        "https://" not in sample
        and "Giant Panda Survey Report" not in sample
        and "IUCN Red List" not in sample
    )
    assert "野生数量为 1864 只" in sample
    assert [primary_language(c) for c in ("zh-CN", "ZH_hans", "en", None)] == ["zh", "zh", "en", ""]


def test_eval_score_task_language_is_detect_language() -> None:
    from oresearch_cli.stages.eval_score import task_language

    assert task_language(QUESTION) == "zh" and task_language("How do pandas live?") == "en"
    assert task_language("What does 道 mean in Taoism?") == "en"  # one character is not a Chinese question
    assert task_language("Anything", "zh-CN") == "zh"


# -- end to end: the CLI with a real served model ------------------------------------------------------

RECIPE = REPO / "recipes" / "synth" / "embedded-cpu.yaml"


def test_zh_seed_through_synth_with_a_real_model(tiny_server, tmp_path: Path) -> None:
    """`ores seed` + `ores synth` of a Chinese question on the tiny random-weight model: it writes
    nothing usable, so every piece is the orchestrator's, and every one of them is Chinese."""
    base_url, model_name = tiny_server
    ws_path = tmp_path / "ws"
    write_zh_corpus(Workspace.open(ws_path), tmp_path)
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["llm"]["defaults"]["json_mode"] = (
        "none"  # random weights: junk quickly, not schema-bound junk slowly
    )
    for role, cap in {"planner": 24, "worker": 24, "summarizer": 32}.items():
        recipe["llm"][role]["max_tokens"] = cap
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe))
    seeds = tmp_path / "q.jsonl"
    seeds.write_text(json.dumps({"id": "zh-panda", "question": QUESTION}, ensure_ascii=False) + "\n")
    env = {"OPENAI_BASE_URL": base_url, "ORES_LLM_MODEL": model_name}
    assert ores("seed", str(seeds), "--ws", str(ws_path), cwd=tmp_path, env=env).returncode == 0
    done = ores(
        "synth", "--ws", str(ws_path), "--config", str(config), "--search", "local:zh", "--max-subtasks", "1",
        cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ws = Workspace.open(ws_path)
    (row,) = ws.read_artifact(ws.require_latest("traces", "synth"))
    assert row["status"] == "done" and row["language"] == "zh", row["error"]
    assert row["valid"], row["problems"]
    assert_chinese_trace(row["trace"], row["report"], row["question"], row["language"])
    assert {"habitat", "population"} & observed_docs(row["trace"])
    assert set(json.loads(row["models"]).values()) == {model_name}
