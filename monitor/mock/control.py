"""The mock's own control routes under `/_mock/`: run-time config and recorded token timings.

They are never behind `--api-key` (the auth middleware only guards `/v1`).
"""

from __future__ import annotations

import json
import logging

from aiohttp import web
from pydantic import ValidationError

from monitor.mock import wire
from monitor.mock.config import MockConfig
from monitor.mock.state import STATE_KEY

__all__ = ["routes"]

logger = logging.getLogger(__name__)


def _bad_request(message: str) -> web.Response:
    return web.Response(
        status=400, body=wire.dumps(wire.error_body(message, "BadRequestError", 400)), content_type="application/json"
    )


def _config_response(config: MockConfig) -> web.Response:
    return web.Response(body=wire.dumps(config.model_dump(mode="json")), content_type="application/json")


async def get_config(request: web.Request) -> web.Response:
    return _config_response(request.app[STATE_KEY].config)


async def post_config(request: web.Request) -> web.Response:
    """Partial update with the `MockConfig` field names; `{"reset": true}` restores the startup config."""
    state = request.app[STATE_KEY]
    try:
        update = json.loads(await request.read() or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _bad_request(f"body is not valid JSON: {exc}")
    if not isinstance(update, dict):
        return _bad_request("body must be a JSON object of MockConfig fields")
    reset = update.pop("reset", False)
    if not isinstance(reset, bool):
        return _bad_request("reset: must be a boolean")
    base = state.startup_config if reset else state.config
    try:
        config = MockConfig.model_validate({**base.model_dump(), **update})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors(include_url=False)
        )
        return _bad_request(problems)
    state.replace_config(config)
    logger.info("mock config %s: %s", "reset" if reset else "updated", sorted(update))
    return _config_response(config)


async def get_timings(request: web.Request) -> web.Response:
    timings = request.app[STATE_KEY].timings
    request_id = request.query.get("request_id")
    if request_id is None:
        body = {"requests": [record.as_json() for record in timings.all()]}
        return web.Response(body=wire.dumps(body), content_type="application/json")
    record = timings.get(request_id)
    if record is None:
        return web.Response(
            status=404,
            body=wire.dumps({"detail": f"no timings for request {request_id}"}),
            content_type="application/json",
        )
    return web.Response(body=wire.dumps(record.as_json()), content_type="application/json")


async def delete_timings(request: web.Request) -> web.Response:
    cleared = request.app[STATE_KEY].timings.clear()
    return web.Response(body=wire.dumps({"cleared": cleared}), content_type="application/json")


routes = [
    web.get("/_mock/config", get_config),
    web.post("/_mock/config", post_config),
    web.get("/_mock/timings", get_timings),
    web.delete("/_mock/timings", delete_timings),
]
