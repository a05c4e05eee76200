"""Tables of the loadtest feature: one row per load run, one row per second of each run.

Migrations 0004 and 0007 create exactly these; tests/test_migrations.py checks that they do not drift.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from monitor.store.models import NAME_MAX_CHARS, Base, UTCDateTime

__all__ = ["LoadRunRow", "LoadSeriesRow"]

_ID = BigInteger().with_variant(Integer, "sqlite")


class LoadRunRow(Base):
    """One `llm-monitor loadtest` run: what was asked, how it went, and the SLO verdict."""

    __tablename__ = "load_runs"
    __table_args__ = (Index("ix_load_runs_started_at", "started_at"), Index("ix_load_runs_status", "status"))

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The runner refreshes this while it runs; a `running` row whose heartbeat stopped was killed.
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # running | passed | failed | completed (no SLO given) | aborted
    status: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    base_url: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(NAME_MAX_CHARS))
    # How the load was made: endpoint, users or rate, arrival, shape, duration, workers, max_tokens, ...
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Metrics over the whole run (see monitor.loadtest.slo_metrics), canaries, sweep steps, errors.
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # [{"metric", "op", "threshold", "value", "passed"}, ...]; empty without --slo.
    slo: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    verdict: Mapped[str | None] = mapped_column(String(8))  # pass | fail | None without an SLO
    baseline_id: Mapped[int | None] = mapped_column(_ID, ForeignKey("load_runs.id", ondelete="SET NULL"))
    abort_reason: Mapped[str | None] = mapped_column(Text)


class LoadSeriesRow(Base):
    """One second of a load run, all endpoints together (t_s counts from the first request)."""

    __tablename__ = "load_series"

    run_id: Mapped[int] = mapped_column(_ID, ForeignKey("load_runs.id", ondelete="CASCADE"), primary_key=True)
    t_s: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime())
    users: Mapped[int | None]
    requests: Mapped[int]
    failures: Mapped[int]
    sent: Mapped[int]
    output_tokens: Mapped[int]
    truncated: Mapped[int]
    ttft_p50_ms: Mapped[float | None]
    ttft_p95_ms: Mapped[float | None]
    itl_p50_ms: Mapped[float | None]
    itl_p95_ms: Mapped[float | None]
    e2e_p50_ms: Mapped[float | None]
    e2e_p95_ms: Mapped[float | None]
    lag_p95_ms: Mapped[float | None]
    # {"http_error": 3, "timeout": 1}; empty when nothing failed.
    errors: Mapped[dict[str, int]] = mapped_column(JSON)
    # Migration 0007: time to the first answer token, and the reasoning part of output_tokens.
    ttfa_p50_ms: Mapped[float | None]
    ttfa_p95_ms: Mapped[float | None]
    reasoning_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    # Migration 0014: per-request goodput (good of judged) and the generator's own timing error.
    good: Mapped[int] = mapped_column(Integer, server_default="0")
    goodput_judged: Mapped[int] = mapped_column(Integer, server_default="0")
    read_lag_p99_ms: Mapped[float | None]
    ttft_err_p99_ms: Mapped[float | None]
