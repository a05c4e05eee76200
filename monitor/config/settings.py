"""`Settings`, the whole validated config, and the service sections (`storage:`, `api:`, `retention:`,
`daemon:`) that only the daemon and the CLI read."""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator, model_validator

from monitor.config.alerts import MaintenanceWindow, ReceiverSettings, RuleSettings, check_references
from monitor.config.base import Days, Model, Seconds, unique
from monitor.config.probes import ProbeSettings, TargetSettings
from monitor.config.server_rules import check_server_rules
from monitor.errors import ConfigError

__all__ = [
    "DEFAULT_DB_URL",
    "APISettings",
    "DaemonSettings",
    "RetentionSettings",
    "Settings",
    "StorageSettings",
]

DEFAULT_DB_URL = "sqlite+aiosqlite:///llm-monitor.db"


class StorageSettings(Model):
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

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith("postgres")


class APISettings(Model):
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


class RetentionSettings(Model):
    raw_days: Days = Field(14.0, gt=0, description="keep raw probe results this long")
    minute_rollup_days: Days = Field(30.0, gt=0)
    hour_rollup_days: Days = Field(400.0, gt=0)
    interval_s: Seconds = Field(3600.0, gt=0, description="how often the retention job runs")
    rollup_interval_s: Seconds = Field(60.0, gt=0, description="how often new results are rolled up")


class DaemonSettings(Model):
    shutdown_grace_s: Seconds = Field(10.0, ge=0, description="wait this long for in-flight probes on shutdown")
    max_concurrent_probes: int = Field(64, ge=1, le=1_000_000)
    misfire_grace_s: Seconds = Field(30.0, gt=0)
    absence_eval_interval_s: Seconds = Field(15.0, gt=0)
    lease_ttl_s: Seconds = Field(15.0, gt=0, description="PostgreSQL: a dead leader replica is replaced within this")
    replica_id: str | None = Field(
        None, min_length=1, max_length=200, description="this replica's name in the lease (default hostname:pid:random)"
    )
    outage_buffer_max: int = Field(
        5000,
        ge=1,
        le=10_000_000,
        description="results kept in memory while the database is down; beyond it the oldest are dropped",
    )


class Settings(Model):
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
        unique("targets", [t.name for t in self.targets])
        unique("probes", [p.name for p in self.probes])
        names = {t.name for t in self.targets}
        for i, probe in enumerate(self.probes):
            if probe.target not in names:
                raise ConfigError(f"probes[{i}].target: unknown target {probe.target!r} (targets: {_listed(names)})")
        check_references(
            self.rules, self.receivers, self.maintenance, probes={p.name for p in self.probes}, targets=names,
            doctored={t.name: t.doctor for t in self.targets if t.doctor is not None},
        )  # fmt: skip
        check_server_rules(
            self.rules, probe_targets={p.name: p.target for p in self.probes},
            scraped={t.name for t in self.targets if t.metrics is not None},
        )  # fmt: skip
        return self

    def target(self, name: str) -> TargetSettings:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)

    def api_key(self, target: str) -> str | None:
        secret = self.api_keys.get(target)
        return secret.get_secret_value() if secret is not None else None

    def plain_receiver_secrets(self) -> dict[str, str]:
        """Receiver signing secrets by receiver name (filled by `load_settings`; none after `parse_settings`)."""
        return {name: secret.get_secret_value() for name, secret in self.receiver_secrets.items()}

    def advice(self) -> list[str]:
        """Valid but probably unintended settings, one line each (`check-config` prints, `run` logs them)."""
        lines: list[str] = []
        timed = [p for p in self.probes if p.cron is None]
        if self.storage.is_postgres and timed:
            # Only PostgreSQL elects a leader; SQLite has one replica by construction.
            shortest = min(timed, key=lambda p: p.interval_s)
            if self.daemon.lease_ttl_s > shortest.interval_s:
                lines.append(
                    f"daemon.lease_ttl_s={self.daemon.lease_ttl_s:g} is longer than the shortest probe interval "
                    f"({shortest.interval_s:g} s, probe {shortest.name}): after a leader dies, its probes may skip "
                    f"up to {self.daemon.lease_ttl_s + shortest.interval_s:.0f} s (lease + interval); "
                    "keep lease_ttl_s <= interval_s"
                )
        return lines


def _listed(names: set[str]) -> str:
    return ", ".join(sorted(names)) or "none defined"
