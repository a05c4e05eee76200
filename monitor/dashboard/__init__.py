"""The web dashboard served by the daemon at `/`: overview, probe trends, alerts, load runs.

Server-rendered HTML and SVG (no chart library, no CDN), one CSS and one JS file, a strict CSP.
"""

from __future__ import annotations
