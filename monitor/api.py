"""The daemon's HTTP API: health, readiness, Prometheus metrics and the JSON API (aiohttp.web).

`create_app` is the only place routes and middlewares are registered (the dashboard's pages
through `monitor.dashboard.routes.setup_dashboard`). The daemon owns every
resource handed in (store, engine, alert engine) and closes them itself; the app never does.

Who may do what:

- Writes (POST, DELETE) need `Authorization: Bearer <token>` when `api.token_env` is set. Without a
  token the API must listen on loopback only (`check_bind` refuses anything else); writes are then
  open to local processes, but not to web pages: a write carrying a browser `Origin` header is refused.
- Reads need a token only when `api.read_token_env` is set: `Bearer <read or write token>`, or HTTP
  Basic with the token as the password (any user name), which browsers prompt for, so the dashboard
  keeps working. The write token alone does not close reads: the write token is for automation,
  and a loopback bind is already private. `/healthz`, `/readyz` and `/metrics` stay open either way,
  for container healthchecks and Prometheus scrapes (they show counts and names, not replies).
- On a loopback bind the `Host` header must name loopback (`localhost`, `127.0.0.1`, `[::1]`, any
  port) or one of `api.allowed_hosts`, else 421: a DNS-rebinding page reaches 127.0.0.1 under its
  own host name, and would otherwise read results through the victim's browser.

Hostile input gets a 4xx with a one-line reason, never a 500: durations and ids are bounded, JSON
bodies must be finite and shallow, and a request aiohttp cannot parse (a 10 KB URL) is logged as
one line, not a traceback.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, NoReturn

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.alerts.engine import AlertsBackend
from monitor.api_doctor import add_doctor_routes
from monitor.api_fingerprint import add_fingerprint_routes
from monitor.config import MAX_DURATION_S, Settings, to_seconds
from monitor.dashboard.routes import SettingsSource, setup_dashboard
from monitor.errors import ConfigError, StoreError
from monitor.exposition import CONTENT_TYPE, CounterFamily, GaugeFamily, ProbeMetrics, leadership_families
from monitor.leader import Leadership
from monitor.store.db import ping
from monitor.store.models import MAX_ROW_ID, RESULT_SOURCES, ResultSource, parse_row_id
from monitor.store.repo import Store
from monitor.store.rollups import Rollups
from monitor.store.server_metrics_repo import ServerMetricsStore

__all__ = [
    "ALERTS_KEY",
    "SETTINGS_KEY",
    "STORE_KEY",
    "check_bind",
    "create_app",
    "is_loopback",
]

logger = logging.getLogger(__name__)

# One page of results is a bounded query and a bounded response, whatever `limit=` asks for.
MAX_RESULTS = 1000
# A readiness probe must answer before the orchestrator's own timeout, even while the database hangs.
READY_DB_TIMEOUT_S = 2.0
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Open without the read token: what a compose healthcheck and a Prometheus scrape ask for.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
MAX_JSON_DEPTH = 16
MAX_SINCE_S = 36500 * 86400  # retention keeps at most this much (retention.*_days <= 36500)
READ_CHALLENGE = 'Basic realm="llm-monitor", charset="UTF-8", Bearer realm="llm-monitor"'
_dumps = partial(json.dumps, ensure_ascii=False)


Gauges = Callable[[], Awaitable[Iterable[GaugeFamily | CounterFamily]]]

# Handlers and middlewares read the settings through this source on every request, never a copy
# taken at startup: that is how a reload reaches the API (its own `api` section waits for a restart).
SETTINGS_KEY: web.AppKey[SettingsSource] = web.AppKey("settings")
STORE_KEY = web.AppKey("store", Store)
DB_KEY = web.AppKey("db", AsyncEngine)
METRICS_KEY = web.AppKey("metrics", ProbeMetrics)
ALERTS_KEY = web.AppKey("alerts", AlertsBackend)
ROLLUPS_KEY = web.AppKey("rollups", Rollups)
SCHEDULER_RUNNING_KEY: web.AppKey[Callable[[], bool]] = web.AppKey("scheduler_running")
GAUGES_KEY: web.AppKey[Gauges] = web.AppKey("gauges")
LEADERSHIP_KEY = web.AppKey("leadership", Leadership)
SERVER_METRICS_KEY = web.AppKey("server_metrics", ServerMetricsStore)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Refuse a non-loopback bind without a token: anyone who can reach it could write."""
    if is_loopback(settings.api.host):
        return
    if settings.api_token is None:
        raise ConfigError(
            f"api.host: binding to {settings.api.host} needs api.token_env (writes would be unauthenticated)"
        )
    if settings.api_read_token is None:
        logger.warning(
            "api.host %s: results, replies and the dashboard are readable by anyone who can reach it "
            "(set api.read_token_env to require a token for reads)", settings.api.host,
        )  # fmt: skip


class _ProtocolLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's connection log: a request it cannot parse (a 10 KB URL, a bad header line) is the
    client's mistake, so one line instead of a traceback. Everything else passes through."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, BadHttpMessage):
            self.info("refused a malformed request: %s", str(exc_info.message)[:200])
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)


def create_app(
    settings: Settings | SettingsSource,
    *,
    store: Store,
    db: AsyncEngine | None = None,
    metrics: ProbeMetrics | None = None,
    alerts: AlertsBackend | None = None,
    rollups: Rollups | None = None,
    scheduler_running: Callable[[], bool] | None = None,
    gauges: Gauges | None = None,
    leadership: Leadership | None = None,
) -> web.Application:
    """The API application; every resource is owned by the caller.

    `settings` is a snapshot, or a callable returning the settings in force (the daemon passes one,
    so that a reload reaches the API and the dashboard).
    """
    source = settings if callable(settings) else partial(_fixed, settings)
    # Outermost first. Errors wrap everything (whatever is raised further in leaves as JSON); the
    # Host check comes before auth, so a rebinding page never gets a password prompt.
    app = web.Application(
        middlewares=[_error_middleware, _host_middleware, _auth_middleware],
        handler_args={"logger": _ProtocolLog(logging.getLogger("aiohttp.server"), {})},
    )
    app[SETTINGS_KEY] = source
    app[STORE_KEY] = store
    app[METRICS_KEY] = metrics or ProbeMetrics()
    if db is not None:
        app[DB_KEY] = db
        app[SERVER_METRICS_KEY] = ServerMetricsStore.from_engine(db)
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
    app.router.add_get("/api/v1/server-metrics", server_metrics_handler)
    app.router.add_get("/api/v1/alerts", alerts_handler)
    app.router.add_get("/api/v1/silences", silences_handler)
    app.router.add_post("/api/v1/silences", create_silence)
    app.router.add_delete("/api/v1/silences/{id}", delete_silence)
    if db is not None:
        add_fingerprint_routes(app, db=db, settings=source)
        add_doctor_routes(app, db=db, settings=source)
        # The dashboard's pages read the same database and alert engine; it only adds GET routes.
        setup_dashboard(app, settings=source, db=db, store=store, alerts=alerts)
    return app


def _fixed(settings: Settings) -> Settings:
    return settings


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
        _check_ids(request)
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.text or exc.reason)
    except StoreError as exc:
        # The database is down or slow: 503, as a retry may succeed; nothing is wrong with the request.
        return _error(503, str(exc))
    except Exception:
        # A bug: the traceback goes to the log only, the client gets no internals.
        logger.exception("%s %s failed", request.method, request.path)
        return _error(500, "internal error (see the daemon log)")


def _check_ids(request: web.Request) -> None:
    # Every `{id}` route (silences here, load runs in the dashboard) looks its id up in a BIGINT column.
    raw = request.match_info.get("id")
    if raw is not None and parse_row_id(raw) is None:
        raise web.HTTPBadRequest(text=f"id: must be a whole number between 1 and {MAX_ROW_ID}")


@web.middleware
async def _host_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """On a loopback bind, refuse a `Host` that is not loopback or allowed (DNS rebinding)."""
    settings = request.app[SETTINGS_KEY]()
    host = request.headers.get("Host")
    # A browser always sends Host; a request without one (HTTP/1.0) cannot come from a rebinding page.
    if host is not None and is_loopback(settings.api.host) and not _host_allowed(host, settings.api.allowed_hosts):
        return _error(
            421, "Host header not allowed: this API answers to localhost, 127.0.0.1, [::1] or api.allowed_hosts"
        )
    return await handler(request)


def _host_allowed(host: str, allowed: Sequence[str]) -> bool:
    host = host.strip().lower()
    if host in allowed:
        return True
    # Strip the port: "[::1]:9464" -> "[::1]", "localhost:9464" -> "localhost"
    name = host.rsplit(":", 1)[0] if host.rfind(":") > host.rfind("]") else host
    return name in LOOPBACK_NAMES or name in allowed


@web.middleware
async def _auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    settings = request.app[SETTINGS_KEY]()
    token = settings.api_token
    if request.method in WRITE_METHODS:
        # Writes take Bearer only: a browser never sends it by itself, so a page cannot forge one.
        if token is not None:
            if not _bearer_matches(request, [token.get_secret_value()]):
                return _error(401, "writes need Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
        elif "Origin" in request.headers:
            # No token (loopback only): browsers send Origin with every POST and DELETE, scripts do not.
            return _error(403, "writes from web pages are refused when no api.token_env is set")
    elif settings.api_read_token is not None and request.path not in OPEN_PATHS:
        # Basic too, for reads only: the browser's own prompt is how a person opens the dashboard.
        accepted = [t.get_secret_value() for t in (settings.api_read_token, token) if t is not None]
        if not _bearer_matches(request, accepted) and not _basic_matches(request, accepted):
            return _error(401, "reads need the read token (Bearer, or Basic with it as the password)", {
                "WWW-Authenticate": READ_CHALLENGE
            })  # fmt: skip
    return await handler(request)


def _bearer_matches(request: web.Request, tokens: Sequence[str]) -> bool:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and _any_equal(value.strip(), tokens)


def _basic_matches(request: web.Request, tokens: Sequence[str]) -> bool:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return _any_equal(decoded.partition(":")[2], tokens)


def _any_equal(given: str, tokens: Sequence[str]) -> bool:
    # Compare with every token (no early exit), in constant time each.
    matches = [hmac.compare_digest(given.encode(), t.encode()) for t in tokens]
    return any(matches)


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
            seconds = to_seconds(value)
        except ConfigError:
            raise web.HTTPBadRequest(
                text=f"since: {value[:100]!r} is neither an ISO 8601 time nor a duration"
            ) from None
        if seconds > MAX_SINCE_S:
            raise web.HTTPBadRequest(text=f"since: at most {MAX_SINCE_S // 86400} days back") from None
        return datetime.now(UTC) - timedelta(seconds=seconds)
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


async def results_handler(request: web.Request) -> web.Response:
    """`GET /api/v1/results?probe=&target=&source=&since=&limit=`: stored results, newest first."""
    limit = _int_param(request, "limit", 100, 1, MAX_RESULTS)
    results = await request.app[STORE_KEY].recent_results(
        probe=request.query.get("probe"), target=request.query.get("target"), source=_source(request),
        since=_since(request.query.get("since")), limit=limit,
    )  # fmt: skip
    return _json([r.to_json() for r in results])


def _source(request: web.Request) -> ResultSource | None:
    """`source=`: only the daemon's results, or one one-shot command's (`probe`, `doctor`); all without it."""
    raw = request.query.get("source")
    if raw is None:
        return None
    for source in RESULT_SOURCES:
        if raw == source:
            return source
    raise web.HTTPBadRequest(text=f"source: must be one of {', '.join(RESULT_SOURCES)}")


async def trend_handler(request: web.Request) -> web.Response:
    """`GET /api/v1/trend?probe=&target=&since=7d&step_s=3600`: `TrendStep`s, oldest first.

    Read by `TrendReader.trend` (rollups, then raw results past the watermark), the probe page's reader too.
    """
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


async def server_metrics_handler(request: web.Request) -> web.Response:
    """`GET /api/v1/server-metrics?target=&since=1h&limit=`: a target's scrapes of its own /metrics, oldest first.

    Without `target`: the newest scrape of every target with `metrics:`, by target name.
    """
    scrapes = request.app.get(SERVER_METRICS_KEY)
    if scrapes is None:
        raise web.HTTPNotFound(text="server metrics are not available (no database)")
    settings = request.app[SETTINGS_KEY]()
    scraped = [t.name for t in settings.targets if t.metrics is not None]
    target = request.query.get("target")
    if target is None:
        latest = await scrapes.latest(scraped)
        return _json({name: latest[name].to_json() if name in latest else None for name in scraped})
    if target not in {t.name for t in settings.targets}:
        raise web.HTTPNotFound(text=f"target: no target named {target[:100]!r}")
    since = _since(request.query.get("since", "1h")) or datetime.now(UTC)
    limit = _int_param(request, "limit", 1000, 1, MAX_RESULTS)
    points = await scrapes.points(target, since=since, limit=limit)
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
    body = _parse_json(await request.text())
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


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number in JSON")


def _parse_json(text: str) -> Any:
    """A request body as JSON: finite numbers only, at most `MAX_JSON_DEPTH` levels deep (else 400)."""
    # Measured before parsing: json.loads recurses, and a body of 100 000 "[" would be a RecursionError.
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise web.HTTPBadRequest(text=f"body: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        reason = str(exc) if "not a number" in str(exc) else "not valid JSON"
        raise web.HTTPBadRequest(text=f"body: {reason}") from None


def _json_depth(text: str) -> int:
    """Deepest nesting of [ and { outside strings; stops counting once past the limit."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    break
        elif char in "]}":
            depth -= 1
    return deepest


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
        field = "ends_at"
    else:
        duration_s = body["duration_s"]
        if not isinstance(duration_s, int | float) or isinstance(duration_s, bool):
            raise web.HTTPBadRequest(text="duration_s: must be a number of seconds")
        field = "duration_s"
    # Also catches what json.loads turns into inf (1e400) and ints too large for a float.
    if isinstance(duration_s, int) and duration_s > MAX_DURATION_S:
        duration_s = math.inf
    if not math.isfinite(duration_s) or duration_s > MAX_DURATION_S:
        raise web.HTTPBadRequest(text=f"{field}: a silence lasts at most {MAX_DURATION_S} s (366 days)")
    if duration_s <= 0:
        raise web.HTTPBadRequest(text="the silence would end in the past")
    return float(duration_s)


async def delete_silence(request: web.Request) -> web.Response:
    alerts = _alerts(request)
    silence_id = int(request.match_info["id"])  # checked by _check_ids
    if not await alerts.expire_silence(silence_id):
        raise web.HTTPNotFound(text=f"no active silence {silence_id}")
    return _json({"id": silence_id, "expired": True})
