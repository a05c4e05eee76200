"""The complete schema: importing this module registers every table on `Base.metadata`.

Migrations (env.py) and the drift test read `metadata` from here, so a table defined in any
feature's model module is compared with what the migrations create.
"""

from __future__ import annotations

from sqlalchemy import MetaData

from monitor.store import (
    models,
    models_alerts,
    models_doctor,
    models_fingerprint,
    models_leases,
    models_loadtest,
    models_rollups,
    models_server_metrics,
)

__all__ = ["metadata"]

metadata: MetaData = models.Base.metadata
# Referenced so linters keep the imports: they exist for their side effect of defining tables.
_FEATURE_MODELS = (
    models_alerts, models_rollups, models_loadtest, models_leases, models_server_metrics, models_fingerprint,
    models_doctor,
)  # fmt: skip
