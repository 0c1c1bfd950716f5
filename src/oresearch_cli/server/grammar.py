"""OpenAI's `response_format` as a token grammar: the shape a reply must have, enforced while decoding.

`Grammars.for_response_format(body["response_format"])` turns `{"type": "json_schema", ...}` and
`{"type": "json_object"}` into an xgrammar `CompiledGrammar` (None for `text` or no format);
`Grammars.matcher(grammar)` starts one request's matcher. At each step the engine asks the matcher
which tokens may come next (a bitmask over the vocabulary) and masks the rest out of the logits,
so the model can only write JSON that parses and fits the schema; the stop token is allowed only
once the JSON is complete.

Why xgrammar: its CPU wheel compiles a schema in milliseconds and fills a mask in microseconds
(`benchmarks/bench_constrained.py` measures decoding with and without it), and it is what vLLM
uses for the same job, so a schema behaves alike on `ores serve` and on vLLM.

JSON is compact (no whitespace between tokens): with free whitespace a small model can spend its
whole token budget on newlines inside a valid object.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")
_LENGTH_BOUNDED_CHAR = '[^\\"\\\\\\r\\n]'  # as xgrammar's EBNF spells it
_JSON_STRING_CHAR = '[^\\"\\\\\\x00-\\x1f]'


class ResponseFormatError(ValueError):
    """A `response_format` the server cannot honour; the message is for the client (HTTP 400)."""


class Grammars:
    """The compiler of one tokenizer's grammars; compiled grammars are cached by schema."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        import xgrammar

        self._xgr = xgrammar
        self.info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        # one thread: the server has two cores and the engine loop is using them
        self.compiler = xgrammar.GrammarCompiler(self.info, max_threads=1)

    @property
    def vocab_size(self) -> int:
        return int(self.info.vocab_size)

    def for_response_format(self, response_format: Any) -> Any | None:
        """The compiled grammar for an OpenAI `response_format` value, or None (free text)."""
        if response_format is None:
            return None
        if not isinstance(response_format, Mapping):
            raise ResponseFormatError("response_format must be an object with a `type`")
        kind = response_format.get("type")
        if kind == "text":
            return None
        if kind == "json_object":  # an object, as OpenAI means it (the builtin JSON grammar allows any value)
            return self.compiler.compile_json_schema(
                '{"type": "object"}', any_whitespace=False, strict_mode=False
            )
        if kind != "json_schema":
            raise ResponseFormatError(
                f"response_format type {kind!r} is not supported; use one of {', '.join(RESPONSE_FORMAT_TYPES)}"
            )
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
            raise ResponseFormatError(
                "response_format json_schema needs `json_schema: {name, schema: {...}}` with the schema as an object"
            )
        # key order kept: properties are generated in the order the schema lists them
        schema = json.dumps(spec["schema"])
        try:
            return self._compile_schema(schema)
        except Exception as exc:  # xgrammar raises RuntimeError/ValueError subclasses with a message
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ResponseFormatError(f"response_format json_schema cannot be compiled: {first}") from None

    def _compile_schema(self, schema: str) -> Any:
        # strict_mode=False: properties the schema does not forbid stay allowed, as vLLM does
        grammar = self._xgr.Grammar.from_json_schema(schema, any_whitespace=False, strict_mode=False)
        # xgrammar 0.2.9 writes a string with min/maxLength as repetitions of [^"\\\r\n], which lets
        # a tab or any other control character through unescaped: not JSON (`json.loads` refuses
        # it). The same class without control characters keeps the length bounds.
        text = str(grammar).replace(_LENGTH_BOUNDED_CHAR, _JSON_STRING_CHAR)
        return self.compiler.compile_grammar(text)

    def matcher(self, grammar: Any) -> Any:
        return self._xgr.GrammarMatcher(grammar)

    def allocate_bitmask(self, rows: int) -> Any:
        return self._xgr.allocate_token_bitmask(rows, self.vocab_size)

    def apply_bitmask(self, logits: Any, bitmask: Any, rows: list[int]) -> None:
        self._xgr.apply_token_bitmask_inplace(logits, bitmask, indices=rows)
