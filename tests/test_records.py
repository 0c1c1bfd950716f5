"""Input readers: every format, and one precise error line for each kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oresearch_cli.errors import InputError
from oresearch_cli.records import detect_format, pick_field, read_records, write_records


def test_reads_jsonl_csv_json_parquet(tmp_path: Path) -> None:
    rows = [{"question": "What is BM25?", "id": "a"}, {"question": "Why GRPO?", "id": "b"}]
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    (tmp_path / "q.csv").write_text("id,question\na,What is BM25?\nb,Why GRPO?\n", encoding="utf-8")
    (tmp_path / "q.json").write_text(json.dumps(rows), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "q.parquet")
    for name in ("q.jsonl", "q.csv", "q.json", "q.parquet"):
        records = read_records(tmp_path / name)
        assert [r.data["question"] for r in records] == ["What is BM25?", "Why GRPO?"], name
        assert [r.data["id"] for r in records] == ["a", "b"], name
    assert read_records(tmp_path / "q.jsonl")[1].origin.endswith("q.jsonl:2")
    assert read_records(tmp_path / "q.csv")[1].origin.endswith("q.csv:3")


def test_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "ok"}\n{"question": "broken"\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.jsonl:2: not valid JSON"):
        read_records(path)


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_text('{"question": "ok"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"list\.jsonl:2: expected a JSON object"):
        read_records(path)


def test_non_utf8_names_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "gbk.jsonl"
    path.write_bytes(b'{"question": "ok"}\n' + '{"question": "中文"}\n'.encode("gbk"))
    with pytest.raises(InputError, match=r"gbk\.jsonl:2: not UTF-8 \(byte 0x[0-9a-f]{2} at column 15\)"):
        read_records(path)


def test_empty_and_blank_files(tmp_path: Path) -> None:
    for content in ("", "\n  \n"):
        path = tmp_path / "empty.jsonl"
        path.write_text(content, encoding="utf-8")
        with pytest.raises(InputError, match="empty"):
            read_records(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_records(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="is a directory"):
        read_records(tmp_path)


def test_csv_missing_field_lists_columns(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("id,text\n1,hello\n", encoding="utf-8")
    records = read_records(path)
    with pytest.raises(InputError, match=r"q\.csv:2: no field 'question' \(fields: id, text\)"):
        pick_field(records, "question", ("question",), str(path))
    assert pick_field(records, None, ("question", "text"), str(path)) == "text"


def test_csv_row_with_too_many_values(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("id,question\n1,a,b\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"q\.csv:2: more values than header columns"):
        read_records(path)


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "q.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        read_records(path)


def test_format_detection() -> None:
    assert detect_format("a.ndjson") == "jsonl"
    assert detect_format("a.jsonl.gz.parquet") == "parquet"
    assert detect_format("-") == "jsonl"
    with pytest.raises(InputError, match="--format"):
        detect_format("questions.txt")
    with pytest.raises(InputError, match="unknown input format"):
        detect_format("a.jsonl", "xml")


def test_write_records_round_trip(tmp_path: Path) -> None:
    rows = [{"id": "1", "question": "什么是光合作用?"}]
    for name in ("out.jsonl", "out.parquet"):
        write_records(rows, tmp_path / name)
        assert [r.data for r in read_records(tmp_path / name)] == rows
