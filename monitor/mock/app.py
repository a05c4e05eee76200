"""`create_mock_app(config)`: the aiohttp application that impersonates `vllm serve` (0.32)."""

from __future__ import annotations

import logging
import time
import uuid
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from monitor.mock import control, deployment, embeddings, glm, wire
from monitor.mock.config import VLLM_VERSION, MockConfig, MockFlavor
from monitor.mock.generation import NO_CHAT_TEMPLATE, chat_completions, completions
from monitor.mock.protocol import (
    DetokenizeRequest,
    RequestError,
    ServerFailure,
    TokenizeRequest,
    check_json_content_type,
    check_model,
    parse_body,
)
from monitor.mock.state import STATE_KEY, MockState

__all__ = ["VLLM_VERSION", "create_mock_app"]

logger = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"  # prometheus_client of vLLM 0.32


def _json(obj: Any, status: int = 200, flavor: MockFlavor = "vllm") -> web.Response:
    return web.Response(status=status, body=wire.dumps(obj, flavor), content_type="application/json")


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Domain errors -> vLLM's HTTP errors, in one place (§3); a client that hung up is not an error."""
    try:
        return await handler(request)
    except RequestError as exc:
        flavor = request.app[STATE_KEY].config.flavor
        return _json(wire.error_body(exc.message, exc.error_type, exc.status, exc.param), exc.status, flavor)
    except ServerFailure:
        return web.Response(status=500)  # engine failures are a bare 500 with an empty body (§3.2)
    except web.HTTPNotFound:
        return _json({"detail": "Not Found"}, 404)  # FastAPI's default body for unknown routes
    except web.HTTPMethodNotAllowed:
        return _json({"detail": "Method Not Allowed"}, 405)
    except ConnectionResetError:
        # The client hung up (a load generator stopping its users does so mid-request); vLLM aborts the
        # request quietly. aiohttp's ClientConnectionResetError is a ConnectionResetError. This response
        # is never sent: aiohttp finds the connection closed and drops it without logging.
        logger.debug("%s %s: client disconnected", request.method, request.path)
        return web.Response(status=499, reason="Client Closed Request")


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    # vLLM's --api-key middleware guards only paths starting with /v1 (§3.2).
    api_key = request.app[STATE_KEY].config.api_key
    if api_key and request.path.startswith("/v1") and request.method != "OPTIONS":
        if request.headers.get("Authorization") != f"Bearer {api_key}":
            return _json({"error": "Unauthorized"}, 401)
    return await handler(request)


@web.middleware
async def _forced_status(request: web.Request, handler: Handler) -> web.StreamResponse:
    status = request.app[STATE_KEY].config.status
    if status is None or not request.path.startswith("/v1"):
        return await handler(request)
    if status == 500:
        raise ServerFailure
    if status == 401:
        return _json({"error": "Unauthorized"}, 401)
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    # vLLM error types are exception-class names: "Not Found" -> "NotFoundError" (§3.1).
    error_type = phrase.replace(" ", "").replace("-", "") + ("" if phrase.endswith("Error") else "Error")
    raise RequestError(f"Mock status {status}: {phrase}", status=status, error_type=error_type)


async def _health(request: web.Request) -> web.Response:
    if request.app[STATE_KEY].config.flavor == "openai":
        raise web.HTTPNotFound
    return web.Response()  # 200 with an empty body (§4)


async def _version(request: web.Request) -> web.Response:
    return _json({"version": request.app[STATE_KEY].config.server_version})


async def _models(request: web.Request) -> web.Response:
    config = request.app[STATE_KEY].config
    now = int(time.time())
    # `created` is the request time and the permission id is fresh on every call (§4.1).
    permission = {
        "id": f"modelperm-{uuid.uuid4().hex}",
        "object": "model_permission",
        "created": now,
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }
    card = {
        "id": config.model,
        "object": "model",
        "created": now,
        "owned_by": "vllm",
        "root": config.model,
        "parent": None,
        "max_model_len": config.max_model_len,
        "permission": [permission],
    }
    return _json({"object": "list", "data": [card]}, flavor=config.flavor)


async def _tokenize(request: web.Request) -> web.Response:
    config = request.app[STATE_KEY].config
    if config.flavor == "openai":  # OpenAI's API has no /tokenize (nor /detokenize)
        raise web.HTTPNotFound
    check_json_content_type(request.headers.get("Content-Type", ""))
    body = parse_body(await request.read(), TokenizeRequest)
    check_model(body.model, config.model)
    if body.messages is not None:
        if config.no_chat_template:
            raise RequestError(f"{NO_CHAT_TEMPLATE} None")
        messages = [{"role": m.role, "content": m.content} for m in body.messages]
        text = glm.render_chat(
            deployment.template_messages(config, messages), add_generation_prompt=body.add_generation_prompt
        )
        # The template already starts with [gMASK]<sop>, so chat adds no special tokens (§6.1).
        tokens = glm.encode(text, add_special_tokens=bool(body.add_special_tokens))
    elif body.prompt is not None:
        add_special = True if body.add_special_tokens is None else body.add_special_tokens
        tokens = glm.encode(body.prompt, add_special_tokens=add_special)
    else:
        raise RequestError("Either `prompt` or `messages` must be set.", error_type="Bad Request")
    token_strs = [glm.token_str(token) for token in tokens] if body.return_token_strs else None
    ids = deployment.tokenizer_ids(config, tokens)
    return _json({"count": len(tokens), "max_model_len": config.max_model_len, "tokens": ids, "token_strs": token_strs})


async def _detokenize(request: web.Request) -> web.Response:
    config = request.app[STATE_KEY].config
    if config.flavor == "openai":
        raise web.HTTPNotFound
    check_json_content_type(request.headers.get("Content-Type", ""))
    body = parse_body(await request.read(), DetokenizeRequest)
    check_model(body.model, config.model)
    return _json({"prompt": glm.decode(body.tokens)})  # special tokens are kept (§4)


async def _metrics(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if state.config.flavor == "openai":
        raise web.HTTPNotFound
    text = state.metrics.render(state.config.model, state.config.max_model_len, state.batch.waiting)
    return web.Response(body=text.encode(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "uvicorn"  # vLLM runs behind uvicorn


async def _on_shutdown(app: web.Application) -> None:
    app[STATE_KEY].closing.set()  # releases stalled handlers before aiohttp waits for them


def create_mock_app(config: MockConfig) -> web.Application:
    """Build the mock vLLM server; `config` is copied, and changed later via `POST /_mock/config`."""
    app = web.Application(middlewares=[_errors, _auth, _forced_status])
    app[STATE_KEY] = MockState(config)
    app.router.add_routes(
        [
            web.post("/v1/chat/completions", chat_completions),
            web.post("/v1/completions", completions),
            web.get("/v1/models", _models),
            web.get("/health", _health),
            web.get("/version", _version),
            web.post("/v1/embeddings", embeddings.create_embeddings),
            web.post("/tokenize", _tokenize),
            web.post("/detokenize", _detokenize),
            web.get("/metrics", _metrics),
            *control.routes,
        ]
    )
    app.on_response_prepare.append(_on_prepare)
    app.on_shutdown.append(_on_shutdown)
    return app
