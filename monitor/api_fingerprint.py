"""The fingerprint's API: `GET /api/v1/fingerprints/{target}` and `POST /api/v1/fingerprints/{target}/accept`.

Mounted by `monitor.api.create_app` when it has a database; the auth, Host and error middlewares
of that app apply (a POST is a write: Bearer token, or loopback without Origin).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from monitor.config import Settings
from monitor.config.deployment import FINGERPRINT_COMPONENTS, FingerprintSettings
from monitor.fingerprint.commands import fingerprint_report
from monitor.store.fingerprint_repo import FingerprintStore

__all__ = ["add_fingerprint_routes"]

_STORE_KEY = web.AppKey("fingerprints", FingerprintStore)
_SETTINGS_KEY: web.AppKey[Callable[[], Settings]] = web.AppKey("fingerprint_settings")
_MAX_BODY_BYTES = 4096


def add_fingerprint_routes(app: web.Application, *, db: AsyncEngine, settings: Callable[[], Settings]) -> None:
    app[_STORE_KEY] = FingerprintStore(async_sessionmaker(db, expire_on_commit=False))
    app[_SETTINGS_KEY] = settings
    app.router.add_get("/api/v1/fingerprints/{target}", show_handler)
    app.router.add_post("/api/v1/fingerprints/{target}/accept", accept_handler)


def _target(request: web.Request) -> tuple[str, FingerprintSettings]:
    name = request.match_info["target"]
    for target in request.app[_SETTINGS_KEY]().targets:
        if target.name == name:
            doctor = target.doctor
            return name, doctor.fingerprint if doctor is not None else FingerprintSettings()
    raise web.HTTPNotFound(text=f"target: no target named {name[:100]!r}")


async def show_handler(request: web.Request) -> web.Response:
    """The latest reading of each component against its baseline, with the diff of what drifted."""
    name, settings = _target(request)
    report = await fingerprint_report(request.app[_STORE_KEY], name, settings)
    return web.json_response(report, dumps=lambda o: json.dumps(o, ensure_ascii=False))


async def accept_handler(request: web.Request) -> web.Response:
    """Body (optional): `{"components": [...], "accepted_by": "..."}`; default every component, by "api"."""
    name, _ = _target(request)
    body = await _body(request)
    components = body.get("components")
    if components is not None and (
        not isinstance(components, list) or not all(c in FINGERPRINT_COMPONENTS for c in components)
    ):
        raise web.HTTPBadRequest(text=f"components: a list of {', '.join(FINGERPRINT_COMPONENTS)}")
    by = body.get("accepted_by", "api")
    if not isinstance(by, str) or not by.strip() or len(by) > 200:
        raise web.HTTPBadRequest(text="accepted_by: a non-empty string of at most 200 characters")
    chosen = await request.app[_STORE_KEY].accept_latest(name, components, by=by, now=datetime.now(UTC))
    if not chosen:
        raise web.HTTPNotFound(text=f"target {name[:100]!r}: no stored fingerprint to accept")
    return web.json_response({"target": name, "accepted": chosen})


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > _MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=_MAX_BODY_BYTES, actual_size=request.content_length)
    raw = await request.content.read(_MAX_BODY_BYTES + 1)
    if len(raw) > _MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=_MAX_BODY_BYTES, actual_size=len(raw))
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise web.HTTPBadRequest(text="body: not valid JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body: must be a JSON object")
    return body
