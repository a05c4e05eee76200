"""The daemon's HTTP API: health, readiness, Prometheus metrics and the JSON API (aiohttp.web).

`create_app` is the only place routes and middlewares are registered (the dashboard's pages
through `monitor.dashboard.routes.setup_dashboard`). The daemon owns every
resource handed in (store, engine, alert engine) and closes them itself; the app never does.

Writes (POST, DELETE) need `Authorization: Bearer <token>` when `api.token_env` is set. Without a
token the API must listen on loopback only (`check_bind` refuses anything else); writes are then
open to local processes, but not to web pages: a write carrying a browser `Origin` header is refused.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.alerts.model import AlertView, SilenceView
from monitor.dashboard.routes import setup_dashboard
from monitor.errors import ConfigError, StoreError
from monitor.metrics import CONTENT_TYPE, CounterFamily, GaugeFamily, ProbeMetrics, leadership_families
from monitor.settings import Settings, to_seconds
from monitor.store.db import ping
from monitor.store.repo import Store, StoredResult
from monitor.store.rollups import Rollups

__all__ = [
    "ALERTS_KEY",
    "SETTINGS_KEY",
    "STORE_KEY",
    "AlertsBackend",
    "LeadershipView",
    "check_bind",
    "create_app",
    "is_loopback",
]

logger = logging.getLogger(__name__)

MAX_RESULTS = 1000
READY_DB_TIMEOUT_S = 2.0
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_dumps = partial(json.dumps, ensure_ascii=False)


class AlertsBackend(Protocol):
    """What the API (and the dashboard) need from the alert engine (`monitor.alerts.engine.AlertEngine`)."""

    async def alerts(self) -> Sequence[AlertView]: ...

    async def silences(self, *, include_expired: bool = False) -> Sequence[SilenceView]: ...

    async def add_silence(
        self, *, matchers: dict[str, str], duration_s: float, comment: str, created_by: str
    ) -> SilenceView: ...

    async def expire_silence(self, silence_id: int) -> bool: ...


class LeadershipView(Protocol):
    """Which replica leads (`monitor.leader.LeaderElection`, or `SoleLeader` on SQLite)."""

    @property
    def replica_id(self) -> str: ...

    @property
    def is_leader(self) -> bool: ...

    @property
    def leader(self) -> str | None: ...

    @property
    def transitions(self) -> int: ...


Gauges = Callable[[], Awaitable[Iterable[GaugeFamily | CounterFamily]]]

SETTINGS_KEY = web.AppKey("settings", Settings)
STORE_KEY = web.AppKey("store", Store)
DB_KEY = web.AppKey("db", AsyncEngine)
METRICS_KEY = web.AppKey("metrics", ProbeMetrics)
ALERTS_KEY = web.AppKey("alerts", AlertsBackend)
ROLLUPS_KEY = web.AppKey("rollups", Rollups)
SCHEDULER_RUNNING_KEY: web.AppKey[Callable[[], bool]] = web.AppKey("scheduler_running")
GAUGES_KEY: web.AppKey[Gauges] = web.AppKey("gauges")
LEADERSHIP_KEY = web.AppKey("leadership", LeadershipView)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Refuse a non-loopback bind without a token: anyone who can reach it could write."""
    if not is_loopback(settings.api.host) and settings.api_token is None:
        raise ConfigError(
            f"api.host: binding to {settings.api.host} needs api.token_env (writes would be unauthenticated)"
        )


def create_app(
    settings: Settings,
    *,
    store: Store,
    db: AsyncEngine | None = None,
    metrics: ProbeMetrics | None = None,
    alerts: AlertsBackend | None = None,
    rollups: Rollups | None = None,
    scheduler_running: Callable[[], bool] | None = None,
    gauges: Gauges | None = None,
    leadership: LeadershipView | None = None,
) -> web.Application:
    """The API application; every resource is owned by the caller."""
    app = web.Application(middlewares=[_error_middleware, _auth_middleware])
    app[SETTINGS_KEY] = settings
    app[STORE_KEY] = store
    app[METRICS_KEY] = metrics or ProbeMetrics()
    if db is not None:
        app[DB_KEY] = db
    if alerts is not None:
        app[ALERTS_KEY] = alerts
    if rollups is not None:
        app[ROLLUPS_KEY] = rollups
    if scheduler_running is not None:
        app[SCHEDULER_RUNNING_KEY] = scheduler_running
    if gauges is not None:
        app[GAUGES_KEY] = gauges
    if leadership is not None:
        app[LEADERSHIP_KEY] = leadership
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/api/v1/results", results_handler)
    app.router.add_get("/api/v1/trend", trend_handler)
    app.router.add_get("/api/v1/alerts", alerts_handler)
    app.router.add_get("/api/v1/silences", silences_handler)
    app.router.add_post("/api/v1/silences", create_silence)
    app.router.add_delete("/api/v1/silences/{id}", delete_silence)
    if db is not None:
        # The dashboard's pages read the same database and alert engine; it only adds GET routes.
        setup_dashboard(app, settings=settings, db=db, store=store, alerts=alerts)
    return app


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    response = _json({"error": message}, status=status)
    response.headers.update(headers or {})
    return response


@web.middleware
async def _error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure leaves as `{"error": "..."}` with a fitting status."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.text or exc.reason)
    except StoreError as exc:
        return _error(503, str(exc))
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        return _error(500, "internal error (see the daemon log)")


@web.middleware
async def _auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.method in WRITE_METHODS:
        token = request.app[SETTINGS_KEY].api_token
        if token is not None:
            given = request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            expected = token.get_secret_value().encode()
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), expected):
                return _error(401, "writes need Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
        elif "Origin" in request.headers:
            return _error(403, "writes from web pages are refused when no api.token_env is set")
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers `SELECT 1` quickly and the scheduler is running (on the leader).

    A follower replica is ready too: it serves the API while the leader probes. The body then says
    which replica leads (`role`, `leader`, `replica`).
    """
    checks: dict[str, str] = {}
    db = request.app.get(DB_KEY)
    if db is None:
        checks["database"] = "not configured"
    else:
        try:
            await ping(db, timeout_s=READY_DB_TIMEOUT_S)
            checks["database"] = "ok"
        except StoreError as exc:
            checks["database"] = str(exc)
    running = request.app.get(SCHEDULER_RUNNING_KEY)
    leadership = request.app.get(LEADERSHIP_KEY)
    following = leadership is not None and not leadership.is_leader
    if following:
        checks["scheduler"] = "standby (another replica leads)"
    else:
        checks["scheduler"] = "running" if running is not None and running() else "not running"
    ready = checks["database"] == "ok" and (following or checks["scheduler"] == "running")
    body: dict[str, Any] = {"ready": ready, "checks": checks}
    if leadership is not None:
        body.update(role="follower" if following else "leader", leader=leadership.leader, replica=leadership.replica_id)
    return _json(body, status=200 if ready else 503)


async def metrics_handler(request: web.Request) -> web.Response:
    gauges = request.app.get(GAUGES_KEY)
    extra: list[GaugeFamily | CounterFamily] = list(await gauges()) if gauges is not None else []
    leadership = request.app.get(LEADERSHIP_KEY)
    if leadership is not None:
        extra += leadership_families(leadership.replica_id, leadership.is_leader, leadership.transitions)
    text = request.app[METRICS_KEY].render(extra)
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


def _since(value: str | None) -> datetime | None:
    """`since=` as an ISO 8601 time (UTC if no offset) or a duration back from now (`15m`, `2h`)."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            return datetime.now(UTC) - timedelta(seconds=to_seconds(value))
        except ConfigError:
            raise web.HTTPBadRequest(text=f"since: {value!r} is neither an ISO 8601 time nor a duration") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: must be a whole number") from None
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f"{name}: must be between {low} and {high}")
    return value


def result_to_json(result: StoredResult) -> dict[str, Any]:
    data = asdict(result)
    data["started_at"] = result.started_at.isoformat()
    data["checks"] = [check.to_json() for check in result.checks]
    data["failed_checks"] = list(result.failed_checks)
    return data


async def results_handler(request: web.Request) -> web.Response:
    """`GET /api/v1/results?probe=&target=&since=&limit=`: stored results, newest first."""
    limit = _int_param(request, "limit", 100, 1, MAX_RESULTS)
    results = await request.app[STORE_KEY].recent_results(
        probe=request.query.get("probe"), target=request.query.get("target"),
        since=_since(request.query.get("since")), limit=limit,
    )  # fmt: skip
    return _json([result_to_json(r) for r in results])


async def trend_handler(request: web.Request) -> web.Response:
    """`GET /api/v1/trend?probe=&target=&since=7d&step_s=3600`: rollup points, oldest first."""
    rollups = request.app.get(ROLLUPS_KEY)
    if rollups is None:
        raise web.HTTPNotFound(text="trends are not available (no rollups)")
    step_s = _int_param(request, "step_s", 3600, 60, 30 * 86400)
    if step_s % 60:
        raise web.HTTPBadRequest(text="step_s: must be a multiple of 60")
    until = datetime.now(UTC)
    since = _since(request.query.get("since", "7d")) or until
    points = await rollups.trend(
        since=since, until=until, step_s=step_s, probe=request.query.get("probe"), target=request.query.get("target")
    )
    return _json([p.to_json() for p in points])


def _alerts(request: web.Request) -> AlertsBackend:
    alerts = request.app.get(ALERTS_KEY)
    if alerts is None:
        raise web.HTTPNotFound(text="alerting is not enabled in this process")
    return alerts


async def alerts_handler(request: web.Request) -> web.Response:
    return _json([a.to_json() for a in await _alerts(request).alerts()])


async def silences_handler(request: web.Request) -> web.Response:
    include_expired = request.query.get("expired", "").lower() in ("1", "true", "yes")
    silences = await _alerts(request).silences(include_expired=include_expired)
    return _json([s.to_json() for s in silences])


async def create_silence(request: web.Request) -> web.Response:
    """`POST /api/v1/silences` with `{matchers, duration_s | ends_at, comment, created_by?}`."""
    alerts = _alerts(request)
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="body: not valid JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body: must be a JSON object")
    matchers = body.get("matchers")
    if (
        not isinstance(matchers, dict)
        or not matchers
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in matchers.items())
    ):
        raise web.HTTPBadRequest(text='matchers: must be a non-empty object of strings, e.g. {"alertname": "x"}')
    comment = body.get("comment")
    if not isinstance(comment, str) or not comment.strip():
        raise web.HTTPBadRequest(text="comment: required (why is this silenced?)")
    created_by = body.get("created_by", "api")
    if not isinstance(created_by, str):
        raise web.HTTPBadRequest(text="created_by: must be a string")
    try:
        silence = await alerts.add_silence(
            matchers=matchers, duration_s=_silence_duration_s(body), comment=comment, created_by=created_by
        )
    except ValueError as exc:  # the engine's verdict on the matchers or comment
        raise web.HTTPBadRequest(text=str(exc)) from None
    return _json(silence.to_json(), status=201)


def _silence_duration_s(body: Mapping[str, Any]) -> float:
    if ("duration_s" in body) == ("ends_at" in body):
        raise web.HTTPBadRequest(text="give duration_s or ends_at (one of them)")
    if "ends_at" in body:
        raw = body["ends_at"]
        try:
            ends_at = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        except ValueError:
            raise web.HTTPBadRequest(text=f"ends_at: {raw!r} is not an ISO 8601 time") from None
        if ends_at.tzinfo is None:
            ends_at = ends_at.replace(tzinfo=UTC)
        duration_s = (ends_at - datetime.now(UTC)).total_seconds()
    else:
        duration_s = body["duration_s"]
        if not isinstance(duration_s, int | float) or isinstance(duration_s, bool):
            raise web.HTTPBadRequest(text="duration_s: must be a number of seconds")
    if duration_s <= 0:
        raise web.HTTPBadRequest(text="the silence would end in the past")
    return float(duration_s)


async def delete_silence(request: web.Request) -> web.Response:
    alerts = _alerts(request)
    try:
        silence_id = int(request.match_info["id"])
    except ValueError:
        raise web.HTTPBadRequest(text="id: must be a whole number") from None
    if not await alerts.expire_silence(silence_id):
        raise web.HTTPNotFound(text=f"no active silence {silence_id}")
    return _json({"id": silence_id, "expired": True})
