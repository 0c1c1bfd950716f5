"""Reading and writing the record files every stage exchanges: JSONL, JSON, CSV, Parquet, stdin.

Readers report a bad input as one `InputError` line naming the file and line and the fix, and
never yield half of a broken file: callers can read first and touch the workspace only after.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from oresearch_cli.errors import InputError

STDIN = "-"
FORMATS = ("jsonl", "json", "csv", "tsv", "parquet")
# What `write_records` (every command's `-o FILE`) writes, by the file name's last suffix.
OUTPUT_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
# The longest question (in characters, as read) a seeds or questions file may hold: the cap
# `ores serve --agent` puts on a caller's question. Longer ones are refused, not truncated.
MAX_QUESTION_CHARS = 20_000

# The fields every command looks for, in order, when the user names none (`--field`): one list
# per meaning, so two commands never read different fields of the same file.
QUESTION_FIELDS = ("question", "prompt", "query", "instruction", "seed", "text")
ID_FIELDS = ("id", "qid", "question_id", "task_id", "trace_id", "seed_id")
LANGUAGE_FIELDS = ("language", "lang")
# A trace, or a bare report: ores's own `trace`, O-Researcher's `current_answer`, DRB's `article`.
TRACE_FIELDS = ("trace", "current_answer", "article", "report", "text", "response", "output")


@dataclass(frozen=True)
class Record:
    """One input row and where it came from (`file:line`), for error messages downstream."""

    data: dict[str, Any]
    origin: str


def source_name(source: str | Path) -> str:
    return "<stdin>" if str(source) == STDIN else str(source)


def detect_format(source: str | Path, fmt: str | None = None) -> str:
    """The format named by `fmt`, else by the file's suffix; stdin defaults to JSONL."""
    if fmt:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise InputError(f"unknown input format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt
    if str(source) == STDIN:
        return "jsonl"
    suffixes = [s.lower().lstrip(".") for s in Path(source).suffixes]
    for suffix in reversed(suffixes):
        if suffix in ("jsonl", "ndjson"):
            return "jsonl"
        if suffix in ("json", "csv", "tsv", "parquet"):
            return suffix
        if suffix == "pq":
            return "parquet"
    raise InputError(
        f"{source}: cannot tell the format from the file name; pass --format with one of {', '.join(FORMATS)}"
    )


def check_readable(source: str | Path) -> None:
    if str(source) == STDIN:
        return
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file; name a JSONL, CSV or Parquet file")


def _read_bytes(source: str | Path) -> bytes:
    if str(source) == STDIN:
        return sys.stdin.buffer.read()
    return Path(source).read_bytes()


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(
            f"{name}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at column {column}); "
            "re-encode the file as UTF-8, e.g. `iconv -f GB18030 -t UTF-8`"
        ) from None


def _jsonl_records(text: str, name: str) -> Iterator[Record]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{name}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); fix or remove that line"
            ) from None
        if not isinstance(obj, dict):
            raise InputError(
                f"{name}:{lineno}: expected a JSON object per line, got {type(obj).__name__}; "
                'write one {"field": ...} object per line'
            )
        yield Record(obj, f"{name}:{lineno}")


def _json_records(text: str, name: str) -> Iterator[Record]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{name}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}); fix the file"
        ) from None
    rows = obj if isinstance(obj, list) else [obj]
    for index, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise InputError(
                f"{name}: item {index} is a {type(row).__name__}, not an object; use a list of objects"
            )
        yield Record(row, f"{name}#{index}")


def _csv_records(text: str, name: str, delimiter: str) -> Iterator[Record]:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    if not reader.fieldnames:
        raise InputError(f"{name}: no header row; the first line must name the columns")
    for row in reader:
        lineno = reader.line_num
        if None in row:
            raise InputError(
                f"{name}:{lineno}: more values than header columns; quote fields that contain '{delimiter}'"
            )
        yield Record({k: v for k, v in row.items()}, f"{name}:{lineno}")


def _parquet_records(data: bytes, name: str) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(
            f"{name}: not a readable Parquet file ({exc}); check the file or pass --format"
        ) from None
    for index, row in enumerate(table.to_pylist(), start=1):
        yield Record(row, f"{name}#row{index}")


def read_records(source: str | Path, fmt: str | None = None) -> list[Record]:
    """Read every record of `source` (a path or "-"), or raise one InputError for the first problem."""
    name = source_name(source)
    check_readable(source)
    fmt = detect_format(source, fmt)
    data = _read_bytes(source)
    if not data.strip():
        raise InputError(f"{name}: the input is empty; give a file with at least one record")
    if fmt == "parquet":
        records = list(_parquet_records(data, name))
    else:
        text = _decode(data, name)
        if fmt == "jsonl":
            records = list(_jsonl_records(text, name))
        elif fmt == "json":
            records = list(_json_records(text, name))
        else:
            records = list(_csv_records(text, name, "\t" if fmt == "tsv" else ","))
    if not records:
        raise InputError(f"{name}: no records found; give a file with at least one record")
    return records


def require_field(records: list[Record], field: str, name: str) -> None:
    """Fail with the available columns when `field` is missing from a record."""
    for record in records:
        if field not in record.data:
            available = ", ".join(sorted(record.data)) or "none"
            raise InputError(
                f"{record.origin}: no field {field!r} (fields: {available}); pass --field with one of them"
            )


def pick_field(
    records: list[Record],
    field: str | None,
    candidates: tuple[str, ...],
    name: str,
    *,
    exclude: tuple[str, ...] = (),
) -> str:
    """`field` if given (and present in every record), else the first candidate all records have
    (`exclude`: fields already picked for another meaning)."""
    if field:
        require_field(records, field, name)
        return field
    keys = set(records[0].data)
    for candidate in candidates:
        if candidate in exclude:
            continue
        if candidate in keys and all(candidate in r.data for r in records):
            return candidate
    available = ", ".join(sorted(keys)) or "none"
    raise InputError(
        f"{name}: none of the fields {', '.join(candidates)} found (fields: {available}); pass --field NAME"
    )


def find_field(
    data: dict[str, Any], candidates: tuple[str, ...], *, exclude: tuple[str, ...] = ()
) -> str | None:
    """The first of `candidates` that `data` has (an optional field: None when it has none)."""
    return next((c for c in candidates if c in data and c not in exclude), None)


def first_field(data: dict[str, Any], candidates: tuple[str, ...]) -> str | None:
    """The first of `candidates` that is set (not None, not empty) in `data`."""
    return next((c for c in candidates if data.get(c) not in (None, "")), None)


def first_value(data: dict[str, Any], candidates: tuple[str, ...]) -> Any:
    """The value of the first of `candidates` that is set (not None, not empty) in `data`."""
    name = first_field(data, candidates)
    return None if name is None else data[name]


def _shown(value: Any) -> str:
    """A short view of a bad value for an error line."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: Any) -> str:
    """'a number', 'a list', 'an object' ... (JSON's names for a Python value's type)."""
    names = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return names.get(type(value), f"a {type(value).__name__}")


def question_of(record: Record, field: str, max_chars: int = MAX_QUESTION_CHARS) -> str:
    """The question in `record`'s `field` as read ('' when unset). A value that is not text (a
    number, list, object) or is over `max_chars` is refused with the record's file:line."""
    value = record.data.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(
            f"{record.origin}: the question in field {field!r} is {_kind(value)} ({_shown(value)}), "
            "not text; write each question as a string"
        )
    if len(value) > max_chars:
        raise InputError(
            f"{record.origin}: the question in field {field!r} is {len(value):,} characters, over the "
            f"cap of {max_chars:,} (MAX_QUESTION_CHARS); shorten it or leave it out"
        )
    return value


def id_of(record: Record, fields: str | tuple[str, ...] | None) -> str | None:
    """The id in `record`'s `fields` (a field, or the first of several that is set) as a string:
    text stripped, a whole number (DeepResearch Bench's ids) as its digits; None when unset or
    blank. Any other value (a decimal number, boolean, list, object) is refused with file:line."""
    if fields is None:
        return None
    field = fields if isinstance(fields, str) else first_field(record.data, fields)
    value = record.data.get(field) if field is not None else None
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InputError(
        f"{record.origin}: the id in field {field!r} is {_kind(value)} ({_shown(value)}), not a "
        'string or whole number; write ids as strings such as "q-1" or integers'
    )


def cannot_create(path: Path) -> str | None:
    """Why `path` (not there yet) could not be created, or None: the nearest folder above it that
    exists must be a folder this process can create files (or the missing folders) in. The probe
    is a temporary file, gone at once; nothing is created."""
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, not a directory"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"cannot write in {folder} ({exc.strerror or type(exc).__name__})"
    return None


def output_format(path: str | Path) -> str | None:
    """The format `write_records` writes to `path` (jsonl or parquet, by its last suffix), or None."""
    return OUTPUT_SUFFIXES.get(Path(path).suffix.lower())


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, default=str)


def write_jsonl(records: Iterable[dict[str, Any]], stream: IO[str]) -> int:
    """Write records as JSONL, flushing each line so a downstream pipe sees it at once."""
    count = 0
    for record in records:
        stream.write(dumps(record) + "\n")
        stream.flush()
        count += 1
    return count


def write_records(records: list[dict[str, Any]], path: Path) -> None:
    """Write records to `path` as Parquet or JSONL, chosen by the suffix."""
    fmt = output_format(path)
    if fmt is None:
        raise InputError(f"{path}: can only write .parquet or .jsonl; change the file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        with path.open("w", encoding="utf-8") as fh:
            write_jsonl(records, fh)
