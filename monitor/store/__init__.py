"""Persistence: engine and migrations (`db`), tables (`models`), queries (`repo`) and their views (`views`).

The daemon's single result writer is `writer.ResultWriter`.
"""

from __future__ import annotations

# Every table, whichever model module is imported first: probe_results has a foreign key to
# load_runs, which SQLAlchemy can only resolve when that table is defined too.
from monitor.store import schema as schema
from monitor.store.db import (
    alembic_config,
    censor_url,
    connect,
    create_engine,
    current_revision,
    downgrade,
    downgrade_sync,
    ensure_schema,
    head_revision,
    normalize_url,
    ping,
    upgrade,
    upgrade_sync,
)
from monitor.store.repo import Store
from monitor.store.views import ResultLine, StoredResult

__all__ = [
    "ResultLine",
    "Store",
    "StoredResult",
    "alembic_config",
    "censor_url",
    "connect",
    "create_engine",
    "current_revision",
    "downgrade",
    "downgrade_sync",
    "ensure_schema",
    "head_revision",
    "normalize_url",
    "ping",
    "upgrade",
    "upgrade_sync",
]
