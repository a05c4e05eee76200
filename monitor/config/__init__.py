"""Configuration: the YAML file, the `MONITOR_*` environment and CLI flags, validated once into `Settings`.

    base.py         the shared model base and field types: Name, Seconds, Crontab, secrets
    probes.py       targets: and probes:
    alerts.py       rules:, receivers:, maintenance:
    settings.py     Settings and the service sections (storage:, api:, retention:, daemon:)
    strict_yaml.py  the strict YAML reader
    loader.py       load_settings: file + environment + flags -> Settings (the only reader of os.environ)

Nothing here imports the rest of monitor (only monitor.errors), and APScheduler is imported only
when a crontab is validated, so a Locust worker can read settings cheaply.
"""

from monitor.config.alerts import (
    RATE_METRICS,
    RESERVED_LABELS,
    MaintenanceWindow,
    ReceiverSettings,
    RuleSettings,
    Scope,
    resolve_receiver_secrets,
)
from monitor.config.base import MAX_DURATION_S, MAX_INT32, Name, Seconds, to_seconds
from monitor.config.loader import (
    ENV_PREFIX,
    ENV_VARS,
    format_validation_error,
    load_settings,
    named_env_vars,
    parse_mock_config,
    parse_settings,
    resolve_keys,
)
from monitor.config.probes import (
    SAMPLING_PARAMS,
    EndpointKind,
    Expect,
    Message,
    ProbeSettings,
    Role,
    TargetSettings,
    default_probes,
)
from monitor.config.settings import (
    DEFAULT_DB_URL,
    APISettings,
    DaemonSettings,
    RetentionSettings,
    Settings,
    StorageSettings,
)
from monitor.config.strict_yaml import MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH, read_config_yaml

__all__ = [
    "DEFAULT_DB_URL",
    "ENV_PREFIX",
    "ENV_VARS",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_DURATION_S",
    "MAX_INT32",
    "RATE_METRICS",
    "RESERVED_LABELS",
    "SAMPLING_PARAMS",
    "APISettings",
    "DaemonSettings",
    "EndpointKind",
    "Expect",
    "MaintenanceWindow",
    "Message",
    "Name",
    "ProbeSettings",
    "ReceiverSettings",
    "RetentionSettings",
    "Role",
    "RuleSettings",
    "Scope",
    "Seconds",
    "Settings",
    "StorageSettings",
    "TargetSettings",
    "default_probes",
    "format_validation_error",
    "load_settings",
    "named_env_vars",
    "parse_mock_config",
    "parse_settings",
    "read_config_yaml",
    "resolve_keys",
    "resolve_receiver_secrets",
    "to_seconds",
]
