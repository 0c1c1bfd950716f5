"""The LLM client: async chat completions for the roles planner, worker, summarizer and judge.

    from oresearch_cli.llm import CallLog, LLMClient, load_config

    config = load_config("recipe.yaml", {"judge.model": "gpt-4o-mini"}, require=["judge"])
    async with LLMClient(config, CallLog(run.dir / "llm_calls.jsonl", run.run_id)) as llm:
        result = await llm.chat("judge", messages, trace_id=trace_id)
        verdict = (await llm.chat_json("judge", messages, schema)).data

Modules: `config` (roles from flags, YAML, environment), `client` (calls, retries),
`limits` (concurrency, requests and tokens per minute), `routing` (several base URLs),
`recorder` (a record per call, the workspace artifact), `pricing`, `jsonout`, `redact`, `errors`.
"""

from oresearch_cli.llm.client import ChatResult, LLMClient, Usage, parse_retry_after
from oresearch_cli.llm.config import ROLES, LLMConfig, RoleConfig, load_config
from oresearch_cli.llm.errors import LLMConfigError, LLMError, MalformedOutput
from oresearch_cli.llm.jsonout import extract_json
from oresearch_cli.llm.pricing import DEFAULT_PRICES, Price, PriceTable
from oresearch_cli.llm.recorder import (
    CALL_LOG_FILE,
    CALLS_KIND,
    CallLog,
    CallRecord,
    Recorder,
    Totals,
    read_call_log,
    register_call_log,
    register_unlogged_calls,
    totals_by_trace,
)
from oresearch_cli.llm.routing import Router

__all__ = [
    "CALL_LOG_FILE",
    "CALLS_KIND",
    "DEFAULT_PRICES",
    "ROLES",
    "CallLog",
    "CallRecord",
    "ChatResult",
    "LLMClient",
    "LLMConfig",
    "LLMConfigError",
    "LLMError",
    "MalformedOutput",
    "Price",
    "PriceTable",
    "Recorder",
    "RoleConfig",
    "Router",
    "Totals",
    "Usage",
    "extract_json",
    "load_config",
    "parse_retry_after",
    "read_call_log",
    "register_call_log",
    "register_unlogged_calls",
    "totals_by_trace",
]
