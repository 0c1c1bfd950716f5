"""DeepResearch Bench's FACT: statistics on fixed judgements (worked out here by hand), lenient
reading of a corpus of malformed judge replies, rule extraction and per-URL dedup, orchestration
through a scripted stand-in endpoint and a fake crawl (unreadable pages, failures, the cache), and
one run through the embedded SmolLM2 with its schema enforced."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from oresearch_cli.errors import ConfigError
from oresearch_cli.filtering.judge import JudgeCache
from oresearch_cli.llm import CallRecord, LLMClient, ReplyError, load_config
from oresearch_cli.scoring.fact import (
    LABELS,
    Cited,
    FactPair,
    FactSettings,
    FactTaskResult,
    check_extraction,
    fact_settings,
    fact_task,
    group_by_url,
    parse_extraction,
    parse_verdicts,
    report_of,
    rule_pairs,
    summarize_fact,
)
from oresearch_cli.tools.base import Page
from oresearch_cli.tools.errors import BackendConfigError, FetchError

from standin_llm import Received, Reply, ok, server_error

PHOTO, CALVIN, RIVER, GONE = (
    "https://en.wikipedia.org/wiki/Photosynthesis",
    "https://en.wikipedia.org/wiki/Calvin_cycle",
    "https://en.wikipedia.org/wiki/Amazon_River",
    "https://gone.example.org/missing",
)
REPORT = f"""# Plants and rivers

## Introduction
Photosynthesis converts light energy into chemical energy [1]. The Calvin cycle fixes carbon dioxide.[2]
Both steps take place in the chloroplast [1][2].

## Findings
- The Amazon carries more water than any other river [3].
- Chlorophyll absorbs red and blue light [1, 4]. A figure nobody can check appears here [9].
The [Calvin cycle article]({CALVIN}) explains RuBisCO.

## Conclusion
Photosynthesis converts light energy into chemical energy [1].

## References
[1]. {PHOTO} - Photosynthesis
[2]. {CALVIN} - Calvin cycle
[3]. {RIVER} - Amazon River
[4]. {GONE} - A page that no longer exists
"""
PAGES = {
    PHOTO: "Photosynthesis converts light energy into chemical energy. Chlorophyll absorbs red and blue light.",
    CALVIN: "The Calvin cycle fixes carbon dioxide in the stroma of the chloroplast, using RuBisCO.",
    RIVER: "The Nile is long. Nothing is said here about discharge.",
}


# --- statistics --------------------------------------------------------------------------------


def task(
    task_id: str, *verdicts: str | None, failed_calls: int = 0, error: str | None = None
) -> FactTaskResult:
    pairs = [FactPair(f"statement {i}", f"https://s.org/{i}", v) for i, v in enumerate(verdicts)]  # type: ignore[arg-type]
    return FactTaskResult(task_id, pairs, failed_calls=failed_calls, error=error).tally()


def test_task_counts_accuracy_and_effective_citations() -> None:
    a = task("a", "supported", "supported", "unsupported", "unknown", "supported")
    assert (a.n_pairs, a.supported, a.unsupported, a.unknown, a.failed) == (5, 3, 1, 1, 0)
    assert a.accuracy == 3 / 4 and a.effective == 3 and a.citations == 4 and a.complete
    only_unknown = task("u", "unknown", "unknown")
    assert only_unknown.accuracy is None and only_unknown.effective == 0 and only_unknown.citations == 0
    failed = task("f", "supported", None, None, failed_calls=1)
    assert failed.failed == 2 and failed.accuracy == 1.0 and not failed.complete


def test_summary_pools_accuracy_as_drb_and_leaves_failures_out() -> None:
    results = [
        task("a", "supported", "supported", "unsupported", "unknown", "supported"),  # 3 of 4
        task(
            "b", "supported", "unsupported", "unsupported", None, None, failed_calls=1
        ),  # 1 of 3, incomplete
        task("c"),  # no citations: out of the per-task averages
        FactTaskResult("d", error="extraction failed: endpoint: 500", failed_calls=1),
        task("e", "unsupported", "unsupported", "unknown"),  # 0 of 2
    ]
    summary = summarize_fact(results)
    # pooled over every judged pair of a, b and e: (3 + 1 + 0) / (4 + 3 + 2), not the mean of rates
    assert summary.accuracy == pytest.approx(4 / 9)
    assert summary.accuracy != pytest.approx((3 / 4 + 1 / 3 + 0) / 3)
    assert (summary.citations, summary.supported, summary.unknown) == (9, 4, 2)
    # per task over the complete tasks with citations, a and e: b's partial counts would undercount
    assert summary.counted == 2
    assert summary.avg_citations == pytest.approx((4 + 2) / 2)
    assert summary.effective == pytest.approx((3 + 0) / 2)
    assert (summary.tasks, summary.no_citations, summary.failed_tasks, summary.incomplete) == (5, 1, 1, 1)
    assert summary.failed_calls == 2
    lines = summary.lines()
    assert lines[:3] == ["total_citations: 3.00", "total_valid_citations: 1.50", "valid_rate: 0.4444"]
    assert "1 extraction failed" in lines[3] and "failed judge calls: 2" in lines[3]


def test_summary_of_nothing_judged_says_so_rather_than_zero() -> None:
    summary = summarize_fact([FactTaskResult("x", error="extraction failed: malformed output: empty")])
    assert summary.accuracy is None and summary.effective is None and summary.counted == 0
    assert summary.lines()[:3] == ["total_citations: n/a", "total_valid_citations: n/a", "valid_rate: n/a"]


# --- reading replies ---------------------------------------------------------------------------

S, U, K = "supported", "unsupported", "unknown"


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('{"verdicts": ["supported", "unsupported", "unknown"]}', [S, U, K]),
        ('Sure, here it is:\n```json\n{"verdicts": ["Supported", "UNSUPPORTED", "unknown"]}\n```\nDone.', [S, U, K]),
        # DRB's own shape, out of order, with a 1-based idx
        ('[{"idx": 3, "result": "unknown"}, {"idx": 1, "result": "supported"}, {"idx": 2, "result": "Not supported"}]', [S, U, K]),
        ('{"results": [{"index": "1", "verdict": "partially supported"}, {"index": "2", "verdict": "unsupported"}, {"index": "3", "verdict": "unknown"}]}', [S, U, K]),
        ("1. Supported\n2. Not supported\n3. unknown", [S, U, K]),
        ("Here are my verdicts:\n**1**: supported, the page says so.\n**2**: unsupported\n**3**: Unknown", [S, U, K]),
        ("Statement 1: supported\nStatement 2 - unsupported\n- 3. unknown", [S, U, K]),
        ("supported\nunsupported\nunknown", [S, U, K]),
        ("<think>1. unknown 2. unknown</think>\n1) supported\n2) unsupported\n3) unknown", [S, U, K]),
    ],
)  # fmt: skip
def test_verdict_replies_are_read_leniently(reply: str, expected: list[str]) -> None:
    assert parse_verdicts(reply, 3) == expected


@pytest.mark.parametrize(
    "reply, reason",
    [
        ('{"verdicts": ["supported", "unsupported"]}', "2 verdict(s) for 3"),
        ('[{"idx": 1, "result": "supported"}, {"idx": 2}, {"idx": 3, "result": "unknown"}]', "entry 2 has no result"),
        ("1. supported\n3. unknown", "no verdict for statement(s) 2"),
        ("1. supported\n2. supported\n3. unknown\n4. supported", "statement(s) 4, but there are 3"),
        ('{"verdicts": ["maybe", "yes", "no"]}', "'maybe' is not supported"),
        ("1. <supported, unsupported or unknown>\n2. <supported, unsupported or unknown>\n3. <x>", "no verdict"),
        ("The statements look mostly fine to me.", "holds no verdict"),
        ("", "empty"),
    ],
)  # fmt: skip
def test_unusable_verdict_replies_say_why(reply: str, reason: str) -> None:
    with pytest.raises(ReplyError) as caught:
        parse_verdicts(reply, 3)
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    "reply, expected",
    [
        (f'{{"citations": [{{"statement": "Chlorophyll absorbs light", "url": "{PHOTO}"}}]}}', [("Chlorophyll absorbs light", PHOTO, None)]),
        (f'Here you go!\n```json\n{{"citations": [{{"statement": "A", "url": "{PHOTO}"}}, {{"statement": "B", "url": "{CALVIN}"}}]}}\n```', [("A", PHOTO, None), ("B", CALVIN, None)]),
        (f'[{{"fact": "Rivers flow", "ref_idx": "3", "url": "{RIVER}"}}]', [("Rivers flow", RIVER, 3)]),
        ('{"citations": [{"statement": "Cycle fixes CO2", "ref_idx": 2}]}', [("Cycle fixes CO2", None, 2)]),
        (f'[["Cycle fixes CO2", "{CALVIN}"]]', [("Cycle fixes CO2", CALVIN, None)]),
        (f"1. Light becomes energy [1] ||| {PHOTO}\n2) The cycle fixes CO2 ||| <{CALVIN}>", [("Light becomes energy [1]", PHOTO, None), ("The cycle fixes CO2", CALVIN, None)]),
        (f"Sure:\n- The Amazon is large - {RIVER}.\nThat is all.", [("The Amazon is large", RIVER, None)]),
        (f'{{"statement": "Just one", "link": "{PHOTO}"}}', [("Just one", PHOTO, None)]),
        ('{"citations": [{"statement": "Cycle fixes CO2", "url": "[2]"}]}', [("Cycle fixes CO2", None, 2)]),
        ("NONE", []),
        ('{"citations": []}', []),
    ],
)  # fmt: skip
def test_extraction_replies_are_read_leniently(reply: str, expected: list[tuple[Any, ...]]) -> None:
    assert parse_extraction(reply) == [Cited(*e) for e in expected]


@pytest.mark.parametrize(
    "reply", ["I read the report carefully and it is good.", "", '{"summary": "no list here"}']
)
def test_extraction_replies_without_citations_are_unusable(reply: str) -> None:
    with pytest.raises(ReplyError):
        parse_extraction(reply)


def test_extracted_pairs_must_name_the_reports_urls() -> None:
    urls, refs = [PHOTO, CALVIN, RIVER], {1: PHOTO, 2: CALVIN, 3: RIVER}
    cited = [
        Cited(
            "Light [1] becomes [energy](https://x.org/e)", "http://www.en.wikipedia.org/wiki/Photosynthesis/"
        ),
        Cited("Cycle", None, 2),  # no URL: the reference number resolves it
        Cited("Invented", "https://invented.example.com/page"),  # not in the report: dropped
        Cited("   ", PHOTO),  # no statement: dropped
        Cited("Missing field", None),  # neither: dropped
    ]
    pairs, dropped = check_extraction(cited, urls, refs)
    assert pairs == [("Light becomes energy", PHOTO), ("Cycle", CALVIN)] and dropped == 3
    with pytest.raises(ReplyError, match="none of the 2 citation"):
        check_extraction([Cited("Invented", "https://invented.example.com/"), Cited("x", None)], urls, refs)
    assert check_extraction([], urls, refs) == ([], 0)


# --- rule extraction and dedup -----------------------------------------------------------------


def test_rule_extraction_pairs_each_markers_sentence_with_its_reference() -> None:
    found = rule_pairs(REPORT)
    light = "Photosynthesis converts light energy into chemical energy."
    assert found.pairs == [
        (light, PHOTO),
        ("The Calvin cycle fixes carbon dioxide.", CALVIN),
        ("Both steps take place in the chloroplast.", PHOTO),
        ("Both steps take place in the chloroplast.", CALVIN),
        ("The Amazon carries more water than any other river.", RIVER),
        ("Chlorophyll absorbs red and blue light.", PHOTO),
        ("Chlorophyll absorbs red and blue light.", GONE),
        ("The Calvin cycle article explains RuBisCO.", CALVIN),  # a Markdown link in the text
        (light, PHOTO),  # the conclusion repeats it: deduplicated later, per URL
    ]
    assert found.unresolved == 1  # [9] has no reference entry
    assert rule_pairs("No citations at all.\n").pairs == []


def test_report_of_a_trace_is_its_suggested_answer() -> None:
    trace = f"<subtask_list>1. a</subtask_list>\n<suggested_answer>{REPORT}</suggested_answer>"
    assert report_of(trace).strip() == REPORT.strip() and report_of(REPORT) == REPORT


def test_dedup_is_per_page_and_per_statement() -> None:
    groups, duplicates = group_by_url(
        [
            ("Light becomes energy.", PHOTO),
            ("light  becomes ENERGY.", "http://www.en.wikipedia.org/wiki/Photosynthesis/"),  # same pair
            ("Light becomes energy.", CALVIN),  # same statement, another page: kept
            ("Chlorophyll is green.", PHOTO + "#History"),  # same page
        ]
    )
    assert duplicates == 1
    assert [(g.url, g.statements) for g in groups] == [
        (PHOTO, ["Light becomes energy.", "Chlorophyll is green."]),
        (CALVIN, ["Light becomes energy."]),
    ]


def test_settings_errors_are_one_clear_line() -> None:
    with pytest.raises(ConfigError, match="extractor 'llm' is not one of judge, rules"):
        FactSettings(extractor="llm")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_page_chars must be a whole number >= 1, got 0"):
        FactSettings(max_page_chars=0)
    with pytest.raises(ConfigError, match="fact.max_pages is not a fact setting"):
        fact_settings({"max_pages": 3})
    assert fact_settings({"extractor": "rules", "max_statements": 5}) == FactSettings(
        "rules", max_statements=5
    )


# --- orchestration through a stand-in endpoint -------------------------------------------------


class FakeCrawl:
    """Pages by URL; a URL not in `pages` cannot be fetched. Counts fetches per URL."""

    def __init__(self, pages: dict[str, str]) -> None:
        self.pages = pages
        self.fetched: list[str] = []

    async def crawl(self, url: str) -> Page:
        self.fetched.append(url)
        if url not in self.pages:
            raise FetchError(f"{url}: 404 Not Found")
        return Page(url=url, title="Title", text=self.pages[url])


class Calls(list[CallRecord]):
    """A recorder: every call the client made, for checking role and trace id."""


def kind(request: Received) -> str:
    system = request.json()["messages"][0]["content"]
    return "extract" if "list each statement" in system else "verdict"


def statements_of(request: Received) -> list[str]:
    text = request.json()["messages"][1]["content"]
    block = text.split("Statements that cite this page:\n", 1)[1].split("\n\n", 1)[0]
    return [line.split(". ", 1)[1] for line in block.splitlines()]


def page_of(request: Received) -> str:
    return request.json()["messages"][1]["content"].split("<reference>\n", 1)[1].split("\n</reference>", 1)[0]


def honest(request: Received) -> Reply:
    """A judge that extracts by the rules' reading and calls a statement supported when the page
    contains its words."""
    if kind(request) == "extract":
        lines = [f"{s} ||| {u}" for s, u in rule_pairs(REPORT).pairs]
        return ok("Here are the citations:\n" + "\n".join(lines))
    page = page_of(request).lower()
    verdicts = [S if s.rstrip(".").lower() in page else U for s in statements_of(request)]
    return ok("\n".join(f"{i}. {v}" for i, v in enumerate(verdicts, start=1)))


def judge_client(url: str, calls: list[CallRecord] | None = None, **overrides: Any) -> LLMClient:
    values = {
        "judge.base_url": url, "judge.model": "standin-judge", "api_key_env": None, "max_attempts": 1,
        "backoff_base_s": 0.01, "backoff_max_s": 0.02, "timeout_s": 5, **overrides,
    }  # fmt: skip
    return LLMClient(load_config(overrides=values, environ={}, require=["judge"]), calls)  # type: ignore[arg-type]


def run_task(
    url: str,
    crawl: FakeCrawl,
    cache: JudgeCache,
    settings: FactSettings,
    calls: list[CallRecord] | None = None,
    report: str = REPORT,
    **overrides: Any,
) -> FactTaskResult:
    async def go() -> FactTaskResult:
        async with judge_client(url, calls, **overrides) as llm:
            return await fact_task(
                llm, crawl, "t1", "How do plants work?", report, settings=settings, cache=cache
            )

    return asyncio.run(go())


@pytest.fixture
def cache(tmp_path: Path):
    cache = JudgeCache(tmp_path / "cache" / "judge.sqlite")
    yield cache
    cache.close()


def verdicts_by_statement(result: FactTaskResult) -> dict[tuple[str, str], str | None]:
    return {(p.statement, p.url): p.verdict for p in result.pairs}


@pytest.mark.parametrize("extractor", ["judge", "rules"])
def test_a_task_end_to_end_then_from_the_cache(cache: JudgeCache, extractor: str) -> None:
    from standin_llm import StandinLLM

    crawl = FakeCrawl(PAGES)
    calls = Calls()
    settings = FactSettings(extractor=extractor)  # type: ignore[arg-type]
    with StandinLLM(honest) as srv:
        result = run_task(srv.url, crawl, cache, settings, calls)
        requests = srv.chat_requests()
        verdicts = [r for r in requests if kind(r) == "verdict"]
        # one extraction call (none for the rules), one verdict call per readable page
        assert len(requests) - len(verdicts) == (extractor == "judge") and len(verdicts) == 3
        assert sorted(crawl.fetched) == sorted([PHOTO, CALVIN, RIVER, GONE])  # each page once
        assert {c.role for c in calls} == {"judge"} and {c.trace_id for c in calls} == {"t1"}
        # a page's statements are judged together, each once
        photo = next(r for r in verdicts if "Photosynthesis converts" in page_of(r))
        assert statements_of(photo) == [
            "Photosynthesis converts light energy into chemical energy.",
            "Both steps take place in the chloroplast.",
            "Chlorophyll absorbs red and blue light.",
        ]
        assert all("response_format" not in r.json() for r in requests)  # json_mode none: plain lines
        assert result.extractor == extractor and result.error is None
        assert (result.n_pairs, result.duplicates, result.pages, result.unreadable) == (8, 1, 4, 1)
        got = verdicts_by_statement(result)
        assert got[("Chlorophyll absorbs red and blue light.", GONE)] == K  # unreadable: unknown, no call
        assert got[("The Amazon carries more water than any other river.", RIVER)] == U
        assert got[("Both steps take place in the chloroplast.", CALVIN)] == U
        assert (result.supported, result.unsupported, result.unknown, result.failed) == (3, 4, 1, 0)
        assert result.accuracy == pytest.approx(3 / 7) and result.effective == 3
        assert result.calls == len(requests) and result.failed_calls == 0 and result.cached == 0
        assert result.unresolved == (1 if extractor == "rules" else 0)
        unknown = next(p for p in result.pairs if p.url == GONE)
        assert unknown.note is not None and unknown.note.startswith("page: ") and "404" in unknown.note

        again = run_task(srv.url, FakeCrawl(PAGES), cache, settings)
        assert len(srv.chat_requests()) == len(requests)  # a rerun asks the judge nothing
        assert again.calls == 0 and again.cached == 3 + (extractor == "judge")
        assert verdicts_by_statement(again) == got and again.accuracy == result.accuracy


def test_malformed_replies_are_asked_again_once_then_counted_as_failures(cache: JudgeCache) -> None:
    from standin_llm import StandinLLM

    def script(request: Received) -> Reply:
        page = page_of(request)
        n = len(statements_of(request))
        if "Calvin" in page:  # prose first, then a usable answer
            if "not usable" in request.json()["messages"][-1]["content"]:
                return ok(json.dumps({"verdicts": ["Supported"] * n}))
            return ok("These statements all seem right to me.")
        if "Nile" in page:  # never usable
            return ok("I cannot tell.")
        return ok("\n".join(f"{i}. supported" for i in range(1, n + 1)))

    with StandinLLM(script) as srv:
        result = run_task(srv.url, FakeCrawl(PAGES), cache, FactSettings(extractor="rules"))
        reasked = [r for r in srv.chat_requests() if "not usable" in r.json()["messages"][-1]["content"]]
        assert len(reasked) == 2  # Calvin's once, the river's once: max_attempts 2 in all
        assert "no verdict" in reasked[0].json()["messages"][-1]["content"]
    river = [p for p in result.pairs if p.url == RIVER]
    assert [p.verdict for p in river] == [None] and river[0].note is not None
    assert river[0].note.startswith("judge: malformed output:")
    assert result.failed == 1 and result.failed_calls == 1 and result.calls == 5
    assert (result.supported, result.unsupported, result.unknown) == (6, 0, 1)
    assert result.accuracy == 1.0  # the failed pair is neither supported nor unsupported
    assert summarize_fact([result]).counted == 0  # an incomplete task is not a per-task average
    # the failure is not cached: a rerun asks again for the river only
    with StandinLLM(lambda r: ok("1. unsupported")) as srv:
        again = run_task(srv.url, FakeCrawl(PAGES), cache, FactSettings(extractor="rules"))
        assert len(srv.chat_requests()) == 1 and again.failed_calls == 0 and again.unsupported == 1


def test_judge_endpoint_failures_are_counted_never_a_verdict(cache: JudgeCache) -> None:
    from standin_llm import StandinLLM

    with StandinLLM(lambda r: server_error(503) if "Nile" in page_of(r) else honest(r)) as srv:
        result = run_task(srv.url, FakeCrawl(PAGES), cache, FactSettings(extractor="rules"))
    river = next(p for p in result.pairs if p.url == RIVER)
    assert river.verdict is None and river.note is not None and river.note.startswith("judge: endpoint:")
    assert result.failed_calls == 1 and result.failed == 1 and result.error is None
    assert result.supported + result.unsupported + result.unknown + result.failed == result.n_pairs

    with StandinLLM(lambda r: server_error(500)) as srv:
        failed = run_task(srv.url, FakeCrawl(PAGES), cache, FactSettings())
    assert failed.error is not None and failed.error.startswith("extraction failed: endpoint:")
    assert failed.pairs == [] and failed.failed_calls == 1
    assert summarize_fact([failed]).failed_tasks == 1


def test_invented_urls_are_asked_again_and_a_report_without_urls_needs_no_call(cache: JudgeCache) -> None:
    from standin_llm import StandinLLM

    replies = iter(
        [ok("Photosynthesis is great ||| https://invented.example.com/a"), ok(f"Photosynthesis ||| {PHOTO}")]
    )
    with StandinLLM(lambda r: next(replies) if kind(r) == "extract" else honest(r)) as srv:
        result = run_task(srv.url, FakeCrawl(PAGES), cache, FactSettings())
        extract = [r for r in srv.chat_requests() if kind(r) == "extract"]
        assert len(extract) == 2 and "URL from the report" in extract[1].json()["messages"][-1]["content"]
    assert [(p.statement, p.url) for p in result.pairs] == [("Photosynthesis", PHOTO)]

    with StandinLLM(lambda r: pytest.fail("no call for a report that cites nothing")) as srv:
        bare = run_task(srv.url, FakeCrawl({}), cache, FactSettings(), report="Plants are green.\n")
    assert bare.pairs == [] and bare.error is None and bare.calls == 0
    assert summarize_fact([bare]).no_citations == 1


def test_an_enforcing_endpoint_gets_the_schema_and_a_json_ask(cache: JudgeCache) -> None:
    from standin_llm import StandinLLM

    def script(request: Received) -> Reply:
        if kind(request) == "extract":
            return ok(json.dumps({"citations": [{"statement": "Chlorophyll absorbs light", "url": PHOTO}]}))
        return ok(json.dumps({"verdicts": ["supported"]}))

    with StandinLLM(script) as srv:
        result = run_task(
            srv.url, FakeCrawl(PAGES), cache, FactSettings(), **{"judge.json_mode": "json_schema"}
        )
        extract, verdict = (r.json() for r in srv.chat_requests())
    schema = extract["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["citations"]["items"]["properties"]["url"]["enum"] == [
        PHOTO,
        CALVIN,
        RIVER,
        GONE,
    ]
    assert '{"citations": [' in extract["messages"][1]["content"]
    labels = verdict["response_format"]["json_schema"]["schema"]["properties"]["verdicts"]
    assert (labels["minItems"], labels["maxItems"], labels["items"]["enum"]) == (1, 1, list(LABELS))
    assert result.supported == 1 and result.accuracy == 1.0


def test_a_page_is_judged_in_chunks_and_a_missing_crawl_backend_is_the_users_to_fix(
    cache: JudgeCache,
) -> None:
    from standin_llm import StandinLLM

    with StandinLLM(honest) as srv:
        result = run_task(srv.url, FakeCrawl(PAGES), cache, FactSettings(extractor="rules", max_statements=1))
        # one call per statement of a readable page: 3 of the photosynthesis page, 3 of Calvin's, 1
        assert len(srv.chat_requests()) == 7 and all(len(statements_of(r)) == 1 for r in srv.chat_requests())
    assert result.calls == 7 and result.supported == 3

    class NoBackend:
        async def crawl(self, url: str) -> Page:
            raise BackendConfigError("web_search is not available: no crawl backend; pass --crawl")

    with StandinLLM(honest) as srv, pytest.raises(BackendConfigError):
        run_task(srv.url, NoBackend(), cache, FactSettings(extractor="rules"))  # type: ignore[arg-type]


def test_a_chinese_task_is_judged_with_chinese_prompts_and_rows_are_json(cache: JudgeCache) -> None:
    from standin_llm import StandinLLM

    report = f"## 引言\n光合作用把光能转化为化学能[1]。卡尔文循环固定二氧化碳[2]。\n\n## 参考文献\n[1] {PHOTO}\n[2] {CALVIN}\n"
    with StandinLLM(lambda r: ok("1. supported")) as srv:

        async def go() -> FactTaskResult:
            async with judge_client(srv.url) as llm:
                return await fact_task(
                    llm,
                    FakeCrawl(PAGES),
                    3,
                    "光合作用如何工作？",
                    report,
                    settings=FactSettings("rules"),
                    cache=cache,
                )

        result = asyncio.run(go())
        prompts = [r.json()["messages"][1]["content"] for r in srv.chat_requests()]
    assert len(prompts) == 2 and all("引用该网页的陈述" in p for p in prompts)
    assert [(p.statement, p.verdict) for p in result.pairs] == [
        ("光合作用把光能转化为化学能。", "supported"),
        ("卡尔文循环固定二氧化碳。", "supported"),
    ]
    row = json.loads(json.dumps(result.to_row(), ensure_ascii=False))
    assert (row["id"], row["n_pairs"], row["accuracy"], row["extractor"]) == (3, 2, 1.0, "rules")
    assert row["pairs"][0]["verdict"] == "supported"


# --- the real embedded model -------------------------------------------------------------------


def test_fact_through_the_embedded_model(embedded_server: tuple[str, str], tmp_path: Path) -> None:
    """The embedded SmolLM2 as judge, its schema enforced while decoding, pages from a local corpus
    (offline): every pair gets one of the three labels or is counted failed, the counts add up,
    and a rerun is answered from the cache without a call. The model's quality is not judged."""
    from oresearch_cli.tools import open_toolbox
    from oresearch_cli.tools.corpus import build_corpus
    from oresearch_cli.workspace import Workspace

    base_url, model_name = embedded_server
    ws = Workspace.open(tmp_path / "ws")
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": str(i), "title": url.rsplit("/", 1)[1], "url": url, "text": text}) + "\n"
                            for i, (url, text) in enumerate(PAGES.items())))  # fmt: skip
    build_corpus(ws, docs, "facts")
    config = load_config(
        None,
        {"judge.base_url": base_url, "judge.model": model_name, "judge.api_key_env": "",
         "judge.temperature": 0.0, "judge.max_tokens": 120, "judge.json_mode": "json_schema"},
        require=["judge"],
    )  # fmt: skip
    report = (
        "## Introduction\nPhotosynthesis converts light energy into chemical energy [1]. "
        "The Calvin cycle fixes carbon dioxide [2]. Chlorophyll absorbs light [1][3].\n\n"
        f"## Conclusion\nPlants matter.\n\n## References\n[1] {PHOTO}\n[2] {CALVIN}\n[3] {GONE}\n"
    )
    cache = JudgeCache.for_workspace(ws)

    async def twice(settings: FactSettings) -> tuple[FactTaskResult, FactTaskResult, int, int]:
        async with LLMClient(config) as llm, open_toolbox(ws, search="local:facts", crawl="local") as tools:
            question = "How do plants make energy?"
            first = await fact_task(llm, tools, 7, question, report, settings=settings, cache=cache)
            made = llm.totals.calls
            again = await fact_task(llm, tools, 7, question, report, settings=settings, cache=cache)
            return first, again, made, llm.totals.calls

    def check(first: FactTaskResult, again: FactTaskResult, made: int, total: int) -> None:
        assert all(p.verdict in LABELS or (p.verdict is None and p.note) for p in first.pairs)
        assert first.supported + first.unsupported + first.unknown + first.failed == first.n_pairs
        assert all(p.verdict == "unknown" for p in first.pairs if p.url == GONE)
        assert first.calls == made and total == made + again.calls
        assert [p.verdict for p in again.pairs] == [p.verdict for p in first.pairs]

    try:
        rules = asyncio.run(twice(FactSettings(extractor="rules", max_page_chars=1500, concurrency=1)))
        check(*rules)
        first, again, made, total = rules
        assert first.n_pairs == 4 and first.pages == 3 and first.unreadable == 1
        assert first.failed == 0, [p.note for p in first.pairs]  # the schema holds the model to the labels
        assert 2 <= made <= 4 and first.failed_calls == 0
        assert again.calls == 0 and again.cached == 2 and total == made
        # DRB's way: the model extracts the pairs itself (URLs held to the report's by the schema)
        judged = asyncio.run(
            twice(FactSettings(max_page_chars=1500, max_pairs=2, max_statement_chars=80, concurrency=1))
        )
        check(*judged)
        first, again, made, total = judged
        assert first.extractor == "judge" and {p.url for p in first.pairs} <= {PHOTO, CALVIN, GONE}
        if first.error is None and first.failed_calls == 0:
            assert again.calls == 0 and total == made  # all from the cache
        else:  # a failure is counted, and not cached: the rerun asks again
            assert first.failed_calls >= 1 and again.calls >= 1
    finally:
        cache.close()
