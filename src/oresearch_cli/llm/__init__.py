"""The LLM client: async chat completions for the roles planner, worker, summarizer and judge.

    from oresearch_cli.llm import CallLog, LLMClient, load_config

    config = load_config("recipe.yaml", {"judge.model": "gpt-4o-mini"}, require=["judge"])
    async with LLMClient(config, CallLog(run.open_log(CALLS_KIND), run.run_id)) as llm:
        result = await llm.chat("judge", messages, trace_id=trace_id)
        verdict = (await llm.chat_json("judge", messages, schema)).data

Modules: `config` (roles from flags, YAML, environment), `client` (calls, retries),
`limits` (concurrency, requests and tokens per minute), `routing` (several base URLs),
`recorder` (a record per call, the workspace artifact), `structured` (ask, parse leniently,
re-ask strictly, record the unusable replies), `pricing`, `jsonout`, `redact`, `errors`.
"""

from oresearch_cli.llm.client import ChatResult, LLMClient, Usage, parse_retry_after
from oresearch_cli.llm.config import ROLES, LLMConfig, RoleConfig, load_config
from oresearch_cli.llm.errors import LLMConfigError, LLMError, MalformedOutput
from oresearch_cli.llm.jsonout import extract_json
from oresearch_cli.llm.pricing import DEFAULT_PRICES, Price, PriceTable
from oresearch_cli.llm.recorder import (
    CALLS_KIND,
    CallLog,
    CallRecord,
    Recorder,
    Totals,
    read_call_log,
    totals_by_trace,
)
from oresearch_cli.llm.routing import Router
from oresearch_cli.llm.structured import (
    FailedReply,
    Judgement,
    ReplyError,
    Structured,
    ask_for_scores,
    ask_structured,
    reask_strictly,
)

__all__ = [
    "CALLS_KIND",
    "DEFAULT_PRICES",
    "ROLES",
    "CallLog",
    "CallRecord",
    "ChatResult",
    "FailedReply",
    "LLMClient",
    "LLMConfig",
    "LLMConfigError",
    "LLMError",
    "MalformedOutput",
    "Price",
    "PriceTable",
    "Recorder",
    "ReplyError",
    "RoleConfig",
    "Router",
    "Structured",
    "Totals",
    "Usage",
    "ask_structured",
    "ask_for_scores",
    "reask_strictly",
    "Judgement",
    "extract_json",
    "load_config",
    "parse_retry_after",
    "read_call_log",
    "totals_by_trace",
]
