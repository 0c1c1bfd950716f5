"""What a stage learns of its endpoints beyond one call: the models an endpoint serves, and whether
a failed call says the setup is wrong.

* `fill_models` gives a role with no model the endpoint's model when `GET /v1/models` lists
  exactly one (`ores serve`, a vLLM with one model), so `ores synth` against `ores serve` needs no
  `ORES_LLM_MODEL`; in any other case the role keeps the "no model set" error.
* `first_unreachable` finds a base URL that does not answer at all, for a check before a run.
* `is_fatal` says whether an `LLMError` is the user's setup (a rejected key, an unknown model, a
  used-up quota): every other item would fail the same way, so a stage stops instead of recording
  each item as failed (`ores synth`, the judge of `ores filter`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import replace

from oresearch_cli.llm.config import LLMConfig
from oresearch_cli.llm.errors import LLMError
from oresearch_cli.llm.redact import safe_url

# HTTP statuses that say the configuration is wrong (key, permissions, model name, base URL), not
# the item at hand.
FATAL_STATUSES = (401, 403, 404)


def is_fatal(exc: LLMError) -> bool:
    """Whether an endpoint error is the user's setup (stop the run) rather than this item's."""
    quota = exc.status == 429 and not exc.retryable  # insufficient_quota: no retry will help
    return exc.status in FATAL_STATUSES or quota


async def first_unreachable(urls: Iterable[str], timeout: float = 5.0) -> tuple[str, str] | None:
    """(URL without credentials, error name) of the first base URL whose `GET /models` gets no
    HTTP answer at all, or None when every one answers (whatever the status)."""
    import httpx

    async with httpx.AsyncClient(timeout=timeout) as client:
        for url in dict.fromkeys(urls):
            try:
                await client.get(url.rstrip("/") + "/models")
            except httpx.HTTPError as exc:
                return safe_url(url), type(exc).__name__
    return None


async def served_models(base_url: str, api_key: str | None = None, timeout: float = 5.0) -> list[str] | None:
    """The model ids `GET {base_url}/models` lists, or None when it does not answer with a list."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(base_url.rstrip("/") + "/models", headers=headers)
        if response.status_code != 200:
            return None
        data = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return None
    ids = [str(item["id"]) for item in items if isinstance(item, dict) and item.get("id")]
    return list(dict.fromkeys(ids))


async def fill_models(
    config: LLMConfig,
    roles: Iterable[str],
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[LLMConfig, list[str]]:
    """`config` with each of `roles` that has no model set to the one model its endpoint serves,
    and one line per endpoint so used (for stderr). A role whose endpoints list no model, several,
    or do not answer is left as it was: `config.role(name)` still raises "no model set"."""
    environ = os.environ if environ is None else environ
    roles_now = dict(config.roles)
    notes: list[str] = []
    found: dict[tuple[str, ...], str | None] = {}
    for name in roles:
        rc = config.roles.get(name)
        if rc is None or rc.model:
            continue
        if rc.base_urls not in found:
            key = environ.get(rc.api_key_env) if rc.api_key_env else None
            lists = [await served_models(url, key, timeout) for url in rc.base_urls]
            first = lists[0] if lists else None
            only = first[0] if first is not None and len(first) == 1 else None
            # several base URLs serve one model between them: all must list the same single one
            found[rc.base_urls] = only if all(m == [only] for m in lists) else None
            if found[rc.base_urls] is not None:
                where = ", ".join(safe_url(url) for url in rc.base_urls)
                notes.append(
                    f"llm: no model set; using {only!r}, the one model {where} serves "
                    "(set ORES_LLM_MODEL or --model to choose another)"
                )
        model = found[rc.base_urls]
        if model is not None:
            roles_now[name] = replace(rc, model=model)
    return replace(config, roles=roles_now), notes
