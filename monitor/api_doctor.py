"""The scheduled doctor's API: `GET /api/v1/doctor` (latest report per target) and `GET /api/v1/doctor/{target}`.

Mounted by `monitor.api.create_app` when it has a database; the app's auth, Host and error
middlewares apply. The JSON forms are the store views' `to_json`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from monitor.config import Settings
from monitor.store.doctor_repo import DoctorStore

__all__ = ["MAX_HISTORY", "add_doctor_routes"]

_STORE_KEY = web.AppKey("doctor_reports", DoctorStore)
_SETTINGS_KEY: web.AppKey[Callable[[], Settings]] = web.AppKey("doctor_settings")
MAX_HISTORY = 500


def add_doctor_routes(app: web.Application, *, db: AsyncEngine, settings: Callable[[], Settings]) -> None:
    app[_STORE_KEY] = DoctorStore(async_sessionmaker(db, expire_on_commit=False))
    app[_SETTINGS_KEY] = settings
    app.router.add_get("/api/v1/doctor", latest_handler)
    app.router.add_get("/api/v1/doctor/{target}", history_handler)


def _json(body: object) -> web.Response:
    return web.json_response(body, dumps=lambda o: json.dumps(o, ensure_ascii=False))


async def latest_handler(request: web.Request) -> web.Response:
    """The latest stored report of every target that has one."""
    return _json({"reports": [run.to_json() for run in await request.app[_STORE_KEY].latest()]})


async def history_handler(request: web.Request) -> web.Response:
    """`?limit=` (1-500, default 50) reports of one configured target, newest first."""
    name = request.match_info["target"]
    if not any(t.name == name for t in request.app[_SETTINGS_KEY]().targets):
        raise web.HTTPNotFound(text=f"target: no target named {name[:100]!r}")
    raw = request.query.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_HISTORY:
        raise web.HTTPBadRequest(text=f"limit: a whole number from 1 to {MAX_HISTORY}")
    runs = await request.app[_STORE_KEY].history(name, limit=int(raw))
    return _json({"target": name, "reports": [run.to_json() for run in runs]})
