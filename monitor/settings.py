"""Configuration: YAML file + `MONITOR_*` environment + CLI flags -> one validated `Settings`.

This is the only module that reads the environment. Every validation error is turned into a
one-line `ConfigError` that names the YAML path, for example `probes[1].max_tokens: must be >= 1`.

The file is read by a strict YAML loader (`read_config_yaml`): plain JSON-like data only. Duplicate
keys, aliases (`*name`, so no billion-laughs expansion), merge keys, tags and non-JSON scalars
(dates, `!!binary`, `!!set`) are refused, and so is nesting deeper than `MAX_CONFIG_DEPTH`. Models
are strict (`"512"` is not a number) and floats finite; every duration is at most `MAX_DURATION_S`,
so whatever validates can be scheduled (APScheduler and `timedelta` overflow long before 1e300).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from monitor.alerts.config import (
    MAX_DURATION_S,
    MaintenanceWindow,
    ReceiverSettings,
    RuleSettings,
    check_headers,
    check_references,
    resolve_receiver_secrets,
)
from monitor.errors import ConfigError

_M = TypeVar("_M", bound=BaseModel)
EndpointKind = Literal["chat", "completion"]
Role = Literal["system", "user", "assistant", "tool"]

DEFAULT_DB_URL = "sqlite+aiosqlite:///llm-monitor.db"
ENV_PREFIX = "MONITOR_"
# Every fixed variable llm-monitor reads: MONITOR_DB_URL here, the other two as CLI option fallbacks.
# Secrets are read from the variables a config names (see `named_env_vars`).
ENV_VARS = frozenset({f"{ENV_PREFIX}DB_URL", f"{ENV_PREFIX}CONFIG", f"{ENV_PREFIX}LOG_LEVEL"})

MAX_DAYS = 36500  # retention: now - timedelta(days=...) must stay a valid datetime
MAX_INT32 = 2**31 - 1  # stored in INTEGER columns (PostgreSQL int4)
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_DEPTH = 64

# Request fields a probe may set at its top level; they are sent as-is. OpenAI's names plus
# vLLM's extras (wire reference §5). Anything else goes under `extra_body`, so a typo such as
# `max_token` is an error instead of a silently ignored field (vLLM ignores unknown keys).
SAMPLING_PARAMS = frozenset(
    {
        "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_completion_tokens", "n",
        "presence_penalty", "response_format", "seed", "stop", "stream_options", "top_p", "tools",
        "tool_choice", "parallel_tool_calls", "user", "reasoning_effort", "include_reasoning", "echo",
        "suffix", "best_of", "top_k", "min_p", "repetition_penalty", "length_penalty", "use_beam_search",
        "stop_token_ids", "include_stop_str_in_output", "ignore_eos", "min_tokens", "skip_special_tokens",
        "spaces_between_special_tokens", "truncate_prompt_tokens", "prompt_logprobs", "allowed_token_ids",
        "bad_words", "add_generation_prompt", "continue_final_message", "add_special_tokens",
        "chat_template", "chat_template_kwargs", "guided_json", "guided_regex", "guided_choice",
        "guided_grammar", "structured_outputs", "priority", "request_id", "return_tokens_as_token_ids",
    }
)  # fmt: skip

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
Name = Annotated[str, Field(pattern=_NAME, description="letters, digits, _ . : - (max 100)")]
# Seconds, finite and at most a leap year: longer is a typo, and would overflow the scheduler's datetimes.
Duration = Annotated[float, Field(le=MAX_DURATION_S)]
Days = Annotated[float, Field(le=MAX_DAYS)]


class _Model(BaseModel):
    # strict: YAML gives real numbers and booleans, so a quoted "512" is a mistake, not a number.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class StorageSettings(_Model):
    url: str = Field(DEFAULT_DB_URL, min_length=1)

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        # Only the scheme is checked here; the store normalises and connects (and censors passwords).
        if not re.match(r"^(sqlite(\+aiosqlite)?|postgres(ql)?(\+asyncpg)?)://", value):
            shown = re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", value)
            raise ValueError(
                f"unsupported database URL {shown!r} (use sqlite+aiosqlite:///FILE or postgresql+asyncpg://USER@HOST/DB)"
            )
        return value


class TargetSettings(_Model):
    name: Name
    base_url: str = Field(description="OpenAI-compatible base URL, including /v1")
    model: str | None = None
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    timeout_s: Duration = Field(60.0, gt=0, description="whole request")
    connect_timeout_s: Duration = Field(10.0, gt=0)
    first_byte_timeout_s: Duration | None = Field(
        None, gt=0, description="until the first body bytes; default timeout_s"
    )
    chunk_timeout_s: Duration = Field(30.0, gt=0, description="longest silence between two stream chunks")
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0, description="largest decoded reply; more is body_too_large")
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL, for example http://127.0.0.1:8000/v1")
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _no_auth_header(cls, value: dict[str, str]) -> dict[str, str]:
        if any(k.lower() == "authorization" for k in value):
            raise ValueError("do not put credentials in headers; use api_key_env")
        check_headers(value)
        return value


class Message(_Model):
    role: Role
    content: str


class Expect(_Model):
    """User assertions on a reply; each becomes a check named `expect.<key>`."""

    contains: list[str] = Field(default_factory=list)
    not_contains: list[str] = Field(default_factory=list)
    regex: str | None = None
    json_valid: bool = False
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=0)
    cjk_ratio_min: float | None = Field(None, ge=0, le=1)
    max_ttft_ms: float | None = Field(None, gt=0)
    max_latency_ms: float | None = Field(None, gt=0)
    finish_reason_in: list[str] | None = None

    @field_validator("contains", "not_contains", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class ProbeSettings(_Model):
    name: Name
    target: str
    endpoint: EndpointKind = "chat"
    messages: list[Message] | None = None
    prompt: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_INT32)
    temperature: float | None = Field(None, ge=0)
    stream: bool = True
    interval_s: Duration = Field(60.0, gt=0)
    cron: str | None = None
    jitter_s: Duration = Field(0.0, ge=0)
    expect: Expect = Field(default_factory=Expect)
    sampling: dict[str, Any] = Field(default_factory=dict, description="known sampling parameters, sent as-is")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="any other request fields, sent as-is")

    @field_validator("cron")
    @classmethod
    def _valid_crontab(cls, value: str | None) -> str | None:
        # The same parser the scheduler uses, so `check-config` rejects what `run` would.
        if value is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(value, timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"invalid crontab {value!r}: {exc}") from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _collect_sampling(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        # Unknown keys stay in place so that extra="forbid" reports them with their YAML path.
        sampling = dict(data.get("sampling") or {})
        rest: dict[str, Any] = {}
        for key, value in data.items():
            if key in SAMPLING_PARAMS:
                sampling[key] = value
            else:
                rest[key] = value
        rest["sampling"] = sampling
        return rest

    @model_validator(mode="after")
    def _check_shape(self) -> ProbeSettings:
        if self.cron is not None and "interval_s" in self.model_fields_set:
            raise ValueError("give interval_s or cron, not both")
        if self.endpoint == "chat" and not self.messages:
            raise ValueError("a chat probe needs messages: [{role: user, content: ...}]")
        if self.endpoint == "completion" and self.prompt is None:
            raise ValueError("a completion probe needs prompt")
        if self.endpoint == "chat" and self.prompt is not None:
            raise ValueError("prompt is for completion probes; a chat probe uses messages")
        if self.endpoint == "completion" and self.messages:
            raise ValueError("messages are for chat probes; a completion probe uses prompt")
        if not self.stream and self.expect.max_ttft_ms is not None:
            raise ValueError("expect.max_ttft_ms needs stream: true (TTFT is not measurable without streaming)")
        return self


class APISettings(_Model):
    """The daemon's HTTP API (health, metrics, JSON API, dashboard); see monitor.api for who may read and write."""

    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    token_env: str | None = Field(None, description="environment variable holding the bearer token for writes")
    read_token_env: str | None = Field(None, description="environment variable holding the token for reads")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host header values accepted besides localhost, 127.0.0.1 and [::1]"
    )
    external_url: str | None = Field(None, description="URL of this API as seen by people (links in alerts)")

    @field_validator("allowed_hosts")
    @classmethod
    def _plain_hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            if not re.fullmatch(r"[A-Za-z0-9._:\[\]-]{1,255}", host):
                raise ValueError(f"{host!r} is not a host name (give the Host header value, e.g. monitor.internal)")
        return [host.lower() for host in value]


class RetentionSettings(_Model):
    raw_days: Days = Field(14.0, gt=0, description="keep raw probe results this long")
    minute_rollup_days: Days = Field(30.0, gt=0)
    hour_rollup_days: Days = Field(400.0, gt=0)
    interval_s: Duration = Field(3600.0, gt=0, description="how often the retention job runs")
    rollup_interval_s: Duration = Field(60.0, gt=0, description="how often new results are rolled up")


class DaemonSettings(_Model):
    shutdown_grace_s: Duration = Field(10.0, ge=0, description="wait this long for in-flight probes on shutdown")
    max_concurrent_probes: int = Field(64, ge=1, le=1_000_000)
    misfire_grace_s: Duration = Field(30.0, gt=0)
    absence_eval_interval_s: Duration = Field(15.0, gt=0)
    lease_ttl_s: Duration = Field(15.0, gt=0, description="PostgreSQL: a dead leader replica is replaced within this")
    replica_id: str | None = Field(
        None, min_length=1, max_length=200, description="this replica's name in the lease (default hostname:pid:random)"
    )
    outage_buffer_max: int = Field(
        5000,
        ge=1,
        le=10_000_000,
        description="results kept in memory while the database is down; beyond it the oldest are dropped",
    )


class Settings(_Model):
    """Everything the CLI, probes and daemon need, validated once at the edge."""

    storage: StorageSettings = Field(default_factory=StorageSettings)
    targets: list[TargetSettings] = Field(default_factory=list)
    probes: list[ProbeSettings] = Field(default_factory=list)
    api: APISettings = Field(default_factory=APISettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    rules: list[RuleSettings] = Field(default_factory=list)
    receivers: list[ReceiverSettings] = Field(default_factory=list)
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    # Resolved from each target's api_key_env at load time; never written anywhere.
    api_keys: dict[str, SecretStr] = Field(default_factory=dict, exclude=True, repr=False)
    # Resolved from api.token_env and api.read_token_env; never written anywhere.
    api_token: SecretStr | None = Field(None, exclude=True, repr=False)
    api_read_token: SecretStr | None = Field(None, exclude=True, repr=False)
    # Resolved from each receiver's secret_env; never written anywhere.
    receiver_secrets: dict[str, SecretStr] = Field(default_factory=dict, exclude=True, repr=False)

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        _unique("targets", [t.name for t in self.targets])
        _unique("probes", [p.name for p in self.probes])
        names = {t.name for t in self.targets}
        for i, probe in enumerate(self.probes):
            if probe.target not in names:
                choices = ", ".join(sorted(names)) or "none defined"
                raise ConfigError(f"probes[{i}].target: unknown target {probe.target!r} (targets: {choices})")
        check_references(self)
        return self

    def target(self, name: str) -> TargetSettings:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)

    def api_key(self, target: str) -> str | None:
        secret = self.api_keys.get(target)
        return secret.get_secret_value() if secret is not None else None


def _unique(section: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ConfigError(f"{section}[{i}].name: duplicate name {name!r}")
        seen.add(name)


def default_probes(target: str) -> list[dict[str, Any]]:
    """The probe set `probe` runs without a config: chat and completion, streaming and not, "你好"."""
    hello = [{"role": "user", "content": "你好"}]
    probes: list[dict[str, Any]] = []
    for stream in (True, False):
        suffix = "stream" if stream else "nostream"
        probes.append(
            {"name": f"chat-hello-{suffix}", "target": target, "endpoint": "chat", "messages": hello,
             "max_tokens": 512, "temperature": 0.7, "stream": stream}
        )  # fmt: skip
        # No max_tokens: shows what the server does by default (vLLM completions stop at 16 tokens).
        probes.append(
            {"name": f"completion-hello-{suffix}", "target": target, "endpoint": "completion",
             "prompt": "你好", "stream": stream}
        )  # fmt: skip
    return probes


def load_settings(
    path: Path | None = None,
    *,
    base_url: str | None = None,
    model: str | None = None,
    db_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build `Settings` from a YAML file and/or target flags; `db_url` and `MONITOR_DB_URL` override storage.

    Precedence for the database URL: `db_url` (the --db flag), then `MONITOR_DB_URL`, then the file.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = _read_yaml(path) if path is not None else {}
    if base_url is not None:
        target = {"name": "default", "base_url": base_url, "model": model}
        # A malformed section is left as it is, for validation to name (`targets: must be a list`).
        others = raw.get("targets") or []
        if isinstance(others, list):
            raw["targets"] = [target, *[t for t in others if not isinstance(t, dict) or t.get("name") != "default"]]
        if path is None:
            raw["probes"] = default_probes("default")
    elif model is not None:
        raise ConfigError("--model needs --base-url")
    url = db_url or env.get(f"{ENV_PREFIX}DB_URL")
    if url and isinstance(raw.get("storage") or {}, dict):
        raw["storage"] = {**(raw.get("storage") or {}), "url": url}
    settings = parse_settings(raw)
    return resolve_keys(settings, env)


def parse_settings(raw: Mapping[str, Any]) -> Settings:
    """Validate a decoded config mapping, turning pydantic errors into one-line ConfigErrors."""
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def named_env_vars(settings: Settings) -> set[str]:
    """The environment variables a config names for its secrets (api_key_env, token_env, secret_env)."""
    names = {t.api_key_env for t in settings.targets if t.api_key_env}
    names |= {r.secret_env for r in settings.receivers if r.secret_env}
    names |= {name for name in (settings.api.token_env, settings.api.read_token_env) if name}
    return names


def resolve_keys(settings: Settings, environ: Mapping[str, str] | None = None) -> Settings:
    """Read every secret the settings name (`api_key_env`, `api.token_env`) from the environment."""
    env = os.environ if environ is None else environ
    token = _secret(env, "api.token_env", settings.api.token_env)
    read_token = _secret(env, "api.read_token_env", settings.api.read_token_env)
    keys: dict[str, SecretStr] = {}
    for i, target in enumerate(settings.targets):
        key = _secret(env, f"targets[{i}].api_key_env", target.api_key_env)
        if key is not None:
            keys[target.name] = key
    secrets = resolve_receiver_secrets(settings.receivers, env)
    update = {"api_keys": keys, "api_token": token, "api_read_token": read_token, "receiver_secrets": secrets}
    return settings.model_copy(update=update)


def _secret(env: Mapping[str, str], field: str, name: str | None) -> SecretStr | None:
    if name is None:
        return None
    value = env.get(name)
    if not value:
        raise ConfigError(f"{field}: environment variable {name} is not set")
    # It is sent in an Authorization header, where a line break would inject headers (aiohttp raises).
    if any(c in value for c in "\r\n\0"):
        raise ConfigError(f"{field}: environment variable {name} contains a line break or NUL")
    return SecretStr(value)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: config file is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    loaded = read_config_yaml(text, source=str(path))
    if loaded is None:
        raise ConfigError(f"{path}: the config file is empty (see `llm-monitor init` for an example)")
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (storage:, targets:, probes:)")
    return loaded


class _Refused(Exception):
    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem, self.mark = problem, mark


class _ConfigLoader(yaml.SafeLoader):
    """Builds the node tree only (`_plain` turns it into data); refuses aliases and deep nesting as it goes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(f"aliases (*{event.anchor}) are not allowed in a config file", event.start_mark)
        # The composer recurses once per level: refuse before Python's recursion limit does.
        self.depth += 1
        if self.depth > MAX_CONFIG_DEPTH:
            raise _Refused(f"nested deeper than {MAX_CONFIG_DEPTH} levels", event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


# YAML 1.2 (and JSON) floats without a dot, such as 1e3; YAML 1.1 would read them as strings.
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)
_YAML = "tag:yaml.org,2002:"
_SCALARS = {f"{_YAML}{kind}" for kind in ("null", "bool", "int", "float", "str")}
_REFUSED_TAGS = {
    f"{_YAML}timestamp": "a date or time is not allowed here (quote it to send text)",
    f"{_YAML}binary": "!!binary values are not allowed",
    f"{_YAML}set": "!!set values are not allowed (use a list)",
    f"{_YAML}omap": "!!omap values are not allowed (use a mapping)",
    f"{_YAML}pairs": "!!pairs values are not allowed (use a mapping)",
    f"{_YAML}merge": "merge keys (<<) are not allowed",
}


def read_config_yaml(text: str, *, source: str = "<config>") -> Any:
    """Parse a config document into plain JSON-like data (dict, list, str, int, float, bool, None).

    Raises ConfigError with one line: the YAML path (`probes[0].extra_body.when`) or the position.
    """
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _plain(loader, node, "")
    except _Refused as exc:
        raise ConfigError(f"{source}: {exc.problem}{_at(exc.mark)}") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{source}: invalid YAML{_at(getattr(exc, 'problem_mark', None))}: {problem}") from None
    finally:
        loader.dispose()


def _at(mark: Any) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _plain(loader: _ConfigLoader, node: yaml.Node, path: str) -> Any:
    def refuse(problem: str) -> NoReturn:
        raise ConfigError(f"{path or '(top level)'}: {problem} (line {node.start_mark.line + 1})")

    if node.tag in _REFUSED_TAGS:
        refuse(_REFUSED_TAGS[node.tag])
    if isinstance(node, yaml.ScalarNode):
        if node.tag not in _SCALARS:
            refuse(f"YAML tag {node.tag} is not allowed")
        return loader.construct_object(node)
    if isinstance(node, yaml.SequenceNode):
        if node.tag != f"{_YAML}seq":
            refuse(f"YAML tag {node.tag} is not allowed")
        return [_plain(loader, item, f"{path}[{i}]") for i, item in enumerate(node.value)]
    if node.tag != f"{_YAML}map":
        refuse(f"YAML tag {node.tag} is not allowed")
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if key_node.tag in _REFUSED_TAGS:
            refuse(_REFUSED_TAGS[key_node.tag])
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _SCALARS:
            refuse("a key must be a plain string or number")
        key = loader.construct_object(key_node)
        where = f"{path}.{key}" if path else str(key)
        if key in out:
            raise ConfigError(f"{where}: duplicate key (line {key_node.start_mark.line + 1})")
        out[key] = _plain(loader, value_node, where)
    return out


def format_validation_error(exc: ValidationError) -> str:
    """First error as `path: message`, plus a count of the others."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    path = _loc_to_path(first["loc"])
    message = _friendly(first)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{path}: {message}{more}" if path else f"{message}{more}"


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after[_check_shape()]", "function-before[_collect_sampling()]"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


# Pydantic error types whose message is a fixed phrase.
_PHRASES = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
    "string_pattern_mismatch": "must use letters, digits, _ . : - only (max 100 characters)",
    "model_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "finite_number": "must be a finite number",
}
_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than_equal": ("le", "<=")}
_PROBE_EXTRA = "unknown field (not a probe option nor a known sampling parameter; put custom fields under extra_body)"


def _friendly(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    loc = error["loc"]
    if kind == "extra_forbidden" and len(loc) == 3 and loc[0] == "probes":
        return _PROBE_EXTRA
    if kind in _PHRASES:
        quoted = kind.endswith("_type") and kind != "string_type" and isinstance(error.get("input"), str)
        return _PHRASES[kind] + (" (without quotes)" if quoted else "")
    if kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        bound = ctx[key]
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        hint = " (366 days)" if bound == MAX_DURATION_S and key == "le" else ""
        return f"must be {op} {bound}{hint}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    msg = str(error["msg"])
    return msg[:1].lower() + msg[1:]


def to_seconds(value: float | str) -> float:
    """Parse `90`, `90s`, `15m`, `2h`, `7d` into seconds (used by CLI durations)."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", value)
        if match is None:
            raise ConfigError(f"{value!r}: not a duration (use 30s, 5m, 2h, 7d)")
        scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[match.group(2)]
        seconds = float(match.group(1)) * scale
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{value!r}: not a duration")
    return seconds


def parse_mock_config(model: type[_M], values: Mapping[str, Any]) -> _M:
    """Validate mock flags with the same one-line error format as the config file."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        field, sep, rest = format_validation_error(exc).partition(": ")
        raise ConfigError(f"--{field.replace('_', '-')}{sep}{rest}" if sep else field) from None
