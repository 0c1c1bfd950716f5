"""Typed records of the artifact kinds, and the status values every stage and the catalog share.

Each artifact kind has one record class: a dataclass deriving from `ArtifactRecord` that names
its `KIND`. The class is the single statement of the kind's columns: its defaults are a new
item's defaults, its Arrow schema is derived from its field types, and a run's Parquet is
written with that schema. The owner of a kind defines its class (synth's `TraceRecord`, the
LLM client's `CallRecord`...); defining it registers the kind, so that the workspace can turn
a killed run's JSONL of that kind into Parquet.

    @dataclass
    class SeedRecord(ArtifactRecord):
        KIND: ClassVar[str] = "seeds"
        id: str
        question: str
        n_words: Annotated[int, pa.int32()] = 0   # an Arrow type other than the default int64

Field types map to Arrow: str -> string, int -> int64, float -> float64, bool -> bool,
datetime -> timestamp(us, UTC); `X | None` is the same type, nullable. A field with
`metadata={"parquet": False}` stays in the JSONL but out of the Parquet (a call log's `run_id`,
which the catalog's views add themselves).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, ClassVar, TypeVar

import pyarrow as pa

R = TypeVar("R", bound="ArtifactRecord")


class Status(str, enum.Enum):
    """An item's outcome in a run: `done`, `failed`, or `skipped` (looked at and left, as a
    spot-check reviewer may). Logs written before one enum was shared said `ok`/`error`."""

    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"

    @classmethod
    def _missing_(cls, value: object) -> Status | None:
        return {"ok": cls.DONE, "error": cls.FAILED}.get(str(value))

    def __str__(self) -> str:
        return self.value


class RunStatus(str, enum.Enum):
    """A run's state in the catalog."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


_ARROW: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    datetime: pa.timestamp("us", tz="UTC"),
    Status: pa.string(),
}
_KINDS: dict[str, type[ArtifactRecord]] = {}


def _arrow_type(hint: Any, where: str) -> pa.DataType:
    if typing.get_origin(hint) is typing.Annotated:
        extra = [a for a in typing.get_args(hint)[1:] if isinstance(a, pa.DataType)]
        if extra:
            return extra[0]
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return _arrow_type(rest[0], where)
    if hint in _ARROW:
        return _ARROW[hint]
    raise TypeError(f"{where}: no Arrow type for {hint!r}; annotate it as Annotated[T, pa.<type>()]")


@dataclasses.dataclass
class ArtifactRecord:
    """Base of the record classes; see the module docstring."""

    KIND: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.KIND:
            _KINDS[cls.KIND] = cls

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def arrow_schema(cls) -> pa.Schema:
        return _schema(cls)

    @classmethod
    def from_row(cls: type[R], row: Mapping[str, Any]) -> R:
        """A record from a JSONL or Parquet row; keys it does not know are ignored, missing ones
        take their defaults (rows of an older version of the kind still read)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})

    def to_row(self) -> dict[str, Any]:
        """The JSON-able row (enums as their values, datetimes as ISO text)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    return value


_SCHEMAS: dict[type[ArtifactRecord], pa.Schema] = {}


def _schema(cls: type[ArtifactRecord]) -> pa.Schema:
    if cls in _SCHEMAS:
        return _SCHEMAS[cls]
    hints = typing.get_type_hints(cls, include_extras=True)
    columns = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("parquet", True):
            columns.append(pa.field(f.name, _arrow_type(hints[f.name], f"{cls.__name__}.{f.name}")))
    _SCHEMAS[cls] = pa.schema(columns)
    return _SCHEMAS[cls]


def record_type(kind: str) -> type[ArtifactRecord] | None:
    """The record class of `kind`, when the module that owns it has been imported."""
    return _KINDS.get(kind)


def to_table(rows: Iterable[Mapping[str, Any]], record: type[ArtifactRecord] | None) -> pa.Table:
    """Rows as an Arrow table: with the record's schema (columns it does not have are dropped;
    text such as an ISO time is converted), or inferred when the kind has no record class."""
    rows = list(rows)
    if record is None:
        if rows:
            return pa.Table.from_pylist(rows)
        return pa.table({"id": pa.array([], pa.string()), "status": pa.array([], pa.string())})
    schema = record.arrow_schema()
    timestamps = [f.name for f in schema if pa.types.is_timestamp(f.type)]
    if timestamps:
        rows = [{**row, **{name: _timestamp(row.get(name)) for name in timestamps}} for row in rows]
    return pa.Table.from_pylist(rows, schema=schema)


def _timestamp(value: Any) -> Any:
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value)
    return value or None
