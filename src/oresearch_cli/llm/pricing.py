"""What a call cost: a price table in USD per million input and output tokens.

The built-in prices are OpenAI's list prices as of 2025 (standard tier, uncached input). A model
served from this machine or a private network (vLLM, SGLang, llama.cpp, Ollama, `ores serve`)
costs 0. Any other model the table does not know costs `None`, not 0, so a report shows that the
cost is unknown rather than free. Add or correct prices under `prices:` in the `--config` YAML.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens."""

    input: float
    output: float


DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-5": Price(1.25, 10.00),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5-nano": Price(0.05, 0.40),
    "o3": Price(2.00, 8.00),
    "o4-mini": Price(1.10, 4.40),
}

# Dated snapshots are priced like their family: gpt-4o-2024-08-06 -> gpt-4o, o3-2025-04-16 -> o3.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


@functools.lru_cache(maxsize=1024)  # called per call with the same few base URLs
def is_local_url(base_url: str | None) -> bool:
    """Whether `base_url` points at this machine or a private network (a self-hosted server)."""
    if not base_url:
        return False
    try:
        host = urlsplit(base_url).hostname or ""
    except ValueError:
        return False
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


class PriceTable:
    """Model name -> `Price`. `cost(...)` is None for a model it cannot price."""

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self.prices: dict[str, Price] = dict(DEFAULT_PRICES if prices is None else prices)

    def with_overrides(self, overrides: Mapping[str, Price]) -> PriceTable:
        return PriceTable({**self.prices, **overrides})

    def lookup(self, model: str) -> Price | None:
        """The price of `model`, of its dated snapshot's family, or None."""
        for name in (model, model.split("/", 1)[-1]):  # also "openai/gpt-4o"
            if name in self.prices:
                return self.prices[name]
            family = _SNAPSHOT.sub("", name)
            if family in self.prices:
                return self.prices[family]
        return None

    def cost(
        self, model: str, prompt_tokens: int, completion_tokens: int, base_url: str | None = None
    ) -> float | None:
        """USD for one call; 0 for a self-hosted endpoint the table does not name; else None."""
        price = self.lookup(model)
        if price is None:
            return 0.0 if is_local_url(base_url) else None
        return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {name: {"input": p.input, "output": p.output} for name, p in sorted(self.prices.items())}
