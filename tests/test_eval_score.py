"""`ores eval score`, the stage: RACE in reference and pointwise mode on real DRB tasks with a
scripted judge, failures counted and left out of the means, the judge cache, LLM citation cleaning
and its fallback, resume, rules-only scoring of DRB's sample reports, and the input errors.

The judge is the stand-in endpoint answering as `RaceJudge`: it finds the task in the prompt and
scores every one of its criteria (from data/deepresearch_bench) by a formula of the test's choosing.
Expected numbers are worked out here, by hand or from the raw criteria.jsonl rows, never taken
from the code under test. Stage tests call `run_score` in this process; what a user sees runs the
real CLI in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oresearch_cli.errors import InputError
from oresearch_cli.llm import load_config
from oresearch_cli.scoring.drb import DIMENSIONS, default_data_dir, load_benchmark
from oresearch_cli.stages.eval_score import ScoreOptions, ScoreSummary, run_score
from oresearch_cli.stages.eval_settings import EvalSettings
from oresearch_cli.workspace import RunStatus, Workspace

from conftest import DRB, error_lines, ores
from standin_llm import Received, Reply, StandinLLM, ok

ZH_ID, EN_ID, EN2_ID = 1, 51, 52
SAMPLE = DRB / "sample_reports_claude-3-7-sonnet.jsonl"
CLEAN_PREFIXES = ("You edit research articles", "你负责编辑调研文章")

# -- the benchmark, read straight from the shipped files ---------------------------------------------


def raw_rows() -> dict[int, dict[str, Any]]:
    path = default_data_dir() / "criteria.jsonl"
    return {row["id"]: row for row in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def prompts() -> dict[int, str]:
    path = default_data_dir() / "query.jsonl"
    return {r["id"]: r["prompt"] for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def _norm(text: str) -> str:
    return " ".join(text.split())


Pick = Callable[[int, str, int], "tuple[float, float]"]


def varied(task_id: int, dim: str, i: int) -> tuple[float, float]:
    """Different scores per criterion, so the criterion weights matter."""
    return float((3 * i + len(dim) + task_id) % 11), (7 * i + 2 + task_id) % 10 + 0.5


def other_judge(task_id: int, dim: str, i: int) -> tuple[float, float]:
    """A second judge that broadly agrees with `varied` but not exactly."""
    t, r = varied(task_id, dim, i)
    return min(10.0, t + (i % 2)), r


# Uniform scores within a dimension make each dimension mean that score whatever the criterion
# weights, so task 51 can be done by hand from its four dimension weights (comp .30, insight .33,
# instr .22, read .15), scores comp 8/6, insight 6/6, instr 9/7, read 5/5:
#   T = 2.4 + 1.98 + 1.98 + 0.75 = 7.11, R = 1.8 + 1.98 + 1.54 + 0.75 = 6.07,
#   overall 7.11 / 13.18 = 0.5395; dims 8/14, 6/12, 9/16, 5/10.
#   Pointwise (target only): overall 7.11 / 10 = 0.711; dims .8, .6, .9, .5.
HAND_51 = {
    "comprehensiveness": (8, 6),
    "insight": (6, 6),
    "instruction_following": (9, 7),
    "readability": (5, 5),
}
HAND_51_DIMS = {
    "comprehensiveness": 0.5714,
    "insight": 0.5,
    "instruction_following": 0.5625,
    "readability": 0.5,
}
HAND_51_OVERALL = 0.5395
HAND_51_POINTWISE = (
    {"comprehensiveness": 0.8, "insight": 0.6, "instruction_following": 0.9, "readability": 0.5},
    0.711,
)


def hand_then_varied(task_id: int, dim: str, i: int) -> tuple[float, float]:
    return HAND_51[dim] if task_id == EN_ID else varied(task_id, dim, i)


def expected_reference(task_id: int, pick: Pick, *, equal: bool = False) -> tuple[dict[str, float], float]:
    """RACE by the book from the raw row: criterion-weighted means, dimension-weighted totals,
    per dimension t/(t+r) and overall T/(T+R). `equal`: every criterion weighs the same (what a
    scorer that ignored the criterion weights would give)."""
    row = raw_rows()[task_id]
    t_total = r_total = 0.0
    shares = {}
    for dim in DIMENSIONS:
        crits = row["criterions"][dim]
        w = [1.0 if equal else c["weight"] for c in crits]
        scores = [pick(task_id, dim, i) for i in range(len(crits))]
        t = sum(wi * s[0] for wi, s in zip(w, scores, strict=True)) / sum(w)
        r = sum(wi * s[1] for wi, s in zip(w, scores, strict=True)) / sum(w)
        shares[dim] = t / (t + r)
        t_total += row["dimension_weight"][dim] * t
        r_total += row["dimension_weight"][dim] * r
    return shares, t_total / (t_total + r_total)


def expected_pointwise(task_id: int, pick: Pick) -> tuple[dict[str, float], float]:
    """Pointwise by the book: each dimension's criterion-weighted target mean / 10, and the
    dimension-weighted total / 10."""
    row = raw_rows()[task_id]
    dims, total = {}, 0.0
    for dim in DIMENSIONS:
        crits = row["criterions"][dim]
        w = [c["weight"] for c in crits]
        t = sum(wi * pick(task_id, dim, i)[0] for i, wi in enumerate(w)) / sum(w)
        dims[dim] = t / 10
        total += row["dimension_weight"][dim] * t
    return dims, total / 10


def r4(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in values.items()}


# -- the scripted judge ------------------------------------------------------------------------------


def first_user(request: Received) -> str:
    return next(m["content"] for m in request.json()["messages"] if m["role"] == "user")


def kind_of(request: Received) -> str:
    """clean, reference (RACE against a reference) or pointwise."""
    user = first_user(request)
    if user.startswith(CLEAN_PREFIXES):
        return "clean"
    return "reference" if "<article_1>" in user else "pointwise"


def task_of(request: Received) -> int:
    found = re.search(r"<task>\n(.*?)\n</task>", first_user(request), re.S)
    assert found, "a RACE request without a <task>"
    by_prompt = {_norm(t.prompt): t.id for t, _ in load_benchmark()}
    return by_prompt[_norm(found.group(1))]


def article_of(request: Received, tag: str) -> str:
    found = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", first_user(request), re.S)
    assert found, f"no <{tag}> in the request"
    return found.group(1)


class RaceJudge:
    """The stand-in's script: RACE replies scoring every criterion of the task with `pick`;
    `malformed` task ids get prose instead; cleaning requests are answered by `clean` (the
    article -> the reply), else echoed back unchanged."""

    def __init__(
        self,
        pick: Pick = varied,
        *,
        malformed: tuple[int, ...] = (),
        clean: Callable[[str], str] | None = None,
    ) -> None:
        self.pick = pick
        self.malformed = set(malformed)
        self.clean = clean
        self.lock = threading.Lock()
        self.log: list[tuple[str, int | None]] = []  # (kind, task id) per chat request
        self.criteria = {c.id: c for _, c in load_benchmark()}

    def __call__(self, request: Received) -> Reply:
        kind = kind_of(request)
        if kind == "clean":
            article = article_of(request, "article")
            with self.lock:
                self.log.append(("clean", None))
            return ok(self.clean(article) if self.clean else article)
        task_id = task_of(request)
        with self.lock:
            self.log.append((kind, task_id))
        if task_id in self.malformed:
            return ok("Article 1 is clearly the better one, I would say about an 8.")
        score_keys = ("article_1_score", "article_2_score") if kind == "reference" else ("target_score",)
        reply: dict[str, Any] = {}
        for dim in DIMENSIONS:
            reply[dim] = []
            for i, c in enumerate(self.criteria[task_id].criteria[dim]):
                scores = self.pick(task_id, dim, i)
                item = {"criterion": c.text, "analysis": "compared"}
                item.update({k: s for k, s in zip(score_keys, scores, strict=False)})
                reply[dim].append(item)
        return ok("```json\n" + json.dumps(reply, ensure_ascii=False) + "\n```")

    def calls(self, kind: str | None = None) -> Counter[int | None]:
        with self.lock:
            return Counter(t for k, t in self.log if kind is None or k == kind)


# -- inputs -------------------------------------------------------------------------------------------


def article(task_id: int, flavour: str = "ours") -> str:
    """A short report with citation marks and a reference list (what cleaning takes out)."""
    return (
        f"# Report {task_id} ({flavour})\n\n## Introduction\nThis {flavour} report answers task {task_id} "
        "with the numbers the sources give [1]. It weighs the main factors one by one and compares "
        "them across the years covered [2].\n\n## Findings\nThe evidence points the same way in every "
        f"source read for task {task_id} [1][2]. Costs rise, demand shifts and the outlook is mixed.\n\n"
        "## Conclusion\nThe question has a clear if hedged answer.\n\n"
        "## References\n[1]. https://example.org/a - Source A\n[2]. https://example.org/b - Source B\n"
    )


def write_reports(path: Path, ids: tuple[int, ...] = (ZH_ID, EN_ID, EN2_ID), flavour: str = "ours") -> Path:
    """DRB's submission format, {id, prompt, article}, for real tasks."""
    text = prompts()
    rows = [{"id": i, "prompt": text[i], "article": article(i, flavour)} for i in ids]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_reference(
    path: Path, ids: tuple[int, ...] = (ZH_ID, EN_ID, EN2_ID), *, with_ids: bool = True
) -> Path:
    """Reference articles as DRB's reference.jsonl has them, {prompt, article}; the ids, when
    given, are not the tasks' (`ref-N`), so only a join by prompt text, as DRB joins, finds them."""
    text = prompts()
    rows = [
        {**({"id": f"ref-{n}"} if with_ids else {}), "prompt": text[i], "article": article(i, "reference")}
        for n, i in enumerate(ids)
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def judge_config(url: str, model: str = "judge-a", **extra: Any):  # type: ignore[no-untyped-def]
    values: dict[str, Any] = {
        "judge.model": model,
        "judge.base_url": url,
        "max_attempts": 2,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "timeout_s": 10,
        "api_key_env": None,
        **extra,
    }
    return load_config(overrides=values, environ={})


def score(
    ws: Workspace,
    source: str | Path | None,
    url: str,
    *,
    model: str = "judge-a",
    on_record: Callable[[dict[str, Any]], None] | None = None,
    **options: Any,
) -> tuple[ScoreSummary, list[dict[str, Any]]]:
    """`run_score` in this process (rules cleaning unless `settings` says otherwise); returns the
    summary and the rows of the run's artifact by id."""
    options.setdefault("settings", EvalSettings(clean="rules"))
    summary = asyncio.run(
        run_score(
            ws,
            None if source is None else str(source),
            ScoreOptions(**options),
            judge_config(url, model),
            on_record=on_record,
        )
    )
    return summary, ws.read_artifact(summary.artifact)


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(r["id"]): r for r in rows}


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.open(tmp_path / "ws")


# -- RACE against a reference --------------------------------------------------------------------------


def test_reference_mode_is_drbs_arithmetic_on_real_tasks(ws: Workspace, tmp_path: Path) -> None:
    reports = write_reports(tmp_path / "reports.jsonl")
    reference = write_reference(tmp_path / "reference.jsonl")
    judge = RaceJudge(hand_then_varied)
    with StandinLLM(judge) as srv:
        summary, rows = score(ws, reports, srv.url, reference=str(reference))
        requests = srv.chat_requests()
    rows_by_id = by_id(rows)
    assert summary.n_items == summary.n_scored == 3 and summary.n_failed == 0
    assert summary.mode == "reference"
    # task 51 by hand (uniform scores per dimension)
    row = rows_by_id[str(EN_ID)]
    assert row["status"] == "done" and row["race_mode"] == "reference"
    assert round(row["race_overall"], 4) == HAND_51_OVERALL
    assert {d: round(row[f"race_{d}"], 4) for d in DIMENSIONS} == HAND_51_DIMS
    # tasks 1 (zh) and 52: scores varying per criterion, computed from the raw criteria rows
    for task_id in (ZH_ID, EN2_ID):
        row = rows_by_id[str(task_id)]
        dims, overall = expected_reference(task_id, varied)
        assert round(row["race_overall"], 4) == round(overall, 4), task_id
        # the fixture can tell: ignoring the criterion weights would give another number
        assert round(expected_reference(task_id, varied, equal=True)[1], 4) != round(overall, 4)
        assert {d: round(row[f"race_{d}"], 4) for d in DIMENSIONS} == r4(dims), task_id
        assert row["race_coverage_problems"] == 0 and row["clean"] == "rules"
        assert row["reference_clean"] == "rules" and row["judge"] == "judge-a"
    # the summary is the plain mean over the tasks, as DRB's race_result.txt
    assert summary.race is not None and summary.race.scored == 3 and summary.race.failed == 0
    mean = sum(r["race_overall"] for r in rows) / 3
    assert round(summary.race.overall, 6) == round(mean, 6)
    for dim in DIMENSIONS:
        assert round(summary.race.dimensions[dim], 6) == round(sum(r[f"race_{dim}"] for r in rows) / 3, 6)
    # one judge call per task, each seeing our cleaned article as article_1 and the reference as
    # article_2 (citation marks and reference list cut by the rule cleaner); the zh task in Chinese
    assert judge.calls() == Counter({ZH_ID: 1, EN_ID: 1, EN2_ID: 1})
    assert summary.judge_calls == 3
    for request in requests:
        first, second = article_of(request, "article_1"), article_of(request, "article_2")
        assert "(ours)" in first and "(reference)" in second
        assert "[1]" not in first and "https://example.org" not in first
        assert "https://example.org" not in second
    zh = next(r for r in requests if task_of(r) == ZH_ID)
    assert "任务" in first_user(zh)


def test_a_reference_of_prompt_and_article_rows_without_ids_is_read(ws: Workspace, tmp_path: Path) -> None:
    reports = write_reports(tmp_path / "reports.jsonl", (EN_ID,))
    reference = write_reference(tmp_path / "reference.jsonl", (EN_ID,), with_ids=False)
    with StandinLLM(RaceJudge(hand_then_varied)) as srv:
        summary, rows = score(ws, reports, srv.url, reference=str(reference))
    assert summary.mode == "reference" and round(rows[0]["race_overall"], 4) == HAND_51_OVERALL


def test_pointwise_mode_without_reference_is_the_weighted_mean_over_ten(
    ws: Workspace, tmp_path: Path
) -> None:
    reports = write_reports(tmp_path / "reports.jsonl", (EN_ID, EN2_ID))
    judge = RaceJudge(hand_then_varied)
    with StandinLLM(judge) as srv:
        summary, rows = score(ws, reports, srv.url)
    rows_by_id = by_id(rows)
    assert summary.mode == "pointwise" and {r["race_mode"] for r in rows} == {"pointwise"}
    dims, overall = HAND_51_POINTWISE
    row = rows_by_id[str(EN_ID)]
    assert round(row["race_overall"], 4) == overall
    assert {d: round(row[f"race_{d}"], 4) for d in DIMENSIONS} == dims
    dims, overall = expected_pointwise(EN2_ID, varied)
    row = rows_by_id[str(EN2_ID)]
    assert round(row["race_overall"], 4) == round(overall, 4)
    assert {d: round(row[f"race_{d}"], 4) for d in DIMENSIONS} == r4(dims)
    # no reference article reached the judge: every call was the one-article prompt
    assert set(judge.calls("pointwise")) == {EN_ID, EN2_ID} and not judge.calls("reference")
    assert summary.race is not None
    assert round(summary.race.overall, 6) == round((0.711 + overall) / 2, 6)
    # the run's config records the mode, so the board can label it
    assert ws.get_run(summary.run_id).config["mode"] == "pointwise"


def test_pointwise_is_labelled_in_the_cli_summary(tmp_path: Path) -> None:
    reports = write_reports(tmp_path / "reports.jsonl", (EN_ID,))
    with StandinLLM(RaceJudge(hand_then_varied)) as srv:
        done = ores(
            "eval", "score", str(reports), "--judge-base-url", srv.url, "--judge-model", "judge-a",
            "--clean", "rules", "--ws", str(tmp_path / "ws"), cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        as_json = ores(
            "eval", "score", str(reports), "--judge-base-url", srv.url, "--judge-model", "judge-a",
            "--clean", "rules", "--json", "--ws", str(tmp_path / "ws"), cwd=tmp_path,
        )  # fmt: skip
    assert "RACE pointwise (not comparable with DRB) overall" in done.stderr
    assert "71.10" in done.stderr  # 0.711 x 100
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    # the same config: the rerun carried the row over without judging it again
    assert data["race"]["mode"] == "pointwise" and round(data["race"]["overall"], 4) == 0.711
    assert data["judge_calls"] == 0 and data["reports"] == 1 and data["failed"] == 0


# -- failures: counted, left out of the means, never a 0 -----------------------------------------------


def test_reference_without_an_article_for_a_task_fails_that_row(ws: Workspace, tmp_path: Path) -> None:
    reports = write_reports(tmp_path / "reports.jsonl")
    reference = write_reference(tmp_path / "reference.jsonl", (ZH_ID, EN_ID))  # no task 52
    judge = RaceJudge(varied)
    with StandinLLM(judge) as srv:
        summary, rows = score(ws, reports, srv.url, reference=str(reference))
    row = by_id(rows)[str(EN2_ID)]
    assert row["status"] == "failed"
    assert "reference" in row["error"] and "no article" in row["error"]
    assert row["race_overall"] is None and row["race_mode"] == "reference"
    # never judged, and in particular never judged pointwise behind the user's back
    assert EN2_ID not in judge.calls() and not judge.calls("pointwise")
    assert summary.n_failed == 1 and summary.n_scored == 2
    assert summary.race is not None and summary.race.failed == 1 and summary.race.scored == 2
    want = (expected_reference(ZH_ID, varied)[1] + expected_reference(EN_ID, varied)[1]) / 2
    assert round(summary.race.overall, 6) == round(want, 6)


def test_malformed_judge_fails_the_row_and_the_means_skip_it(ws: Workspace, tmp_path: Path) -> None:
    reports = write_reports(tmp_path / "reports.jsonl")
    judge = RaceJudge(varied, malformed=(EN2_ID,))
    with StandinLLM(judge) as srv:
        summary, rows = score(ws, reports, srv.url)
    row = by_id(rows)[str(EN2_ID)]
    assert row["status"] == "failed" and row["error"].startswith("race: malformed output")
    assert row["race_overall"] is None and all(row[f"race_{d}"] is None for d in DIMENSIONS)
    assert row["race_attempts"] == 2 and judge.calls()[EN2_ID] == 2  # the ask and one strict re-ask
    assert summary.n_failed == 1 and summary.n_scored == 2
    assert summary.race is not None and (summary.race.scored, summary.race.failed) == (2, 1)
    scored = [expected_pointwise(t, varied) for t in (ZH_ID, EN_ID)]
    assert round(summary.race.overall, 6) == round(sum(o for _, o in scored) / 2, 6)
    for dim in DIMENSIONS:
        assert round(summary.race.dimensions[dim], 6) == round(sum(d[dim] for d, _ in scored) / 2, 6)


def test_a_judge_that_never_answers_well_fails_every_row_and_no_mean_is_made_up(
    ws: Workspace, tmp_path: Path
) -> None:
    reports = write_reports(tmp_path / "reports.jsonl", (EN_ID, EN2_ID))
    with StandinLLM(RaceJudge(malformed=(EN_ID, EN2_ID))) as srv:
        summary, rows = score(ws, reports, srv.url)
    assert summary.n_failed == 2 and summary.n_scored == 0
    assert summary.race is None  # no tasks scored: no overall at all, not 0
    assert all(r["race_overall"] is None for r in rows)


# -- the judge cache and resume -----------------------------------------------------------------------------


def test_a_new_score_run_of_the_same_reports_calls_no_judge(ws: Workspace, tmp_path: Path) -> None:
    reports = write_reports(tmp_path / "reports.jsonl")
    reference = write_reference(tmp_path / "reference.jsonl")
    # the same reports under another name: a new run (another config), nothing carried over
    again = Path(shutil.copy(reports, tmp_path / "again.jsonl"))
    with StandinLLM(RaceJudge(varied)) as srv:
        first, rows_first = score(ws, reports, srv.url, reference=str(reference))
        n_before = len(srv.chat_requests())
        second, rows_second = score(ws, again, srv.url, reference=str(reference))
        n_after = len(srv.chat_requests())
    assert n_before == 3 and n_after == n_before  # zero judge calls the second time
    assert second.run_id != first.run_id and second.judge_calls == 0 and first.judge_calls == 3
    assert ws.get_run(second.run_id).n_carried == 0
    first_by, second_by = by_id(rows_first), by_id(rows_second)
    for task in first_by:
        assert second_by[task]["race_cached"] and not first_by[task]["race_cached"]
        for key in ("race_overall", *(f"race_{d}" for d in DIMENSIONS)):
            assert second_by[task][key] == first_by[task][key]
    assert second.race == first.race


def test_a_failed_judgement_is_retried_on_rerun_and_the_successes_are_kept(
    ws: Workspace, tmp_path: Path
) -> None:
    reports = write_reports(tmp_path / "reports.jsonl")
    judge = RaceJudge(varied, malformed=(EN2_ID,))
    with StandinLLM(judge) as srv:
        first, _ = score(ws, reports, srv.url)
        assert first.n_failed == 1
        judge.malformed.clear()  # the judge behaves now
        second, rows = score(ws, reports, srv.url)
    # the rerun judged only the failed task; the others were carried from the first run as they were
    assert judge.calls() == Counter({ZH_ID: 1, EN_ID: 1, EN2_ID: 3})
    assert second.n_failed == 0 and second.n_scored == 3 and second.judge_calls == 1
    rows_by_id = by_id(rows)
    assert rows_by_id[str(EN2_ID)]["status"] == "done"
    assert not rows_by_id[str(ZH_ID)]["race_cached"]  # carried, not re-scored from the cache
    assert ws.get_run(second.run_id).n_carried == 2


def test_an_interrupted_score_run_keeps_its_rows_and_the_rerun_does_the_rest(
    ws: Workspace, tmp_path: Path
) -> None:
    reports = write_reports(tmp_path / "reports.jsonl")
    judge = RaceJudge(varied)
    seen: list[str] = []

    def stop_after_first(row: dict[str, Any]) -> None:
        seen.append(row["id"])
        raise KeyboardInterrupt  # what Ctrl-C does to the run in the middle

    with StandinLLM(judge) as srv:
        with pytest.raises(KeyboardInterrupt):
            score(
                ws,
                reports,
                srv.url,
                on_record=stop_after_first,
                settings=EvalSettings(clean="rules", judge_concurrency=1),
            )
        [interrupted] = ws.runs(stage="score")
        assert interrupted.status == RunStatus.INTERRUPTED and seen
        judged_first = judge.calls()
        summary, rows = score(ws, reports, srv.url, settings=EvalSettings(clean="rules", judge_concurrency=1))
    done_first = seen[0]
    assert judged_first[int(done_first)] == 1
    # the task finished before the interruption was not judged again
    assert judge.calls()[int(done_first)] == 1
    assert summary.n_items == 3 and summary.n_scored == 3
    assert ws.get_run(summary.run_id).n_carried == 1
    assert not by_id(rows)[done_first]["race_cached"]


# -- citations cleaned by the judge ---------------------------------------------------------------------


def _prose_of(text: str) -> str:
    """What a good cleaner returns: the article without [n] marks and the reference list."""
    body = text.split("## References")[0]
    return re.sub(r"\[\d+\]", "", body).strip()


def test_llm_cleaning_is_used_and_cached_and_garbage_falls_back_to_rules(
    ws: Workspace, tmp_path: Path
) -> None:
    reports = write_reports(tmp_path / "reports.jsonl", (EN_ID, EN2_ID))
    again = Path(shutil.copy(reports, tmp_path / "again.jsonl"))

    def cleaner(text: str) -> str:
        # task 51's cleaning comes back cut to nothing, task 52's properly
        return "Too short." if "task 51" in text else _prose_of(text)

    judge = RaceJudge(varied, clean=cleaner)
    llm = EvalSettings(clean="llm")
    with StandinLLM(judge) as srv:
        first, rows = score(ws, reports, srv.url, settings=llm)
        cleans_first = judge.calls("clean")[None]
        race_requests = [r for r in srv.chat_requests() if kind_of(r) == "pointwise"]
        second, rows_again = score(ws, again, srv.url, settings=llm)
        cleans_second = judge.calls("clean")[None] - cleans_first
    fallback, cleaned = by_id(rows)[str(EN_ID)], by_id(rows)[str(EN2_ID)]
    assert fallback["clean"] == "rules-fallback" and "characters" in fallback["clean_problem"]
    assert cleaned["clean"] == "llm" and cleaned["clean_problem"] is None
    assert fallback["status"] == cleaned["status"] == "done"  # a fallback still scores, and says so
    assert first.clean_fallbacks == 1
    assert cleans_first == 3  # 51: the ask and one re-ask, both unusable; 52: once
    # the judge read the LLM's cleaning for 52 and the rule cleaner's text for 51
    seen = {task_of(r): article_of(r, "article") for r in race_requests}
    assert seen[EN2_ID] == _prose_of(article(EN2_ID))
    assert "[1]" not in seen[EN_ID] and "Too short." not in seen[EN_ID] and "task 51" in seen[EN_ID]
    # the good cleaning is cached: the second run asks again only for the one that failed
    assert cleans_second == 2
    assert by_id(rows_again)[str(EN2_ID)]["clean"] == "llm"
    assert second.clean_fallbacks == 1 and second.judge_calls == 2


def test_cli_json_counts_clean_fallbacks(tmp_path: Path) -> None:
    reports = write_reports(tmp_path / "reports.jsonl", (EN_ID,))
    with StandinLLM(RaceJudge(varied, clean=lambda text: "x")) as srv:
        done = ores(
            "eval", "score", str(reports), "--judge-base-url", srv.url, "--judge-model", "judge-a",
            "--clean", "llm", "--json", "--ws", str(tmp_path / "ws"), cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["clean_fallbacks"] == 1 and data["scored"] == 1 and data["race"]["scored"] == 1


# -- rules only: no judge, no endpoint ------------------------------------------------------------------------


def test_rules_only_scores_drbs_sample_reports_without_an_endpoint(tmp_path: Path) -> None:
    done = ores(
        "eval", "score", str(SAMPLE), "--rules-only", "--json", "--ws", str(tmp_path / "ws"),
        cwd=tmp_path, env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},  # would fail if it were called
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["reports"] == 10 and data["scored"] == 10 and data["failed"] == 0
    assert data["race"] is None and data["judge"] is None and data["judge_calls"] == 0
    rules = data["rules"]
    assert rules["reports"] == 10 and rules["traced"] == 0
    # bare reports: no trace to count tool calls in; but every report has words and citations
    assert rules["tool_calls_mean"] is None and rules["citation_markers_total"] > 0
    assert rules["length_total"] == pytest.approx(rules["length_mean"] * 10, rel=1e-6)
    assert 0 <= rules["structure_complete_share"] <= 1 and rules["language_match_share"] == 1.0
    ws = Workspace.open(tmp_path / "ws")
    [run] = ws.runs(stage="score")
    assert run.run_id == data["run_id"] and run.n_items == 10 and run.config["rules_only"]
    assert len(ws.read_artifact(ws.artifacts(run_id=run.run_id, kind="scores")[0])) == 10


def test_rules_only_with_a_missing_field_is_one_line(tmp_path: Path) -> None:
    done = ores(
        "eval",
        "score",
        str(SAMPLE),
        "--rules-only",
        "--field",
        "nosuch",
        "--ws",
        str(tmp_path / "ws"),
        cwd=tmp_path,
    )
    assert done.returncode == 2
    [line] = error_lines(done.stderr)
    assert "'nosuch'" in line and "--field" in line and SAMPLE.name in line


# -- input errors: one line, naming the input and the fix --------------------------------------------------


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("case", "want"),
    [
        ("unknown-run", ["eval-20990101-000000-dead", "neither a file nor a run", "ores eval run"]),
        ("missing-file", ["nosuch.jsonl", "neither a file nor a run", "JSONL of reports"]),
        ("no-id", ["noid.jsonl", "row 2 has no id", "give every report the id"]),
        ("duplicate", ["dup.jsonl", "id 51 appears twice", "keep one report per task"]),
    ],
)
def test_input_errors_are_one_line(tmp_path: Path, case: str, want: list[str]) -> None:
    source = {
        "unknown-run": "eval-20990101-000000-dead",
        "missing-file": str(tmp_path / "nosuch.jsonl"),
        "no-id": str(
            _write(tmp_path / "noid.jsonl", [{"id": 1, "article": "a"}, {"prompt": "q", "article": "b"}])
        ),
        "duplicate": str(
            _write(tmp_path / "dup.jsonl", [{"id": 51, "article": "a"}, {"id": "51", "article": "b"}])
        ),
    }[case]
    done = ores("eval", "score", source, "--rules-only", "--ws", str(tmp_path / "ws"), cwd=tmp_path)
    assert done.returncode == InputError.exit_code == 2
    [line] = error_lines(done.stderr)
    assert line.startswith("error:")
    for part in want:
        assert part in line, (part, line)
    assert not Workspace.open(tmp_path / "ws").runs(stage="score")  # nothing registered


def test_no_reports_in_the_workspace_is_one_line(tmp_path: Path) -> None:
    done = ores("eval", "score", "--rules-only", "--ws", str(tmp_path / "ws"), cwd=tmp_path)
    assert done.returncode == 2
    [line] = error_lines(done.stderr)
    assert "'reports'" in line and "ores eval run" in line


def test_an_unreachable_judge_stops_before_the_run_is_registered(tmp_path: Path) -> None:
    from model_support import free_port

    reports = write_reports(tmp_path / "reports.jsonl", (EN_ID,))
    dead = f"http://127.0.0.1:{free_port()}/v1"
    done = ores(
        "eval", "score", str(reports), "--judge-base-url", dead, "--judge-model", "judge-a",
        "--ws", str(tmp_path / "ws"), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    [line] = error_lines(done.stderr)
    assert "unreachable" in line and "--judge-base-url" in line
    assert not Workspace.open(tmp_path / "ws").runs(stage="score")


def test_reference_without_articles_is_an_input_error(ws: Workspace, tmp_path: Path) -> None:
    reports = write_reports(tmp_path / "reports.jsonl", (EN_ID,))
    empty = _write(tmp_path / "empty-ref.jsonl", [{"id": 51, "prompt": prompts()[EN_ID], "article": "  "}])
    with StandinLLM(RaceJudge()) as srv, pytest.raises(InputError, match="no article in it"):
        score(ws, reports, srv.url, reference=str(empty))
    assert not ws.runs(stage="score")
