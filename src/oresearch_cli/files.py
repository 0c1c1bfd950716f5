"""File helpers shared by the workspace, the LLM call log and the model server: reading a JSONL
that a live (or killed) process appends to, and hashing a file."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_BLOCK = 1 << 20


def iter_jsonl_tolerant(path: Path, key: str | None = None) -> Iterator[dict[str, Any]]:
    """The objects of a JSONL another process appends to, one flushed line each: a line torn by
    a killed writer (always the last one) ends the file, a line that is not an object (or has no
    `key`, when given) is skipped. A missing file has no lines.

    Not for user input, which must fail loudly on a bad line (`oresearch_cli.records`)."""
    if not path.exists():
        return
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                return  # torn final write
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and (key is None or key in record):
                yield record


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB blocks (about 0.3 s per 100 MB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
