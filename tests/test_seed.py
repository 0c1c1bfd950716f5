"""`ores seed`: cleaning, de-duplication, ids, languages, sampling; the library and the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oresearch_cli.errors import InputError
from oresearch_cli.records import Record
from oresearch_cli.stages.seed import (
    DROP_EMPTY,
    DROP_EXACT,
    DROP_ID,
    DROP_NEAR,
    SeedOptions,
    content_id,
    prepare_seeds,
)
from oresearch_cli.workspace import SCHEMA_VERSION, Workspace

from conftest import DRB, error_lines


def _records(rows: list[dict]) -> list[Record]:
    return [Record(row, f"t.jsonl:{i}") for i, row in enumerate(rows, start=1)]


def test_normalizes_and_drops_empties_and_duplicates() -> None:
    rows = [
        {"question": "  How do  light reactions\twork? "},
        {"question": "how do light reactions work"},  # exact after folding case and punctuation
        {"question": "   "},
        {"question": None},
        {"question": "How do the light reactions work?"},  # near: Jaccard 0.67 on 5-char shingles
        {"question": "Why does RuBisCO fix CO2 slowly?"},
    ]
    result = prepare_seeds(_records(rows), SeedOptions(near_dup_threshold=0.6), "t.jsonl")
    assert (
        prepare_seeds(_records(rows), SeedOptions(near_dup_threshold=0.7), "t").drop_counts().get(DROP_NEAR)
        is None
    )
    assert [s.question for s in result.seeds] == [
        "How do light reactions work?",
        "Why does RuBisCO fix CO2 slowly?",
    ]
    assert result.drop_counts() == {DROP_EXACT: 1, DROP_EMPTY: 2, DROP_NEAR: 1}
    near = next(d for d in result.dropped if d.reason == DROP_NEAR)
    assert near.duplicate_of == result.seeds[0].id and near.origin == "t.jsonl:5" and near.similarity >= 0.6
    assert result.n_read == 6


def test_near_dup_can_be_switched_off() -> None:
    rows = [
        {"question": "How do light reactions work?"},
        {"question": "How do the light reactions work in plants?"},
    ]
    result = prepare_seeds(_records(rows), SeedOptions(dedup_near=False), "t")
    assert len(result.seeds) == 2


def test_ids_are_kept_or_content_hashed() -> None:
    result = prepare_seeds(
        _records([{"id": 7, "q": "A?"}, {"id": 7, "q": "B?"}]), SeedOptions(field="q"), "t"
    )
    assert [s.id for s in result.seeds] == ["7"]
    assert result.dropped[0].reason == DROP_ID
    hashed = prepare_seeds(_records([{"question": "What is X?"}]), SeedOptions(), "t").seeds[0]
    assert hashed.id == content_id("what is x") == content_id("What is X?")
    assert len(hashed.id) == 16


def test_language_from_input_or_detected_and_meta_kept() -> None:
    rows = [
        {"prompt": "比较十家保险公司的增长", "topic": "Finance"},
        {"prompt": "Compare the ten largest insurers by growth", "topic": "Finance", "language": "EN"},
        {"prompt": "Quelle est la capitale de la Bourgogne et pourquoi ?", "topic": "Geo"},
    ]
    seeds = prepare_seeds(_records(rows), SeedOptions(dedup_near=False), "t").seeds
    # The language column exists in the first record's keys only for row 2; detection fills the rest.
    assert [s.language for s in seeds] == ["zh", "en", "fr"]
    assert seeds[0].meta == {"topic": "Finance"}


def test_sample_is_deterministic_and_limit_caps() -> None:
    rows = [{"question": f"Question number {i} about topic {i * 7919 % 101}?"} for i in range(40)]
    opts = SeedOptions(dedup_near=False, sample=10, sample_seed=3)
    a = prepare_seeds(_records(rows), opts, "t").seeds
    b = prepare_seeds(_records(rows), opts, "t").seeds
    c = prepare_seeds(_records(rows), SeedOptions(dedup_near=False, sample=10, sample_seed=4), "t").seeds
    assert a == b and a != c and len(a) == 10
    limited = prepare_seeds(_records(rows), SeedOptions(dedup_near=False, limit=5), "t")
    assert [s.question for s in limited.seeds] == [r["question"] for r in rows[:5]]
    assert limited.n_sampled_out == 35


def test_missing_field_names_the_columns() -> None:
    with pytest.raises(InputError, match=r"none of the fields question, prompt.*\(fields: body, id\)"):
        prepare_seeds(_records([{"id": 1, "body": "x"}]), SeedOptions(), "t")


# -- through the real CLI ---------------------------------------------------------------------


def test_deepresearch_bench_keeps_ids_and_languages(run_ores, tmp_path: Path) -> None:
    result = run_ores("seed", str(DRB / "query.jsonl"))
    assert result.returncode == 0, result.stderr
    status = run_ores("ws", "status", "--json")
    kinds = {k["kind"]: k for k in json.loads(status.stdout)["kinds"]}
    assert kinds["seeds"]["n_rows"] == 100
    assert kinds["seeds"]["breakdown"]["language"] == {"zh": 50, "en": 50}
    ws = Workspace.open(tmp_path / "ores-ws", create=False)
    _, rows = ws.sql("select id, language, json_extract_string(meta, '$.topic') from seeds order by id::int")
    assert rows[0] == ("1", "zh", "Finance & Business")
    assert rows[-1][:2] == ("100", "en")
    plain = run_ores("ws", "status")
    assert "50 zh, 50 en" in plain.stdout


def test_pipe_seed_into_seed(run_ores, tmp_path: Path) -> None:
    first = run_ores("seed", str(DRB / "query.jsonl"), "-o", "-")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == 100 and json.loads(lines[0])["id"] == "1"
    second = run_ores("seed", "-", "-o", "-", stdin=first.stdout)
    assert second.returncode == 0, second.stderr
    again = [json.loads(line) for line in second.stdout.splitlines()]
    assert [r["id"] for r in again] == [json.loads(line)["id"] for line in lines]
    assert again[0]["meta"] == {"topic": "Finance & Business"}
    assert "kept" in second.stderr and second.stderr.count("{") == 0, "stats go to stderr, records to stdout"


def test_csv_with_field_and_output_file(run_ores, tmp_path: Path) -> None:
    (tmp_path / "q.csv").write_text("qid,text\n1,What is GRPO?\n2,What is GRPO?\n3,\n", encoding="utf-8")
    result = run_ores(
        "seed", "q.csv", "--field", "text", "--id-field", "qid", "-o", "out.jsonl", "--show-dropped"
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["id"], r["question"]) for r in rows] == [("1", "What is GRPO?")]
    assert "exact-duplicate" in result.stderr and "empty" in result.stderr


def _catalog_snapshot(tmp_path: Path):
    ws = Workspace.open(tmp_path / "ores-ws", create=False)
    return [r.run_id for r in ws.runs()], ws.sql("select count(*) from seeds_all")[1]


@pytest.mark.parametrize(
    ("name", "content", "extra", "message"),
    [
        ("bad.jsonl", b'{"question": "fine"}\n{"question": \n', (), r"bad\.jsonl:2: not valid JSON"),
        (
            "q.csv",
            b"id,text\n1,hello\n",
            ("--field", "question"),
            r"q\.csv:2: no field 'question' \(fields: id, text\)",
        ),
        ("gbk.jsonl", '{"question": "中文问题"}\n'.encode("gbk"), (), r"gbk\.jsonl:1: not UTF-8"),
        ("empty.jsonl", b"", (), r"empty\.jsonl: the input is empty"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    run_ores, tmp_path: Path, name, content, extra, message
) -> None:
    assert run_ores("seed", str(DRB / "query.jsonl")).returncode == 0
    before = _catalog_snapshot(tmp_path)
    (tmp_path / name).write_bytes(content)
    result = run_ores("seed", name, *extra)
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    import re

    assert re.search(message, lines[0]), lines[0]
    assert _catalog_snapshot(tmp_path) == before


def test_workspace_path_that_is_a_file(run_ores, tmp_path: Path) -> None:
    (tmp_path / "wsfile").write_text("x")
    result = run_ores("seed", str(DRB / "query.jsonl"), "--ws", "wsfile")
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        "error: wsfile: is a file, not a workspace directory; pass --ws with a directory path"
    ]
    assert (tmp_path / "wsfile").read_text() == "x"


def test_catalog_from_a_newer_schema(run_ores, tmp_path: Path) -> None:
    assert run_ores("seed", str(DRB / "query.jsonl")).returncode == 0
    import duckdb

    con = duckdb.connect(str(tmp_path / "ores-ws" / "ores.duckdb"))
    con.execute("update meta set value = '99' where key = 'schema_version'")
    con.close()
    for args in (("seed", str(DRB / "query.jsonl")), ("ws", "status")):
        result = run_ores(*args)
        assert result.returncode == 2
        lines = error_lines(result.stderr)
        assert (
            len(lines) == 1
            and f"schema 99 is newer than this ores understands ({SCHEMA_VERSION})" in lines[0]
        )
    con = duckdb.connect(str(tmp_path / "ores-ws" / "ores.duckdb"), read_only=True)
    assert con.execute("select count(*) from runs").fetchone() == (1,)
    con.close()


def test_ws_commands(run_ores, tmp_path: Path) -> None:
    assert run_ores("ws", "status").returncode == 2  # no workspace yet
    assert run_ores("ws", "init").returncode == 0
    assert "no artifacts yet" in run_ores("ws", "status").stdout
    assert run_ores("seed", str(DRB / "query.jsonl"), "--limit", "3").returncode == 0
    runs = json.loads(run_ores("ws", "runs", "--json").stdout)
    assert len(runs) == 1 and runs[0]["n_items"] == 3 and runs[0]["status"] == "done"
    shown = json.loads(run_ores("ws", "show", runs[0]["run_id"][:-2], "--json").stdout)
    assert shown["items"] == {"done": 3} and shown["artifacts"][0]["n_rows"] == 3
    assert run_ores("ws", "export", "seeds", "-o", "s.parquet").returncode == 0
    exported = run_ores("ws", "export", "seeds", "-o", "-")
    assert len(exported.stdout.splitlines()) == 3
    rows = json.loads(run_ores("ws", "sql", "select count(*) as n from seeds", "--json").stdout)
    assert rows == [{"n": 3}]
    bad = run_ores("ws", "sql", "select * from nope")
    assert bad.returncode == 2 and len(error_lines(bad.stderr)) == 1
