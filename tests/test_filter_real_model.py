"""The LLM judge of `ores filter` through a real model over real HTTP: `ores serve` of a tiny Llama
trained in the test session to answer the judge's prompt (`judge_model_support`), one trace.

The model answers greedily (temperature 0) with the JSON object it learned, so the whole path runs
every time: the served answer parsed into six scores, the thresholds applied to them (one criterion
under its floor: a definite rejection), one logged call, and a rerun served from the cache with no
call at all. Malformed answers (re-asked, then `judge-failed`) are covered with the scripted
stand-in in test_filter_judge.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from oresearch_cli.filtering.config import load_filter_config
from oresearch_cli.filtering.judge import CRITERIA, judge_reasons
from oresearch_cli.workspace import Workspace

from conftest import ores
from filter_support import traces_file
from judge_model_support import JUDGE_MAX_CHARS, JUDGE_SCORES

# Greedy decoding (temperature 0 here wins over any ORES_JUDGE_TEMPERATURE), room for the ~140-token
# answer, and the trace cut as in the prompts the model was trained on.
CONFIG = f"""
llm:
  judge: {{temperature: 0.0, max_tokens: 200, timeout_s: 120, max_attempts: 1}}
filter:
  judge: {{max_attempts: 2, max_chars: {JUDGE_MAX_CHARS}, concurrency: 1, min_each: 4, min_overall: 6}}
"""
# The call log's status of a finished call: "ok", being renamed "done".


def _filter(tmp: Path, env: dict[str, str]) -> dict:
    done = ores(
        "filter", "t.jsonl", "--ws", "ws", "--config", "filter.yaml", "--json",
        cwd=tmp, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _calls(ws: Workspace) -> list[tuple]:
    _, rows = ws.sql("select role, model, status, trace_id from llm_calls")
    return rows


def test_the_judge_through_a_served_model(judge_server, tmp_path: Path) -> None:
    base_url, model_name = judge_server
    traces_file(tmp_path / "t.jsonl", n_good=1, broken=False)
    (tmp_path / "filter.yaml").write_text(CONFIG)
    env = {"OPENAI_BASE_URL": base_url, "ORES_JUDGE_MODEL": model_name}

    first = _filter(tmp_path, env)
    assert first["judge"] == {"model": model_name, "calls": 1, "cached": 0, "failed": 0}
    assert first["funnel"]["in"] == 1 and [s["stage"] for s in first["funnel"]["stages"]][-1] == "judge"
    ws = Workspace.open(tmp_path / "ws")
    row = pq.read_table(ws.require_latest("filtered", "filter").path).to_pylist()[0]
    reasons = json.loads(row["reasons"])
    judge = json.loads(row["details"])["judge"]
    # one logged call, to the served model under the judge role, for this trace; valid the first time
    calls = _calls(ws)
    assert [(role, model, trace_id) for role, model, _, trace_id in calls] == [("judge", model_name, "g0")]
    assert calls[0][2] == "done"
    assert judge["attempts"] == 1 and judge["error"] is None and judge["malformed"] is None

    # the scores are what the model said, parsed strictly
    scores = json.loads(row["judge_scores"])
    assert set(scores) == set(CRITERIA)
    assert all(0 <= s["score"] <= 10 and isinstance(s["reason"], str) for s in scores.values())
    assert scores == {c: {"score": float(s["score"]), "reason": s["reason"]} for c, s in JUDGE_SCORES.items()}
    assert row["judge_overall"] == round(sum(s["score"] for s in scores.values()) / len(scores), 2) == 7.17

    # the thresholds, applied to them: citation_support 3 < min_each 4, the mean 7.17 >= 6
    settings = load_filter_config(tmp_path / "filter.yaml").judge
    assert reasons == judge_reasons(scores, settings) == ["judge-low-citation_support"]
    assert row["verdict"] == "rejected"
    assert first["funnel"]["accepted"] == 0 and first["funnel"]["stages"][-1]["dropped"] == 1

    again = _filter(tmp_path, env)  # served from the cache: no call
    assert again["judge"] == {"model": model_name, "calls": 0, "cached": 1, "failed": 0}
    rerun = pq.read_table(ws.require_latest("filtered", "filter").path).to_pylist()[0]
    assert json.loads(rerun["judge_scores"]) == scores and json.loads(rerun["reasons"]) == reasons
    assert rerun["verdict"] == "rejected"
    assert _calls(ws) == []  # the rerun's own call log is empty
