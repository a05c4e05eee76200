"""`llm-monitor check`: ask a running daemon's /readyz, for compose and Kubernetes healthchecks.

Synchronous on purpose (urllib): it runs once per healthcheck interval in a fresh process, and
must not depend on anything the daemon might be stuck on.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

from monitor.config import APISettings, Settings

# A daemon bound to every interface is still reached over loopback from inside its container.
_WILDCARDS = {"0.0.0.0", "::", ""}


def readyz_url(api: APISettings) -> str:
    host = "127.0.0.1" if api.host in _WILDCARDS else api.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{api.port}/readyz"


def check_health(settings: Settings | None, *, url: str | None = None, timeout_s: float = 5.0) -> int:
    """0 when /readyz answers 200, else 1; prints one line either way."""
    target = url or readyz_url(settings.api if settings is not None else APISettings())
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as response:
            body = response.read(64 * 1024)
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(64 * 1024), exc.code
        exc.close()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"not ready: {target}: {reason}", file=sys.stderr)
        return 1
    detail = _checks(body)
    if status == 200:
        print(f"ready: {target}{detail}")
        return 0
    print(f"not ready: {target}: HTTP {status}{detail}", file=sys.stderr)
    return 1


def _checks(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    checks = data.get("checks") if isinstance(data, dict) else None
    if not isinstance(checks, dict):
        return ""
    return " (" + ", ".join(f"{k}: {v}" for k, v in checks.items()) + ")"
