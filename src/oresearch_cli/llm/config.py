"""Which endpoint and model each role uses, from flags, a YAML file and the environment.

Four roles call models: `planner`, `worker`, `summarizer`, `judge`. Each setting of a role comes
from the first of these that sets it (and within one source, a role's own setting beats the
source's setting for all roles):

1. flags: `load_config(overrides={...})`, e.g. `{"model": ..., "judge.model": ...}`
2. the YAML file given with `--config` (its `llm:` section, or the whole file)
3. the environment: `OPENAI_BASE_URL`, `ORES_LLM_<FIELD>`, `ORES_<ROLE>_<FIELD>`
4. built-in defaults (a local `ores serve` at http://127.0.0.1:8000/v1, key from `OPENAI_API_KEY`)

API keys never enter the configuration: a role names the environment variable that holds its key
(`api_key_env`), and the client reads it when it connects. `LLMConfig.to_dict()` is therefore
safe to store with a run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from oresearch_cli.config import nearest
from oresearch_cli.errors import ConfigError
from oresearch_cli.llm.errors import LLMConfigError
from oresearch_cli.llm.pricing import Price, PriceTable
from oresearch_cli.llm.redact import safe_url

ROLES: tuple[str, ...] = ("planner", "worker", "summarizer", "judge")
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"  # `ores serve`
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
JSON_MODES = ("none", "json_object", "json_schema")
_HOSTED_APIS = ("api.openai.com",)


@dataclass(frozen=True)
class RoleConfig:
    """One role's endpoint(s), model and limits.

    `api_key_env` is the *name* of the variable that holds the key (None: send no real key, as
    local servers want). `rpm`/`tpm` limit each of the role's endpoints (requests and tokens per
    minute); `max_concurrency` caps this role's calls in flight. `json_mode` says what structured
    output the endpoint understands: `json_schema` (OpenAI, vLLM, SGLang), `json_object`, or
    `none` (the prompt alone asks for JSON). `extra_body` is merged into every request body.
    """

    name: str
    model: str = ""
    base_urls: tuple[str, ...] = (DEFAULT_BASE_URL,)
    api_key_env: str | None = DEFAULT_API_KEY_ENV
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_s: float = 120.0
    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0
    hedge_after_s: float | None = None  # off; see llm/client.py on hedging
    rpm: float | None = None
    tpm: float | None = None
    max_concurrency: int | None = None
    json_mode: str = "none"
    extra_body: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LLMConfig:
    """The four roles plus what all calls share: a concurrency cap, endpoint health, prices."""

    roles: Mapping[str, RoleConfig]
    max_concurrency: int | None = 64  # None: no cap
    cooldown_s: float = 30.0
    failures_to_cooldown: int = 3
    prices: PriceTable = field(default_factory=PriceTable)
    source: str = ""  # the YAML path, if any, for messages

    def role(self, name: str) -> RoleConfig:
        """The configuration of role `name`, checked to be usable (it has a model)."""
        if name not in self.roles:
            raise LLMConfigError(f"llm: unknown role {name!r}; use one of {', '.join(ROLES)}")
        config = self.roles[name]
        if not config.model:
            upper = name.upper()
            raise LLMConfigError(
                f"llm {name}: no model set; pass --model, set ORES_{upper}_MODEL or ORES_LLM_MODEL, "
                f"or add `{name}: {{model: ...}}` to the --config YAML"
            )
        return config

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view for a run's config: names of key variables, never keys, and base URLs
        without credentials or query strings."""
        return {
            "max_concurrency": self.max_concurrency,
            "cooldown_s": self.cooldown_s,
            "failures_to_cooldown": self.failures_to_cooldown,
            "roles": {
                name: {
                    **{k: v for k, v in asdict(rc).items() if k != "name"},
                    "base_urls": [safe_url(url) for url in rc.base_urls],
                    "extra_body": dict(rc.extra_body),
                }
                for name, rc in self.roles.items()
            },
        }


# -- parsing -------------------------------------------------------------------------------------

_ROLE_FIELDS = {f.name for f in fields(RoleConfig)} - {"name"}
_GLOBAL_FIELDS = ("max_concurrency", "cooldown_s", "failures_to_cooldown")
_INT = {"max_tokens", "max_attempts", "max_concurrency", "failures_to_cooldown"}
_POSITIVE = {"timeout_s", "max_attempts", "max_retry_after_s", "failures_to_cooldown", "cooldown_s"}
# Role settings also read from ORES_LLM_<FIELD> (all roles) and ORES_<ROLE>_<FIELD>.
_ENV_FIELDS = ("model", "base_url", "api_key_env", "temperature", "max_tokens", "timeout_s")


class _Layer:
    """One source's settings: for all roles, per role, and global; each value with where it came from."""

    def __init__(self) -> None:
        self.all: dict[str, tuple[Any, str]] = {}
        self.roles: dict[str, dict[str, tuple[Any, str]]] = {r: {} for r in ROLES}
        self.globals: dict[str, tuple[Any, str]] = {}
        self.prices: dict[str, Price] = {}


def _set_role_value(target: dict[str, tuple[Any, str]], key: str, value: Any, where: str) -> None:
    if key in ("base_url", "base_urls"):
        target["base_urls"] = (value, where)
    elif key in _ROLE_FIELDS:
        target[key] = (value, where)
    else:
        raise LLMConfigError(f"{where}: unknown setting {key!r}; {nearest(key, _ROLE_FIELDS | {'base_url'})}")


def _parse_section(data: Mapping[str, Any], where: str, layer: _Layer) -> None:
    """A YAML `llm:` section or a flags dict: role sections, `defaults`, globals (`max_concurrency`
    at the top is the cap on all calls), `prices`, other role settings at the top (for all roles)
    and dotted `role.setting` keys."""
    for key, value in data.items():
        if value is None:
            continue  # an unset flag
        key = str(key)
        here = f"{where} {key}".strip()
        if "." in key:
            role, _, setting = key.partition(".")
            if role not in ROLES:
                raise LLMConfigError(
                    f"{here}: unknown role {role!r}; {nearest(role, ROLES)} (roles: {', '.join(ROLES)})"
                )
            _set_role_value(layer.roles[role], setting, value, here)
        elif key in ROLES or key == "defaults":
            if not isinstance(value, Mapping):
                raise LLMConfigError(f"{here}: expected a mapping of settings, got {type(value).__name__}")
            target = layer.all if key == "defaults" else layer.roles[key]
            for setting, v in value.items():
                if v is not None:
                    _set_role_value(target, str(setting), v, f"{here}.{setting}")
        elif key == "prices":
            layer.prices.update(_parse_prices(value, here))
        elif key in _GLOBAL_FIELDS:
            layer.globals[key] = (value, here)
        elif key in _ROLE_FIELDS or key == "base_url":
            _set_role_value(layer.all, key, value, here)
        else:
            close = nearest(key, [*ROLES, "defaults", "prices", *_GLOBAL_FIELDS, *_ROLE_FIELDS, "base_url"])
            raise LLMConfigError(
                f"{here}: unknown key {key!r}; {close} (a role: {', '.join(ROLES)}; defaults, prices, "
                "max_concurrency, cooldown_s, failures_to_cooldown, or a role setting for all roles)"
            )


def _parse_prices(value: Any, where: str) -> dict[str, Price]:
    if not isinstance(value, Mapping):
        raise LLMConfigError(
            f"{where}: expected `model: {{input: USD, output: USD}}` entries (per 1M tokens)"
        )
    prices: dict[str, Price] = {}
    for model, entry in value.items():
        try:
            if isinstance(entry, Mapping):
                prices[str(model)] = Price(float(entry["input"]), float(entry["output"]))
            else:
                low, high = entry
                prices[str(model)] = Price(float(low), float(high))
        except (KeyError, TypeError, ValueError):
            raise LLMConfigError(
                f"{where}.{model}: expected {{input: USD, output: USD}} per 1M tokens, got {entry!r}; fix the entry"
            ) from None
    return prices


def _read_yaml(path: Path) -> dict[str, Any]:
    """The recipe's `llm:` section (the whole file when it names no section)."""
    from oresearch_cli.config import load_recipe

    try:
        return load_recipe(path).section("llm")
    except LLMConfigError:
        raise
    except ConfigError as exc:
        raise LLMConfigError(str(exc)) from None


def _env_layer(environ: Mapping[str, str]) -> _Layer:
    layer = _Layer()
    if environ.get("OPENAI_BASE_URL", "").strip():
        layer.all["base_urls"] = (environ["OPENAI_BASE_URL"], "env OPENAI_BASE_URL")
    if environ.get("ORES_LLM_MAX_CONCURRENCY", "").strip():
        layer.globals["max_concurrency"] = (
            environ["ORES_LLM_MAX_CONCURRENCY"],
            "env ORES_LLM_MAX_CONCURRENCY",
        )
    scopes: list[tuple[str, dict[str, tuple[Any, str]]]] = [("LLM", layer.all)]
    scopes += [(role.upper(), layer.roles[role]) for role in ROLES]
    for prefix, target in scopes:
        for setting in _ENV_FIELDS:
            name = f"ORES_{prefix}_{setting.upper()}"
            value = environ.get(name, "").strip()
            if value:
                _set_role_value(target, setting, value, f"env {name}")
        # ORES_<ROLE>_API_KEY holds a key itself: use that variable unless another is named.
        key_var = f"ORES_{prefix}_API_KEY"
        if environ.get(key_var) and "api_key_env" not in target:
            target["api_key_env"] = (key_var, f"env {key_var}")
    return layer


_OPTIONAL = {
    "temperature",
    "max_tokens",
    "rpm",
    "tpm",
    "max_concurrency",
    "hedge_after_s",
}  # 0/none: unset, no limit


def _coerce(setting: str, value: Any, where: str) -> Any:
    """A raw setting (YAML value, flag, environment string) as the type `RoleConfig` holds."""
    how = "fix the value"
    try:
        if setting == "base_urls":
            urls = value.split(",") if isinstance(value, str) else list(value)
            cleaned = tuple(str(u).strip().rstrip("/") for u in urls if str(u).strip())
            how = "give http(s)://host[:port]/v1 URLs, comma-separated for several"
            if not cleaned:
                raise ValueError("no URL")
            for url in cleaned:
                if not url.startswith(("http://", "https://")):
                    raise ValueError(f"not an http(s) URL: {url!r}")
                if "?" in url or "#" in url:
                    # The client appends /chat/completions to the URL: after a query it becomes part
                    # of the query, and the server answers 404 (`model ... not found`).
                    tail = "?..." if "?" in url else "#..."
                    how = (
                        f"drop the {'query' if '?' in url else 'fragment'} ({safe_url(url)}) and send "
                        "request parameters as body fields with `extra_body` in the --config `llm:` section"
                    )
                    raise ValueError(
                        f"{safe_url(url)}{tail} has a {'query string' if '?' in url else 'fragment'}, "
                        "to which the client would append /chat/completions (a 404 from the server)"
                    )
            return cleaned
        if setting == "model":
            return str(value).strip()
        if setting == "api_key_env":
            return str(value).strip() or None
        if setting == "json_mode":
            mode = (
                {True: "json_schema", False: "none"}.get(value, value) if isinstance(value, bool) else value
            )
            if mode not in JSON_MODES:
                how = f"use one of {', '.join(JSON_MODES)}"
                raise ValueError(repr(value))
            return mode
        if setting == "extra_body":
            if not isinstance(value, Mapping):
                how = "give a mapping of request fields"
                raise ValueError(repr(value))
            return dict(value)
        # Numbers.
        if isinstance(value, bool):
            raise ValueError(repr(value))
        if setting in _OPTIONAL and (value is None or str(value).strip().lower() in ("", "none", "null")):
            return None
        number = float(value)
        if setting in _INT:
            if number != int(number):
                raise ValueError(f"{value!r} is not a whole number")
            number = int(number)
        if setting in _OPTIONAL and setting != "temperature" and number == 0:
            return None
        if number < 0 or (setting in _POSITIVE and number == 0):
            how = "use a number above 0" if setting in _POSITIVE else "use a number of 0 or more"
            raise ValueError(repr(value))
        return number
    except (TypeError, ValueError) as exc:
        raise LLMConfigError(f"{where}: invalid {setting} ({exc}); {how}") from None


def load_config(
    yaml_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    require: tuple[str, ...] | list[str] = (),
) -> LLMConfig:
    """The LLM configuration: flags (`overrides`) over YAML over the environment over defaults.

    `require` lists the roles that must be usable now (have a model); any other role raises
    `LLMConfigError` only when used. A role that names a key variable which is not set is an error.
    """
    environ = os.environ if environ is None else environ
    layers = [_env_layer(environ)]
    source = ""
    if yaml_path is not None:
        path = Path(yaml_path)
        source = str(path)
        yaml_layer = _Layer()
        _parse_section(_read_yaml(path), f"{path}:", yaml_layer)
        layers.append(yaml_layer)
    if overrides:
        flag_layer = _Layer()
        _parse_section(dict(overrides), "flag", flag_layer)
        layers.append(flag_layer)

    globals_: dict[str, Any] = {}
    prices: dict[str, Price] = {}
    for layer in layers:
        for key, (value, where) in layer.globals.items():
            globals_[key] = _coerce(key, value, where)
        prices.update(layer.prices)

    roles: dict[str, RoleConfig] = {}
    for role in ROLES:
        values: dict[str, Any] = {}
        where_of: dict[str, str] = {}
        for layer in layers:
            for scope in (layer.all, layer.roles[role]):
                for key, (value, where) in scope.items():
                    values[key] = _coerce(key, value, where)
                    where_of[key] = where
        config = replace(RoleConfig(name=role), **values)
        _check_key(config, where_of.get("api_key_env"), environ)
        roles[role] = config

    llm = LLMConfig(
        roles=roles,
        max_concurrency=globals_.get("max_concurrency", 64),
        cooldown_s=float(globals_.get("cooldown_s", 30.0)),
        failures_to_cooldown=max(1, int(globals_.get("failures_to_cooldown", 3))),
        prices=PriceTable().with_overrides(prices),
        source=source,
    )
    for role in require:
        llm.role(role)
    return llm


def _check_key(config: RoleConfig, where: str | None, environ: Mapping[str, str]) -> None:
    """A key variable named on purpose must be set; so must one for a hosted API such as OpenAI's."""
    name = config.api_key_env
    if name is None or environ.get(name):
        return
    if where is not None:
        raise LLMConfigError(
            f"{where}: llm {config.name} reads its API key from ${name}, which is not set; "
            f"export {name}=... or name another variable"
        )
    hosted = [url for url in config.base_urls if any(host in url for host in _HOSTED_APIS)]
    if hosted and config.model:
        raise LLMConfigError(
            f"llm {config.name}: {hosted[0]} needs an API key; set {name} (or ORES_{config.name.upper()}_API_KEY_ENV "
            "to the name of the variable holding it)"
        )
