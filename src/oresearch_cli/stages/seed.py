"""`ores seed`: import research questions, clean them, drop duplicates, and write the `seeds` artifact.

`prepare_seeds` is pure (records in, seeds and drop reasons out) so it can be tested and reused;
`run_seed` adds reading the input and the workspace run around it.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from oresearch_cli.config import bounded, load_recipe, resolve
from oresearch_cli.errors import InputError
from oresearch_cli.records import (
    ID_FIELDS,
    LANGUAGE_FIELDS,
    QUESTION_FIELDS,
    Record,
    find_field,
    id_of,
    pick_field,
    question_of,
    read_records,
    source_name,
)
from oresearch_cli.textutil import dedup_key, detect_language, near_duplicates, normalize_whitespace
from oresearch_cli.workspace import ArtifactInfo, ArtifactRecord, StageSpec, Status, Workspace


@dataclass
class SeedRecord(ArtifactRecord):
    """A row of `seeds`. `meta` (every other field of the input row) is JSON text, so the Parquet
    schema stays the same whatever extra columns inputs carry."""

    KIND: ClassVar[str] = "seeds"

    id: str
    question: str
    language: str
    source: str
    meta: str = "{}"
    status: Status = Status.DONE


SEED = StageSpec.of("seed", SeedRecord)
STAGE = SEED.name
KIND = SEED.kind
# Fields that describe the seed itself; everything else an input row has is kept in `meta`.
_OWN_FIELDS = {"source", "status", "meta"}

DROP_EMPTY = "empty"
DROP_EXACT = "exact-duplicate"
DROP_NEAR = "near-duplicate"
DROP_ID = "duplicate-id"


@dataclass(frozen=True)
class SeedSettings:
    """What a recipe's `seed:` section (or ORES_SEED_<KEY>) may set."""

    near_dup_threshold: float = bounded(0.85, low=0.0, high=1.0)
    dedup_near: bool = True
    sample: int | None = bounded(None, low=1)
    sample_seed: int = 0
    limit: int | None = bounded(None, low=1)


@dataclass(frozen=True)
class SeedOptions(SeedSettings):
    """The settings plus how to read the input."""

    field: str | None = None
    id_field: str | None = None
    fmt: str | None = None


def seed_options(
    flags: dict[str, Any],
    config: str | Path | None = None,
    environ: dict[str, str] | None = None,
    **rest: Any,
) -> SeedOptions:
    """SeedOptions from flags (None: unset) over the recipe's `seed:` section over
    ORES_SEED_<KEY> over the defaults; `rest`: field, id_field, fmt."""
    settings = resolve(SeedSettings, load_recipe(config), "seed", flags, environ)
    return SeedOptions(**rest, **asdict(settings))


@dataclass(frozen=True)
class Seed:
    id: str
    question: str
    language: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    def to_artifact(self) -> SeedRecord:
        meta = json.dumps(self.meta, ensure_ascii=False, default=str)
        return SeedRecord(self.id, self.question, self.language, self.source, meta)


@dataclass(frozen=True)
class Dropped:
    origin: str
    reason: str
    question: str
    duplicate_of: str | None = None
    similarity: float | None = None


@dataclass
class SeedResult:
    seeds: list[Seed]
    dropped: list[Dropped]
    n_read: int
    field: str
    n_sampled_out: int = 0

    def drop_counts(self) -> dict[str, int]:
        return dict(Counter(d.reason for d in self.dropped))

    def language_counts(self) -> dict[str, int]:
        return dict(Counter(s.language for s in self.seeds).most_common())


def content_id(question: str) -> str:
    """Stable id for a question without one: the same text gets the same id everywhere."""
    return hashlib.sha256(dedup_key(question).encode("utf-8")).hexdigest()[:16]


def _meta_of(data: dict[str, Any], used: set[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    inherited = data.get("meta")
    if isinstance(inherited, str) and inherited.strip().startswith("{"):
        try:
            inherited = json.loads(inherited)
        except json.JSONDecodeError:
            inherited = None
    if isinstance(inherited, dict):
        meta.update(inherited)
    for key, value in data.items():
        if key not in used and key not in _OWN_FIELDS:
            meta[key] = value
    return meta


def prepare_seeds(records: list[Record], options: SeedOptions, name: str) -> SeedResult:
    """Normalize, tag, de-duplicate, sample and limit. Raises InputError for a missing field, a
    question that is not text or is over MAX_QUESTION_CHARS, or an id that is not a string or
    whole number (every record is checked, before anything is dropped)."""
    question_field = pick_field(records, options.field, QUESTION_FIELDS, name)
    id_field = (
        pick_field(records, options.id_field, ID_FIELDS, name)
        if options.id_field
        else find_field(records[0].data, ID_FIELDS, exclude=(question_field,))
    )
    language_field = find_field(records[0].data, LANGUAGE_FIELDS)
    used = {question_field, *(f for f in (id_field, language_field) if f)}

    candidates: list[Seed] = []
    dropped: list[Dropped] = []
    seen_text: dict[str, str] = {}
    seen_ids: set[str] = set()
    for record in records:
        question = normalize_whitespace(question_of(record, question_field))
        given_id = id_of(record, id_field)
        if not question:
            dropped.append(Dropped(record.origin, DROP_EMPTY, ""))
            continue
        key = dedup_key(question)
        if key in seen_text:
            dropped.append(
                Dropped(record.origin, DROP_EXACT, question, duplicate_of=seen_text[key], similarity=1.0)
            )
            continue
        seed_id = given_id or content_id(question)
        if seed_id in seen_ids:
            dropped.append(Dropped(record.origin, DROP_ID, question, duplicate_of=seed_id))
            continue
        raw_language = record.data.get(language_field) if language_field else None
        language = str(raw_language).strip().lower() if raw_language else detect_language(question)
        seen_text[key] = seed_id
        seen_ids.add(seed_id)
        candidates.append(Seed(seed_id, question, language, record.origin, _meta_of(record.data, used)))

    if options.dedup_near and len(candidates) > 1:
        near = near_duplicates([s.question for s in candidates], threshold=options.near_dup_threshold)
        for index, (kept, similarity) in sorted(near.items()):
            seed = candidates[index]
            dropped.append(
                Dropped(seed.source, DROP_NEAR, seed.question, candidates[kept].id, round(similarity, 3))
            )
        candidates = [s for i, s in enumerate(candidates) if i not in near]

    n_before_sample = len(candidates)
    if options.sample is not None and options.sample < len(candidates):
        chosen = sorted(random.Random(options.sample_seed).sample(range(len(candidates)), options.sample))
        candidates = [candidates[i] for i in chosen]
    if options.limit is not None:
        candidates = candidates[: options.limit]
    return SeedResult(candidates, dropped, len(records), question_field, n_before_sample - len(candidates))


def run_seed(
    ws_path: str | Path, source: str | Path, options: SeedOptions
) -> tuple[SeedResult, ArtifactInfo]:
    """Read `source` fully and validate it before the workspace is touched, then write the run."""
    name = source_name(source)
    records = read_records(source, options.fmt)
    result = prepare_seeds(records, options, name)
    if not result.seeds:
        raise InputError(f"{name}: every question was empty or a duplicate; nothing to seed")
    input_digest = hashlib.sha256(
        "\n".join(
            json.dumps(r.data, sort_keys=True, ensure_ascii=False, default=str) for r in records
        ).encode()
    ).hexdigest()
    config = {"input_sha256": input_digest, **asdict(options)}
    ws = Workspace.open(ws_path)
    with ws.start_run(SEED, config, inputs=[name]) as run:
        for seed in result.seeds:
            run.append(seed.to_artifact())
        artifact = run.finish()
    return result, artifact
