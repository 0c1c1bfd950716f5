"""Prometheus metrics of `ores serve --agent` (`GET /metrics`, text exposition format).

Each server has its own registry (not prometheus_client's global one), so two servers in one process
(the tests, a benchmark) count apart.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Research takes seconds to many minutes; the buckets follow.
LATENCY_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, float("inf"))
CONTENT_TYPE = CONTENT_TYPE_LATEST


class AgentMetrics:
    """The counters one agent server keeps."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ores_agent_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=r,
        )
        self.in_flight = Gauge("ores_agent_research_in_flight", "Researches running now", registry=r)
        self.latency = Histogram(
            "ores_agent_request_seconds",
            "Seconds from request to the end of its answer, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tool_calls = Counter("ores_agent_tool_calls", "Tool calls the researches made", registry=r)
        self.tokens = Counter(
            "ores_agent_tokens", "Model tokens the researches read and wrote", ["kind"], registry=r
        )
        self.errors = Counter(
            "ores_agent_errors",
            "Requests that did not end in a research: by kind (auth, busy, too_large, bad_request, "
            "disconnected, failed)",
            ["kind"],
            registry=r,
        )

    def research_done(self, prompt_tokens: int, completion_tokens: int, tool_calls: int) -> None:
        self.tokens.labels("prompt").inc(prompt_tokens)
        self.tokens.labels("completion").inc(completion_tokens)
        self.tool_calls.inc(tool_calls)

    def render(self) -> bytes:
        return generate_latest(self.registry)
