"""Hostile inputs refused up front, one line each: `-o` paths checked before any run starts, `ores
export` into a non-empty folder or a file, questions and ids of the wrong type or size, judge
thresholds off the score scale, and an LLM base URL with a query string."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from oresearch_cli.cli.common import check_output
from oresearch_cli.errors import ConfigError, InputError, OresError
from oresearch_cli.export.hf import check_export_dir
from oresearch_cli.filtering.config import SCORE_MAX, SCORE_MIN, load_filter_config
from oresearch_cli.llm.config import load_config
from oresearch_cli.llm.errors import LLMConfigError
from oresearch_cli.records import MAX_QUESTION_CHARS, Record, id_of, question_of, write_records
from oresearch_cli.stages.research_run import load_seeds
from oresearch_cli.stages.seed import SeedOptions, prepare_seeds
from oresearch_cli.workspace import Workspace

from conftest import error_lines, ores
from filter_support import traces_file

HAS_PROC = Path("/proc/self").exists()


def _one_error(result) -> str:  # noqa: ANN001 - a CompletedProcess
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _runs(ws: Path) -> list[str]:
    return sorted(r.run_id for r in Workspace.open(ws, create=False).runs())


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- -o / --output: one check, before the run ------------------------------------------------------


def test_check_output_accepts_stdout_new_and_existing_files(tmp_path: Path) -> None:
    for ok in (None, "-", tmp_path / "new.jsonl", tmp_path / "a" / "b" / "new.PARQUET", tmp_path / "x.pq"):
        check_output(ok)
    (tmp_path / "old.jsonl").write_text("{}\n")
    check_output(str(tmp_path / "old.jsonl"))
    # checking neither creates the missing folders nor leaves a probe file behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.jsonl"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("out.txt", "-o {p}: cannot write a .txt file; name a .jsonl or .parquet file, or '-' for JSONL"),
        ("out", "cannot write a file without an extension"),
        ("out.jsonl.gz", "cannot write a .gz file"),
        ("adir.jsonl", "is a directory; name a file in it"),
        ("afile.jsonl/out.jsonl", "afile.jsonl is a file, not a directory"),
        ("", "-o: the path is empty"),
    ],
)
def test_check_output_refusals(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "adir.jsonl").mkdir()
    (tmp_path / "afile.jsonl").write_text("{}\n")
    path = str(tmp_path / name) if name else ""
    with pytest.raises(InputError) as info:
        check_output(path)
    assert message.format(p=path) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not HAS_PROC, reason="needs Linux /proc")
def test_check_output_unwritable_directory() -> None:
    with pytest.raises(InputError, match=r"-o /proc/nope/out.jsonl: cannot write in /proc \(.*\); choose"):
        check_output("/proc/nope/out.jsonl")


def test_check_output_for_other_options() -> None:
    with pytest.raises(InputError, match="--export -: this option cannot write to stdout; name a .csv/.html"):
        check_output("-", "--export", (".csv", ".html"), stdout=False)
    with pytest.raises(InputError, match=r"cannot write a \.jsonl file; name a \.csv/\.html file$"):
        check_output("x.jsonl", "--export", (".csv", ".html"), stdout=False)


def test_write_records_refuses_what_check_output_refuses(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="can only write .parquet or .jsonl"):
        write_records([{"a": 1}], tmp_path / "out.json")
    write_records([{"a": 1}], tmp_path / "out.pq")
    assert (tmp_path / "out.pq").read_bytes()[:4] == b"PAR1"


def test_seed_with_a_bad_output_changes_nothing(tmp_path: Path) -> None:
    """The issue's cases: `-o out.txt` and an unwritable path used to fail after the run was committed."""
    _write(tmp_path / "q.jsonl", [{"question": "How do tides form on Earth?"}])
    assert ores("seed", "q.jsonl", "--ws", "ws", cwd=tmp_path).returncode == 0
    before = _runs(tmp_path / "ws")
    (tmp_path / "afile").write_text("x")
    bad = ["out.txt", "afile/out.jsonl", *(["/proc/nope/out.jsonl"] if HAS_PROC else [])]
    for output in bad:
        line = _one_error(ores("seed", "q.jsonl", "-o", output, "--ws", "ws", cwd=tmp_path))
        assert line.startswith(f"error: -o {output}: "), line
    assert _runs(tmp_path / "ws") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "q.jsonl", "ws"]


@pytest.mark.parametrize(
    "args",
    [
        ("filter", "t.jsonl", "--no-judge"),
        ("synth", "t.jsonl", "--model", "m"),
        ("eval", "run", "--model", "embedded"),
        ("eval", "score", "t.jsonl", "--rules-only"),
        ("ws", "export", "seeds"),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_every_output_option_is_checked_before_the_workspace(tmp_path: Path, args: tuple[str, ...]) -> None:
    (tmp_path / "t.jsonl").write_text('{"question": "q"}\n')
    line = _one_error(ores(*args, "-o", "out.csv", "--ws", "ws", cwd=tmp_path))
    assert (
        line
        == "error: -o out.csv: cannot write a .csv file; name a .jsonl or .parquet file, or '-' for JSONL on stdout"
    )
    assert not (tmp_path / "ws").exists()


def test_spotcheck_export_sheet_is_checked_first(tmp_path: Path) -> None:
    line = _one_error(ores("spotcheck", "--export", "sheet.txt", "--ws", "ws", cwd=tmp_path))
    assert line.startswith("error: --export sheet.txt: cannot write a .txt file; name a .csv/.jsonl")
    assert "'-'" not in line and not (tmp_path / "ws").exists()


# -- ores export DIR -------------------------------------------------------------------------------


def test_check_export_dir(tmp_path: Path) -> None:
    check_export_dir(tmp_path / "new" / "dir")
    (tmp_path / "empty").mkdir()
    check_export_dir(tmp_path / "empty")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(
        InputError, match=r"export .*full: the directory is not empty \(notes.txt\); .* --force"
    ):
        check_export_dir(tmp_path / "full")
    check_export_dir(tmp_path / "full", force=True)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="afile: is a file, not a directory; name a new or empty directory"):
        check_export_dir(tmp_path / "afile", force=True)
    with pytest.raises(InputError, match=r"afile is a file, not a directory; choose a path in a writable"):
        check_export_dir(tmp_path / "afile" / "out")
    if HAS_PROC:
        with pytest.raises(InputError, match=r"export /proc/nope: cannot write in /proc \("):
            check_export_dir(Path("/proc/nope"))
    assert not (tmp_path / "new").exists()


def test_export_refuses_a_non_empty_dir_and_a_file(tmp_path: Path) -> None:
    traces_file(tmp_path / "t.jsonl")
    assert ores("filter", "t.jsonl", "--no-judge", "--ws", "ws", cwd=tmp_path).returncode == 0
    before = _runs(tmp_path / "ws")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "README.md").write_text("my own card")
    line = _one_error(ores("export", "out", "--ws", "ws", cwd=tmp_path))
    assert "out: the directory is not empty (README.md)" in line and "--force" in line
    (tmp_path / "afile").write_text("x")
    line = _one_error(ores("export", "afile", "--ws", "ws", cwd=tmp_path))
    assert line == "error: export afile: is a file, not a directory; name a new or empty directory"
    assert _runs(tmp_path / "ws") == before
    assert (tmp_path / "out" / "README.md").read_text() == "my own card"
    assert (tmp_path / "afile").read_text() == "x"

    forced = ores("export", "out", "--force", "--ws", "ws", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "out" / "README.md").read_text().startswith("---\n")
    assert (tmp_path / "out" / "data" / "train-00000-of-00001.parquet").exists()


# -- questions and ids -----------------------------------------------------------------------------


def _records(rows: list[dict]) -> list[Record]:
    return [Record(row, f"q.jsonl:{i}") for i, row in enumerate(rows, start=1)]


@pytest.mark.parametrize(
    ("value", "shown"), [(42, "a number (42)"), (["a", "b"], 'a list (["a", "b"])'), ({"q": 1}, "an object")]
)
def test_a_question_that_is_not_text_is_refused(value, shown: str) -> None:
    rows = [{"question": "What drives ocean currents?"}, {"question": value}]
    with pytest.raises(InputError) as info:
        prepare_seeds(_records(rows), SeedOptions(), "q.jsonl")
    text = str(info.value)
    assert text.startswith("q.jsonl:2: the question in field 'question' is ") and "not text" in text
    assert f"is {shown}" in text


def test_ids_whole_numbers_kept_others_refused() -> None:
    rows = [{"id": 7, "question": "Why is the sky blue?"}, {"id": " q-2 ", "question": "Why is grass green?"}]
    seeds = prepare_seeds(_records(rows), SeedOptions(dedup_near=False), "q.jsonl").seeds
    assert [s.id for s in seeds] == ["7", "q-2"]
    for bad in (1.5, 2.0, True, [1], {"n": 1}):
        rows = [
            {"id": "a", "question": "Why is the sky blue?"},
            {"id": bad, "question": "Why is the sky blue?"},
        ]
        with pytest.raises(
            InputError, match=r"^q\.jsonl:2: the id in field 'id' is an? .*not a string or whole number"
        ):
            prepare_seeds(_records(rows), SeedOptions(), "q.jsonl")  # checked even on a duplicate row


def test_question_size_cap() -> None:
    at_cap = Record({"question": "x" * MAX_QUESTION_CHARS}, "q.jsonl:1")
    assert len(question_of(at_cap, "question")) == MAX_QUESTION_CHARS
    over = Record({"question": "x" * (MAX_QUESTION_CHARS + 1)}, "q.jsonl:3")
    with pytest.raises(
        InputError,
        match=r"^q\.jsonl:3: .* is 20,001 characters, over the cap of 20,000 \(MAX_QUESTION_CHARS\)",
    ):
        question_of(over, "question")
    assert id_of(Record({"qid": 3}, "x:1"), ("id", "qid")) == "3"
    assert id_of(Record({"id": ""}, "x:1"), "id") is None


def test_synth_and_eval_questions_are_checked_with_file_and_line(tmp_path: Path) -> None:
    """`ores synth FILE` and `ores eval run` read questions through `load_seeds`: same checks, and
    the error names the line of the file (a blank line included)."""
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": 1, "question": "What is RLHF?"}\n\n{"id": 2.5, "question": "What is DPO?"}\n')
    with pytest.raises(InputError, match=r"q\.jsonl:3: the id in field 'id' is a number \(2\.5\)"):
        load_seeds(None, str(path))  # type: ignore[arg-type]  # a file never needs the workspace
    _write(path, [{"id": 1, "prompt": "What is RLHF?"}, {"id": 2, "prompt": {"text": "x"}}])
    with pytest.raises(InputError, match=r"q\.jsonl:2: the question in field 'prompt' is a"):
        load_seeds(None, str(path))  # type: ignore[arg-type]
    _write(path, [{"id": 1, "prompt": "What is RLHF?"}])
    seeds, _ = load_seeds(None, str(path))  # type: ignore[arg-type]
    assert [s.id for s in seeds] == ["1"]  # DeepResearch Bench's integer ids still work


def test_seed_cli_refuses_a_huge_question_and_keeps_the_workspace(tmp_path: Path) -> None:
    _write(tmp_path / "q.jsonl", [{"question": "How do tides form on Earth?"}])
    assert ores("seed", "q.jsonl", "--ws", "ws", cwd=tmp_path).returncode == 0
    before = _runs(tmp_path / "ws")
    _write(
        tmp_path / "big.jsonl", [{"question": "fine question here"}, {"question": "y " * MAX_QUESTION_CHARS}]
    )
    line = _one_error(ores("seed", "big.jsonl", "--ws", "ws", cwd=tmp_path))
    assert line.startswith("error: big.jsonl:2: the question in field 'question' is 40,000 characters")
    assert _runs(tmp_path / "ws") == before


# -- judge thresholds ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("judge", "name"),
    [
        ({"min_overall": 50}, "min_overall"),
        ({"min_overall": math.nan}, "min_overall"),
        ({"min_each": -3}, "min_each"),
        ({"min_criterion": {"depth": 10.5}}, "min_criterion.depth"),
    ],
)
def test_judge_thresholds_outside_the_score_scale(judge: dict, name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_filter_config(None, {"judge": judge}, environ={})
    text = str(info.value)
    assert text.startswith(f"flags: filter.judge.{name} must be") and "between 0" in text and "10" in text


def test_judge_thresholds_at_the_ends_and_from_a_recipe(tmp_path: Path) -> None:
    cfg = load_filter_config(None, {"judge": {"min_overall": SCORE_MAX, "min_each": SCORE_MIN}}, environ={})
    assert (cfg.judge.min_overall, cfg.judge.min_each) == (10.0, 0.0)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("filter:\n  judge: {min_criterion: {depth: -1}}\n")
    with pytest.raises(
        ConfigError,
        match=r"r\.yaml: filter\.judge\.min_criterion\.depth must be a judge score between 0 and 10",
    ):
        load_filter_config(recipe, environ={})


def test_filter_cli_refuses_nan(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text('{"question": "q", "trace": "t"}\n')
    line = _one_error(ores("filter", "t.jsonl", "--min-overall", "nan", "--ws", "ws", cwd=tmp_path))
    assert "filter.judge.min_overall" in line and "between 0 and 10" in line and "nan" in line
    assert not (tmp_path / "ws").exists()


# -- LLM base URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "env", "where"),
    [
        ({"base_url": "http://host:8000/v1?x=1"}, {}, "flag base_url"),
        ({"worker.base_url": "http://h1/v1,http://h2/v1?key=sekrit"}, {}, "flag worker.base_url"),
        ({}, {"OPENAI_BASE_URL": "http://host/v1?api-version=2024"}, "env OPENAI_BASE_URL"),
    ],
)
def test_a_base_url_with_a_query_is_refused(overrides: dict, env: dict, where: str) -> None:
    with pytest.raises(LLMConfigError) as info:
        load_config(overrides={"model": "m", **overrides}, environ=env)
    text = str(info.value)
    assert text.startswith(f"{where}: invalid base_urls (") and "has a query string" in text
    assert "drop the query" in text and "extra_body" in text
    assert "sekrit" not in text and "x=1" not in text and "\n" not in text
    assert isinstance(info.value, OresError)


def test_synth_cli_refuses_a_base_url_with_a_query(tmp_path: Path) -> None:
    result = ores("synth", "--base-url", "http://host/v1?x=1", "--model", "m", "--ws", "ws", cwd=tmp_path)
    line = _one_error(result)
    assert "flag base_url: invalid base_urls (http://host/v1?... has a query string" in line
    assert not (tmp_path / "ws").exists()
