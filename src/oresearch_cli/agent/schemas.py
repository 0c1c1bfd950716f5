"""The JSON schema of each piece, read from `prompts/agent/schemas/<piece>.json` beside the prompts.

A schema file is JSON whose `"$name"` values (a whole value) are integer bounds of this call, such
as `$n_sources` or `$max_subtasks`.

Every string has a `maxLength`: an endpoint that enforces the schema (vLLM, `ores serve`) then
keeps each piece inside its role's token cap, so a reply is never cut off mid-object. Lengths,
not counted regex patterns: xgrammar checks `{40,500}`-style repetitions ~60x slower per token
(15 ms against 0.2 ms here), and it ignores min/maxLength beside a `pattern`. Subtasks and
queries, short strings, carry a bounded pattern instead (8 and 0.6 ms a token measured) that
keeps out `<`, `>` and brackets: a small model otherwise copies the prompt's `<a question on one
aspect>` into the list or `<short keyword query>` into a search. Sources are cited by number (`[1, 3]`) rather than by URL: a number out of
range cannot be written at all.

The worker's step file lists one object per action under `variants`; `step_schema` offers only
the actions allowed at that point (no crawl before a source is seen, no answer before the
minimum of tool calls) and makes the plan required on the first step.
"""

from __future__ import annotations

import functools
import json
import re
from importlib.resources import files
from typing import Any

_BOUND = re.compile(r"^\$([a-z_]+)$")
PIECES = ("subtasks", "step", "answer", "report")


@functools.cache
def _template(piece: str) -> str:
    if piece not in PIECES:
        raise ValueError(f"no schema for piece {piece!r}; pieces: {', '.join(PIECES)}")
    return (files("oresearch_cli.prompts") / "agent" / "schemas" / f"{piece}.json").read_text(
        encoding="utf-8"
    )


def _fill(value: Any, bounds: dict[str, int]) -> Any:
    if isinstance(value, dict):
        return {key: _fill(item, bounds) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, bounds) for item in value]
    if isinstance(value, str):
        bound = _BOUND.match(value)
        if bound:
            name = bound.group(1)
            if name not in bounds:
                raise KeyError(f"schema placeholder ${name} has no value")
            return int(bounds[name])
    return value


def schema(piece: str, **bounds: int) -> dict[str, Any]:
    """The schema of `piece` with its placeholders filled from `bounds`."""
    return _fill(json.loads(_template(piece)), bounds)


def step_schema(*, actions: tuple[str, ...], n_sources: int, need_plan: bool) -> dict[str, Any]:
    """A worker step offering only `actions` (crawl needs sources; the caller decides the rest)."""
    filled = schema("step", n_sources=max(n_sources, 1))
    variants = []
    for action in actions:
        if action == "crawl" and n_sources < 1:
            continue
        properties = dict(filled["variants"][action])
        if need_plan:  # the plan follows the thought, as the trace writes them
            properties = {
                "thought": properties.pop("thought"),
                "plan": {"$ref": "#/$defs/plan"},
                **properties,
            }
        variants.append(
            {
                "type": "object",
                "properties": properties,
                "required": list(properties),
                "additionalProperties": False,
            }
        )
    if not variants:
        raise ValueError("step_schema: no action is allowed")
    body: dict[str, Any] = {"title": filled["title"], "$defs": filled["$defs"]}
    if len(variants) == 1:
        return {**body, **variants[0]}
    return {**body, "anyOf": variants}
