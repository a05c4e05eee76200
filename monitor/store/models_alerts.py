"""Tables of the alerts feature (placeholder: filled in by the alerts work)."""

from __future__ import annotations
