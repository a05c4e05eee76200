"""Mounts the dashboard on the daemon's aiohttp app: HTML pages, their JSON, and two static files.

    setup_dashboard(app, settings=lambda: daemon.settings, db=engine, store=store, alerts=alert_engine)

`settings` is read again for every request, so a config reload reaches the pages; a request takes
one snapshot (`Dashboard.read`) and sees one config throughout.

Every dashboard response carries a strict Content-Security-Policy (no inline script or style,
nothing from other origins), `nosniff` and `no-referrer`. Pages only read; the one write the
dashboard offers (silences) goes from the browser to the daemon's token-checked JSON API.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from monitor.alerts.engine import AlertsBackend
from monitor.clock import Clock, SystemClock
from monitor.config import RuleSettings, Settings
from monitor.dashboard.layout import page
from monitor.dashboard.markup import Markup, el
from monitor.dashboard.pages import overview_body, probe_body
from monitor.dashboard.pages_alerts import alerts_body, silence_forms
from monitor.dashboard.pages_doctor import DOCTOR_HISTORY_RUNS, doctor_body
from monitor.dashboard.pages_load import load_run_body, load_runs_body
from monitor.dashboard.queries import WINDOWS, DashboardData
from monitor.dashboard.queries_load import LoadRuns, run_json
from monitor.errors import StoreError
from monitor.store.doctor_repo import DoctorStore
from monitor.store.models import parse_row_id
from monitor.store.repo import Store

__all__ = ["CSP", "DASHBOARD_KEY", "SECURITY_HEADERS", "Dashboard", "SettingsSource", "setup_dashboard"]

logger = logging.getLogger(__name__)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
STATIC_FILES = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# The settings in force now: the daemon's reload replaces them while the app runs (it passes
# `lambda: daemon.settings`; the API reads the same source).
SettingsSource = Callable[[], Settings]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Dashboard:
    """What the handlers share: the settings source, the resources to read, the static files, a clock."""

    settings: SettingsSource
    sessionmaker: async_sessionmaker[AsyncSession]
    store: Store
    alerts: AlertsBackend | None
    load: LoadRuns
    static: dict[str, bytes]
    asset_version: str
    clock: Clock

    def read(self) -> DashboardData:
        """A read model over the settings in force now; a handler takes one and keeps it."""
        return DashboardData(self.settings(), self.sessionmaker, store=self.store, alerts=self.alerts)


def _rules(data: DashboardData) -> dict[str, RuleSettings]:
    return {rule.name: rule for rule in data.settings.rules}


DASHBOARD_KEY = web.AppKey("dashboard", Dashboard)


def setup_dashboard(
    app: web.Application,
    *,
    settings: SettingsSource,
    db: AsyncEngine,
    store: Store,
    alerts: AlertsBackend | None = None,
    clock: Clock | None = None,
) -> None:
    """Register the dashboard's routes on `app`; every resource stays the caller's."""
    sessionmaker = async_sessionmaker(db, expire_on_commit=False)
    static_dir = resources.files("monitor.dashboard") / "static"
    static = {name: (static_dir / name).read_bytes() for name in STATIC_FILES}
    version = hashlib.sha256(b"".join(static.values())).hexdigest()[:12]
    app[DASHBOARD_KEY] = Dashboard(
        settings=settings,
        sessionmaker=sessionmaker,
        store=store,
        alerts=alerts,
        load=LoadRuns(sessionmaker),
        static=static,
        asset_version=version,
        clock=clock or SystemClock(),
    )
    add = app.router.add_get
    add("/", overview_page, name="dashboard-overview")
    add("/alerts", alerts_page, name="dashboard-alerts")
    add("/probes/{target}/{probe}", probe_page, name="dashboard-probe")
    add("/loadruns", load_runs_page, name="dashboard-loadruns")
    add(r"/loadruns/{id:\d+}", load_run_page, name="dashboard-loadrun")
    add("/doctor", doctor_page, name="dashboard-doctor")
    add("/static/{name}", static_file, name="dashboard-static")
    add("/api/v1/overview", overview_json)
    add("/api/v1/probes/{target}/{probe}", probe_json)
    add("/api/v1/loadruns", load_runs_json)
    add(r"/api/v1/loadruns/{id:\d+}", load_run_json)
    app.on_response_prepare.append(_security_headers)


_DASHBOARD_PREFIXES = (
    "/alerts",
    "/probes/",
    "/loadruns",
    "/doctor",
    "/static/",
    "/api/v1/overview",
    "/api/v1/probes/",
    "/api/v1/loadruns",
)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    # A signal, not a middleware: it also covers error responses made by the API's error middleware.
    if request.path == "/" or request.path.startswith(_DASHBOARD_PREFIXES):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)


def _html(
    dash: Dashboard,
    *,
    title: str,
    active: str,
    body: Markup,
    firing: int,
    status: int = 200,
    outside: tuple[Markup, ...] = (),
) -> web.Response:
    doc = page(title=title, active=active, body=body, asset_version=dash.asset_version, firing=firing, outside=outside)
    return web.Response(
        text=doc, status=status, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-store"}
    )


def _error_page(dash: Dashboard, status: int, title: str, message: str) -> web.Response:
    body = el(
        "div",
        None,
        el("h1", None, title),
        el("p", {"class": "notice"}, message),
        el("p", None, el("a", {"href": "/"}, "Back to the overview")),
    )
    return _html(dash, title=title, active="", body=body, firing=0, status=status)


def _page(handler: Callable[[web.Request, Dashboard], Awaitable[web.Response]]) -> Handler:
    """A page handler: a database outage becomes a readable 503 page instead of a JSON error."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        dash = request.app[DASHBOARD_KEY]
        try:
            return await handler(request, dash)
        except StoreError as exc:
            logger.warning("dashboard %s: %s", request.path, exc)
            return _error_page(dash, 503, "Database unavailable", "The database is not answering; see the daemon log.")

    wrapper.__name__ = handler.__name__
    return wrapper


async def _firing(data: DashboardData, now: datetime) -> int:
    return sum(1 for a in await data.alerts(now) if a.state == "firing")


@_page
async def overview_page(request: web.Request, dash: Dashboard) -> web.Response:
    data = dash.read()
    overview = await data.overview(dash.clock.now())
    firing = sum(1 for a in overview.alerts if a.state == "firing")
    return _html(dash, title="Overview", active="overview", body=overview_body(overview, _rules(data)), firing=firing)


async def _window(request: web.Request, data: DashboardData, probe: str, target: str, now: datetime) -> str | None:
    """The ?window= asked for, else one that fits the probe's stored results; None if unknown."""
    window = request.query.get("window")
    if window is None:
        return await data.default_window(probe, target, now)
    return window if window in WINDOWS else None


@_page
async def probe_page(request: web.Request, dash: Dashboard) -> web.Response:
    data, now = dash.read(), dash.clock.now()
    target, probe = request.match_info["target"], request.match_info["probe"]
    window = await _window(request, data, probe, target, now)
    if window is None:
        return _error_page(dash, 400, "Unknown window", f"Pick one of {', '.join(WINDOWS)}.")
    detail = await data.probe_detail(probe, target, window, now)
    if not detail.known:
        return _error_page(dash, 404, "No such probe", f"Nothing is known about probe {probe!r} on target {target!r}.")
    body = probe_body(detail, _rules(data))
    return _html(dash, title=f"{probe} on {target}", active="overview", body=body, firing=await _firing(data, now))


@_page
async def alerts_page(request: web.Request, dash: Dashboard) -> web.Response:
    data, now = dash.read(), dash.clock.now()
    alerts = await data.alerts(now)
    silences = await data.silences(now, include_expired=True)
    can_write = data.settings.api_token is not None
    firing = sum(1 for a in alerts if a.state == "firing")
    return _html(
        dash,
        title="Alerts",
        active="alerts",
        body=alerts_body(alerts, silences, now, can_write, _rules(data)),
        firing=firing,
        outside=(silence_forms(data.settings),),
    )


@_page
async def load_runs_page(request: web.Request, dash: Dashboard) -> web.Response:
    runs = await dash.load.runs()
    firing = await _firing(dash.read(), dash.clock.now())
    return _html(dash, title="Load runs", active="loadruns", body=load_runs_body(runs), firing=firing)


@_page
async def doctor_page(request: web.Request, dash: Dashboard) -> web.Response:
    store = DoctorStore(dash.sessionmaker)
    histories = [await store.history(run.target, limit=DOCTOR_HISTORY_RUNS) for run in await store.latest()]
    firing = await _firing(dash.read(), dash.clock.now())
    return _html(dash, title="Doctor", active="doctor", body=doctor_body(histories), firing=firing)


def _baseline(request: web.Request) -> int | None:
    raw = request.query.get("baseline", "")
    if not raw:
        return None
    run_id = parse_row_id(raw)
    if run_id is None:
        raise web.HTTPBadRequest(text="baseline: must be a run id")
    return run_id


@_page
async def load_run_page(request: web.Request, dash: Dashboard) -> web.Response:
    run_id = int(request.match_info["id"])
    try:
        baseline = _baseline(request)
    except web.HTTPBadRequest:
        return _error_page(dash, 400, "Bad baseline", "The baseline must be a run id.")
    detail = await dash.load.detail(run_id, baseline)
    if detail is None:
        return _error_page(dash, 404, "No such load run", f"There is no load run #{run_id}.")
    return _html(
        dash,
        title=f"Load run #{run_id}",
        active="loadruns",
        body=load_run_body(detail),
        firing=await _firing(dash.read(), dash.clock.now()),
    )


async def static_file(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD_KEY]
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound(text=f"no static file {name!r}")
    # Pages link to /static/NAME?v=<content hash>, so a cached copy is never stale.
    cache = "public, max-age=31536000, immutable" if request.query.get("v") == dash.asset_version else "no-cache"
    return web.Response(body=dash.static[name], headers={"Content-Type": STATIC_FILES[name], "Cache-Control": cache})


# --- the JSON the pages are built from ----------------------------------------------------------------------


async def overview_json(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD_KEY]
    return web.json_response((await dash.read().overview(dash.clock.now())).to_json())


async def probe_json(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD_KEY]
    target, probe = request.match_info["target"], request.match_info["probe"]
    data, now = dash.read(), dash.clock.now()
    window = await _window(request, data, probe, target, now)
    if window is None:
        raise web.HTTPBadRequest(text=f"window: must be one of {', '.join(WINDOWS)}")
    detail = await data.probe_detail(probe, target, window, now)
    if not detail.known:
        raise web.HTTPNotFound(text=f"no probe {probe!r} on target {target!r}")
    return web.json_response(detail.to_json())


async def load_runs_json(request: web.Request) -> web.Response:
    runs = await request.app[DASHBOARD_KEY].load.runs()
    return web.json_response([run_json(r) for r in runs])


async def load_run_json(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD_KEY]
    run_id = int(request.match_info["id"])
    detail = await dash.load.detail(run_id, _baseline(request))
    if detail is None:
        raise web.HTTPNotFound(text=f"no load run {run_id}")
    return web.json_response(detail.to_json())
