"""The LLM judge through the stand-in endpoint: strict parsing, re-asks, failures, the cache."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from oresearch_cli.filtering.config import FilterConfig
from oresearch_cli.filtering.judge import CRITERIA, check_scores
from oresearch_cli.stages.filter import FilterOptions, run_filter

from filter_support import traces_file
from standin_llm import Received, StandinLLM, ok


def scores_json(score: int = 8) -> str:
    return json.dumps({c: {"score": score, "reason": f"{c} is fine"} for c in CRITERIA})


def options(url: str, **judge) -> FilterOptions:
    cfg = FilterConfig()
    if judge:
        from oresearch_cli.filtering.config import from_dict

        cfg = from_dict({"judge": judge})
    return FilterOptions(
        config=cfg,
        llm_overrides={
            "judge.model": "judge-test",
            "judge.base_url": url,
            "judge.api_key_env": "",
            "judge.max_attempts": 1,
        },
    )


def test_malformed_output_is_reasked_then_scored_and_a_rerun_is_free(tmp_path: Path) -> None:
    src = traces_file(tmp_path / "t.jsonl", n_good=2, broken=False)
    with StandinLLM() as srv:
        # first trace asked: prose, then a score out of range, then valid; second: valid at once
        srv.push(
            ok("I think it is good."),
            ok(scores_json(12)),
            ok("```json\n" + scores_json(8) + "\n```"),
            ok(scores_json(9)),
        )
        result = asyncio.run(run_filter(tmp_path / "ws", str(src), options(srv.url, concurrency=1)))
        asked = len(srv.chat_requests())
        retry = srv.chat_requests()[1].json()["messages"]
        assert asked == 4
        assert retry[-1]["role"] == "user" and "ONLY a JSON object" in retry[-1]["content"]
        assert all(r["verdict"] == "accepted" for r in result.records)
        assert sorted(r["judge_overall"] for r in result.records) == [8.0, 9.0]
        assert result.judge_calls == 4 and result.judge_cached == 0

        again = asyncio.run(run_filter(tmp_path / "ws", str(src), options(srv.url, concurrency=1)))
        assert len(srv.chat_requests()) == asked  # zero new calls
        assert again.judge_cached == 2 and again.judge_calls == 0
        assert [r["judge_scores"] for r in again.records] == [r["judge_scores"] for r in result.records]
    calls = list((tmp_path / "ws" / "artifacts" / "filter").glob("*/llm_calls.parquet"))
    assert calls  # the call log became a workspace artifact


def test_persistently_malformed_output_rejects_with_judge_failed_and_is_not_cached(tmp_path: Path) -> None:
    src = traces_file(tmp_path / "t.jsonl", n_good=1, broken=False)
    with StandinLLM(lambda request: ok('{"comprehensiveness": 5}')) as srv:
        result = asyncio.run(run_filter(tmp_path / "ws", str(src), options(srv.url)))
        assert len(srv.chat_requests()) == 3  # max_attempts
        record = result.records[0]
        assert record["verdict"] == "rejected" and json.loads(record["reasons"]) == ["judge-failed"]
        details = json.loads(record["details"])["judge"]
        assert "missing required" in details["error"] and len(details["malformed"]) == 3
        assert result.funnel.rows[-1].stage == "judge" and result.funnel.rows[-1].dropped == 1
        asyncio.run(run_filter(tmp_path / "ws", str(src), options(srv.url)))
        assert len(srv.chat_requests()) == 6  # failures are asked again


def test_scores_under_thresholds_give_one_code_per_criterion(tmp_path: Path) -> None:
    src = traces_file(tmp_path / "t.jsonl", n_good=1, broken=False)

    def script(request: Received):
        data = json.loads(scores_json(7))
        data["faithfulness"]["score"] = 2
        return ok(json.dumps(data))

    with StandinLLM(script) as srv:
        result = asyncio.run(run_filter(tmp_path / "ws", str(src), options(srv.url, min_overall=7.5)))
    reasons = json.loads(result.records[0]["reasons"])
    assert reasons == ["judge-low-faithfulness", "judge-low-overall"]
    assert json.loads(result.records[0]["judge_scores"])["faithfulness"]["score"] == 2


def test_check_scores_is_strict() -> None:
    good = json.loads(scores_json(6))
    assert check_scores(good)["depth"]["score"] == 6.0
    good["depth"]["score"] = "7"
    assert check_scores(good)["depth"]["score"] == 7.0
    for bad in (
        {**good, "depth": {"score": True, "reason": ""}},
        {**good, "depth": 5},
        {**good, "depth": {"score": -1, "reason": ""}},
        {**good, "depth": {"score": 7, "reason": "..."}},  # the prompt's example, copied
        {**good, "depth": {"score": 7, "reason": "  "}},
    ):
        try:
            check_scores(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


def test_a_judged_filter_run_named_by_id_gives_its_verdicts(tmp_path: Path) -> None:
    # A judged run has two artifacts, its verdicts and its newer call log: naming the run must
    # still find the verdicts for --explain, spotcheck --run and export --run.
    from oresearch_cli.export.hf import export_accepted
    from oresearch_cli.stages.filter import explain
    from oresearch_cli.stages.spotcheck import SpotcheckOptions, open_sample
    from oresearch_cli.workspace import Workspace

    src = traces_file(tmp_path / "t.jsonl", n_good=2, broken=False)
    with StandinLLM(lambda request: ok(scores_json(8))) as srv:
        result = asyncio.run(run_filter(tmp_path / "ws", str(src), options(srv.url)))
    ws = Workspace.open(tmp_path / "ws")
    assert {a.kind for a in ws.artifacts(run_id=result.run_id)} == {"filtered", "llm_calls"}

    assert explain(tmp_path / "ws", "g1", result.run_id)["verdict"] == "accepted"
    sample = open_sample(ws, SpotcheckOptions(n=5, filtered_run=result.run_id))
    assert sorted(sample.ids) == ["g0", "g1"] and sample.filtered_run == result.run_id
    exported = export_accepted(tmp_path / "ws", tmp_path / "out", filtered_run=result.run_id)
    assert exported.rows == 2 and exported.filtered_run == result.run_id
