"""`llm-monitor mock`: a click command generated from MockConfig, so every knob is a flag.

Generated rather than hand-written so a new mock knob is a flag (and a `POST /_mock/config` key)
without touching the CLI.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

import click
from pydantic.fields import FieldInfo


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """(click type, is_flag) for a MockConfig field annotation."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    origin = get_origin(annotation)
    if origin in (types.UnionType, typing.Union) and len(args) == 1:
        return _click_type(args[0])
    if origin is Literal:
        return click.Choice([str(a) for a in get_args(annotation)]), False
    if annotation is bool:
        return bool, True
    if annotation in (int, float, str):
        return annotation, False
    return str, False


def _option(name: str, field: FieldInfo) -> click.Option:
    kind, is_flag = _click_type(field.annotation)
    default = field.get_default(call_default_factory=True)
    help_text = field.description or name
    if not is_flag and default is not None:
        help_text += f"  [default: {default}]"
    return click.Option(
        [f"--{name.replace('_', '-')}"],
        type=None if is_flag else kind,
        is_flag=is_flag,
        default=None,
        help=help_text,
    )


def add_mock_command(group: click.Group) -> None:
    from monitor.mock.config import MockConfig

    def callback(host: str, port: int, **knobs: Any) -> None:
        """Run the vLLM-faithful mock server."""
        from monitor.config import parse_mock_config
        from monitor.mock.server import run_mock

        config = parse_mock_config(MockConfig, {k: v for k, v in knobs.items() if v is not None})
        run_mock(config, host, port)

    params: list[click.Parameter] = [
        click.Option(["--host"], default="127.0.0.1", show_default=True, help="Interface to bind."),
        click.Option(["--port"], type=int, default=8000, show_default=True, help="Port (0 = any free port)."),
    ]
    params += [_option(name, field) for name, field in MockConfig.model_fields.items()]
    group.add_command(
        click.Command(
            "mock",
            callback=callback,
            params=params,
            help="Run the vLLM-faithful mock server (dry runs, demos, tests). "
            "Every flag can be changed at run time with POST /_mock/config.",
        )
    )
