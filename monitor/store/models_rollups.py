"""Tables of the rollups feature (placeholder: filled in by the rollups work)."""

from __future__ import annotations
