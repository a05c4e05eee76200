"""Table definitions (SQLAlchemy 2 declarative). The schema itself is owned by migrations/."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "DAEMON_RESULTS",
    "MAX_ROW_ID",
    "NAME_MAX_CHARS",
    "ONESHOT_SOURCES",
    "RESULT_SOURCES",
    "Base",
    "ProbeResultRow",
    "parse_row_id",
    "ResultSource",
    "UTCDateTime",
]

MAX_ROW_ID = 2**63 - 1  # BIGINT: a larger id cannot exist, and would overflow the database driver


def parse_row_id(raw: str) -> int | None:
    """A row id from a URL, or None. str.isdigit() and aiohttp's \\d also take "²", which int() refuses."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not 1 <= int(raw) <= MAX_ROW_ID:
        return None
    return int(raw)


# Probe and target names are configuration keys; settings should reject longer ones.
NAME_MAX_CHARS = 200
# Free-form strings from upstream (finish/stop reasons, error text) are cut to these lengths.
REASON_MAX_CHARS = 200
ERROR_DETAIL_MAX_CHARS = 2000
# Who wrote a result: the daemon's scheduler (load-test canaries count as its results too), or one
# run of `llm-monitor probe` / `llm-monitor doctor`, which trends, alerts and the dashboard leave out.
ResultSource = Literal["daemon", "probe", "doctor"]
RESULT_SOURCES: tuple[ResultSource, ...] = get_args(ResultSource)
ONESHOT_SOURCES: tuple[ResultSource, ...] = tuple(s for s in RESULT_SOURCES if s != "daemon")

# Deterministic constraint names, so that later migrations (and SQLite batch mode) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is stored as UTC and always read back as an aware UTC datetime.

    SQLite has no time zone type: `DateTime(timezone=True)` returns naive values there, so
    naive values read back are taken as UTC, and naive values written are refused.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        # SQLite compares timestamps as text, so every stored value must use the same (UTC, no offset) form.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ProbeResultRow(Base):
    """One probe request (a flattened `monitor.results.ProbeResult`)."""

    __tablename__ = "probe_results"
    __table_args__ = (
        Index("ix_probe_results_probe_started_at", "probe", "started_at"),
        Index("ix_probe_results_target_started_at", "target", "started_at"),
        # The dashboard lists the (few) one-shot results of the last day apart from the daemon's.
        Index("ix_probe_results_source_started_at", "source", "started_at"),
    )

    # SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    probe: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    target: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    endpoint: Mapped[str] = mapped_column(String(16))
    stream: Mapped[bool]
    ok: Mapped[bool]
    error_kind: Mapped[str | None] = mapped_column(String(32))
    error_detail: Mapped[str | None] = mapped_column(Text)
    timeout_phase: Mapped[str | None] = mapped_column(String(16))
    http_status: Mapped[int | None]
    ttft_ms: Mapped[float | None]
    latency_ms: Mapped[float | None]
    itl_ms_mean: Mapped[float | None]
    itl_ms_p95: Mapped[float | None]
    itl_ms_max: Mapped[float | None]
    chunk_count: Mapped[int | None]
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    tokens_estimated: Mapped[bool | None]
    finish_reason: Mapped[str | None] = mapped_column(String(REASON_MAX_CHARS))
    # vLLM reports a stop token id (int) or the matched stop string; ints are kept as decimal text.
    stop_reason: Mapped[str | None] = mapped_column(String(REASON_MAX_CHARS))
    max_tokens: Mapped[int | None]
    truncated: Mapped[bool]
    text_sample: Mapped[str | None] = mapped_column(Text)
    # [{"name": ..., "passed": ..., "detail": ...}, ...]
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # Comma-joined names of the failed checks ("" when none failed), so filters need no JSON functions.
    failed_checks: Mapped[str] = mapped_column(String)
    # Set for canaries sent during a load test (and results linked to it); a deleted run leaves them unlinked.
    load_run_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("load_runs.id", ondelete="SET NULL"))
    source: Mapped[str] = mapped_column(String(16), server_default="daemon")
    # Server text in this row (reply, reasons, error detail) had characters replaced to be storable.
    sanitised: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Migration 0008: reasoning models and tool calls (see monitor.meter); NULL on older rows.
    ttfa_ms: Mapped[float | None]
    reasoning_tokens: Mapped[int | None]
    reasoning_tokens_estimated: Mapped[bool | None]
    tool_call_count: Mapped[int | None]
    # Migration 0012: expect.golden (NULL when the probe has none or it could not be graded) and cost.
    golden_similarity: Mapped[float | None]
    golden_method: Mapped[str | None] = mapped_column(String(16))
    golden_passed: Mapped[bool | None]
    cost: Mapped[float | None]
    cost_currency: Mapped[str | None] = mapped_column(String(3))


# Daemon reads (trends, rollups, alert windows, the dashboard) add this to every query on probe_results.
DAEMON_RESULTS: ColumnElement[bool] = ProbeResultRow.source == "daemon"
