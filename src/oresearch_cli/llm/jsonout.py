"""Reading a JSON object out of model text, leniently, and checking it against a schema's basics.

Models wrap JSON in code fences, think aloud first (`<think>...</think>`), or add a sentence
after it. `extract_json` takes the first balanced `{...}` that parses; `check_schema` checks the
schema's `required` keys and the JSON types of its top-level `properties`. It is not a full JSON
Schema validator: enough to catch the malformed outputs a prompt can fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


class JSONExtractError(ValueError):
    """No JSON object could be read from the text, or it does not fit the schema."""


_CLOSE = {"{": "}", "[": "]"}


def span_end(text: str, start: int) -> int:
    """The index just past the `{...}` or `[...]` opening at `start` (strings respected); -1
    when it is not closed, or closed by the wrong bracket."""
    stack: list[str] = []
    in_string = escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in _CLOSE:
            stack.append(_CLOSE[ch])
        elif ch in "}]":
            if not stack or stack.pop() != ch:
                return -1
            if not stack:
                return i + 1
    return -1


def _balanced_objects(text: str) -> Iterator[str]:
    """Every balanced `{...}` span that starts at a top-level `{`, in order (strings respected)."""
    start = text.find("{")
    while start != -1:
        end = span_end(text, start)
        if end == -1:
            return  # unbalanced from here on (a truncated answer)
        yield text[start:end]
        start = text.find("{", start + 1)


def json_values(text: str, tagged: re.Pattern[str] | None = None) -> Iterator[Any]:
    """Every JSON value (object, array, scalar) a reply holds, likeliest first: inside `tagged`
    spans, inside code fences, the whole text, then each balanced `{...}` or `[...]` that parses,
    left to right (what is inside a parsed one is not parsed again)."""
    cleaned = _THINK.sub("", text or "").strip()
    candidates = [m.group(1).strip() for m in tagged.finditer(cleaned)] if tagged is not None else []
    candidates += [m.group(1).strip() for m in _FENCE.finditer(cleaned)]
    candidates.append(cleaned)
    for candidate in candidates:
        try:
            yield json.loads(candidate)
            continue
        except ValueError:
            pass
        start = 0
        while True:
            starts = [i for i in (candidate.find("{", start), candidate.find("[", start)) if i != -1]
            if not starts:
                break
            start = min(starts)
            end = span_end(candidate, start)
            if end != -1:
                try:
                    value = json.loads(candidate[start:end])
                except ValueError:
                    pass
                else:
                    yield value
                    start = end
                    continue
            start += 1


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in `text` (fenced, bare, or embedded in prose)."""
    cleaned = _THINK.sub("", text or "").strip()
    candidates = [m.group(1).strip() for m in _FENCE.finditer(cleaned)] + [cleaned]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            pass
        else:
            if isinstance(value, dict):
                return value
        for span in _balanced_objects(candidate):
            try:
                value = json.loads(span)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    if not cleaned:
        raise JSONExtractError("the answer is empty")
    if "{" not in cleaned:
        raise JSONExtractError("the answer holds no JSON object")
    raise JSONExtractError("the answer holds no complete, valid JSON object")


def check_schema(value: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Raise `JSONExtractError` naming the first missing required key or mistyped property."""
    missing = [key for key in schema.get("required", ()) if key not in value]
    if missing:
        raise JSONExtractError(f"missing required key(s) {', '.join(map(repr, missing))}")
    for key, spec in (schema.get("properties") or {}).items():
        if key not in value or not isinstance(spec, Mapping) or "type" not in spec:
            continue
        wanted = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
        allowed = tuple(t for name in wanted for t in _TYPES.get(name, (object,)))
        item = value[key]
        is_bool = isinstance(item, bool)
        if not isinstance(item, allowed) or (is_bool and bool not in allowed):
            raise JSONExtractError(f"key {key!r} should be {' or '.join(wanted)}, got {type(item).__name__}")
        if "enum" in spec and item not in spec["enum"]:
            raise JSONExtractError(f"key {key!r} is {item!r}, not one of {spec['enum']!r}")


def parse_json_output(text: str, schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    value = extract_json(text)
    if schema is not None:
        check_schema(value, schema)
    return value
