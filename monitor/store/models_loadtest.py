"""Tables of the loadtest feature (placeholder: filled in by the loadtest work)."""

from __future__ import annotations
