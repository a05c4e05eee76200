"""`run_mock()`: serve the mock until SIGINT/SIGTERM; also `python -m monitor.mock.server [flags]`.

The module entry point exists so tests can start the mock as a real separate process without
the CLI (`tests/mockserver.py`); `--port 0` binds a free port and the printed line tells which.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web
from pydantic import ValidationError

from monitor.mock.app import create_mock_app
from monitor.mock.config import MockConfig
from monitor.mock.state import STATE_KEY

__all__ = ["main", "run_mock", "serve_mock"]

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 5.0


async def serve_mock(config: MockConfig, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve until `stop` is set; prints the listening line once the socket is bound."""
    app = create_mock_app(config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = port
        for address in runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                bound_port = int(address[1])
                break
        # Tests and humans wait for this exact line; keep its shape stable.
        print(f"mock vLLM server ({config.model}) listening on http://{host}:{bound_port}/v1", flush=True)
        await stop.wait()
        logger.info("mock server stopping")
        app[STATE_KEY].closing.set()
    finally:
        await runner.cleanup()


def run_mock(config: MockConfig, host: str, port: int) -> None:
    """Blocking: serve the mock on host:port until SIGINT or SIGTERM."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Signals only set the event; shutdown happens in one place (serve_mock's finally).
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve_mock(config, host, port, stop)

    asyncio.run(main())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m monitor.mock.server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="Interface to bind.")
    parser.add_argument("--port", type=int, default=8000, help="Port to bind (0: any free port).")
    for name, field in MockConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            # Not BooleanOptionalAction: it reads any "--no-" prefix as a negation, so the flag of a
            # knob named no_* (--no-stop-tokens) would turn the knob off. "--no-FLAG" is the negation.
            parser.add_argument(flag, dest=name, action="store_const", const=True, help=field.description)
            parser.add_argument(
                "--no-" + flag[2:], dest=name, action="store_const", const=False, help=argparse.SUPPRESS
            )
        else:
            # Values stay strings here; pydantic's lax mode converts and validates them.
            parser.add_argument(flag, default=None, metavar=name.upper(), help=field.description)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    host, port = args.pop("host"), args.pop("port")
    try:
        config = MockConfig.model_validate({key: value for key, value in args.items() if value is not None})
    except ValidationError as exc:
        print(f"invalid mock config: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_mock(config, host, port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
