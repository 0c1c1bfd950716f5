"""The LLM judge of `ores filter` through a real model over real HTTP: `ores serve` of a tiny
random-weight Llama (CI) or of the embedded SmolLM2-135M-Instruct (`-m slow`), one trace.

A 135M model may or may not write the six-criterion JSON object (the random one never does), so this asserts structure, not
wording: either valid scores were parsed and the thresholds applied to them, or the malformed
answers were asked again up to the judge's attempts and the trace rejected with `judge-failed`.
Either way every attempt is one logged call to the served model; scores, once obtained, serve a
rerun from the cache with no call at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from oresearch_cli.filtering.config import load_filter_config
from oresearch_cli.filtering.judge import CRITERIA, JUDGE_FAILED, judge_reasons
from oresearch_cli.workspace import Workspace

from conftest import ores
from filter_support import traces_file

ATTEMPTS = 2
# Two CPU cores write ~8 tokens/s: cap the answer (six scores with a few-word reason each fit in
# ~150 tokens) and the trace the judge reads, so two attempts take well under a minute.
CONFIG = f"""
llm:
  judge: {{temperature: 0.0, max_tokens: 160, timeout_s: 600, max_attempts: 1}}
filter:
  judge: {{max_attempts: {ATTEMPTS}, max_chars: 1500, concurrency: 1}}
"""


def _filter(tmp: Path, env: dict[str, str]) -> dict:
    done = ores(
        "filter", "t.jsonl", "--ws", "ws", "--config", "filter.yaml", "--json",
        cwd=tmp, env=env, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _calls(ws: Workspace) -> list[tuple]:
    _, rows = ws.sql("select role, model, status, trace_id from llm_calls")
    return rows


def test_the_judge_through_a_served_model(served_model, tmp_path: Path) -> None:
    base_url, model_name, _ = served_model
    traces_file(tmp_path / "t.jsonl", n_good=1, broken=False)
    (tmp_path / "filter.yaml").write_text(CONFIG)
    env = {"OPENAI_BASE_URL": base_url, "ORES_JUDGE_MODEL": model_name}

    first = _filter(tmp_path, env)
    assert first["judge"]["model"] == model_name
    assert first["funnel"]["in"] == 1 and [s["stage"] for s in first["funnel"]["stages"]][-1] == "judge"
    ws = Workspace.open(tmp_path / "ws")
    artifact = ws.require_latest("filtered", "filter")
    row = pq.read_table(artifact.path).to_pylist()[0]
    reasons = json.loads(row["reasons"])
    judge = json.loads(row["details"])["judge"]
    calls = _calls(ws)
    # one logged call per attempt, all to the served model under the judge role, for this trace
    assert len(calls) == judge["attempts"] == first["judge"]["calls"]
    assert {(role, model, trace_id) for role, model, _, trace_id in calls} == {("judge", model_name, "g0")}
    assert all(status == "ok" for _, _, status, _ in calls)

    if row["judge_scores"] is None:  # malformed every time: asked again, then rejected
        assert judge["attempts"] == ATTEMPTS and first["judge"]["failed"] == 1
        assert reasons == [JUDGE_FAILED] and row["verdict"] == "rejected"
        assert judge["error"].startswith("malformed output") and len(judge["malformed"]) == ATTEMPTS
        assert first["funnel"]["accepted"] == 0 and first["funnel"]["stages"][-1]["dropped"] == 1
        return

    scores = json.loads(row["judge_scores"])
    assert set(scores) == set(CRITERIA)
    assert all(0 <= s["score"] <= 10 and isinstance(s["reason"], str) for s in scores.values())
    assert row["judge_overall"] == round(sum(s["score"] for s in scores.values()) / len(scores), 2)
    settings = load_filter_config(tmp_path / "filter.yaml").judge
    assert reasons == judge_reasons(scores, settings)  # the thresholds, applied to what it said
    assert row["verdict"] == ("rejected" if reasons else "accepted")
    assert 1 <= judge["attempts"] <= ATTEMPTS and len(judge["malformed"] or []) == judge["attempts"] - 1

    again = _filter(tmp_path, env)  # served from the cache: no call
    assert again["judge"] == {"model": model_name, "calls": 0, "cached": 1, "failed": 0}
    rerun = pq.read_table(ws.require_latest("filtered", "filter").path).to_pylist()[0]
    assert json.loads(rerun["judge_scores"]) == scores and json.loads(rerun["reasons"]) == reasons
    assert _calls(ws) == []  # the rerun's own call log is empty
