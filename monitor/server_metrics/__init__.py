"""The target's own Prometheus /metrics: parsed (parse.py) and differenced into intervals (interval.py).

Pure modules; the scraper that fetches them over HTTP, the daemon job and the load runner's
per-second scrape use these, so every reader of a server's metrics means the same thing.
"""

from monitor.server_metrics.interval import FIELDS, ServerInterval, histogram_quantile, interval
from monitor.server_metrics.parse import FACTS, HISTOGRAMS, Cumulative, ExpositionError, ServerSample, parse_exposition

__all__ = [
    "FACTS",
    "FIELDS",
    "HISTOGRAMS",
    "Cumulative",
    "ExpositionError",
    "ServerInterval",
    "ServerSample",
    "histogram_quantile",
    "interval",
    "parse_exposition",
]
