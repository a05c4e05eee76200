"""A tiny HTML builder that escapes by default.

Everything that is not already `Markup` is escaped when it is put into a page: element text,
attribute values and `Markup.format` arguments alike. Model output, probe names, error details
and alert annotations are untrusted, so the only way to put raw HTML into a page is to build it
here. Link attributes accept only same-site URLs, so a stored value can never become a
`javascript:` link.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from typing import TypeAlias

__all__ = ["Child", "Markup", "el", "esc", "join"]

_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9:-]*$")
_URL_ATTRS = frozenset({"href", "src", "action", "formaction", "xlink:href"})
# HTML elements without content, and SVG shapes (written self-closed when they have no children).
_VOID = frozenset({"br", "hr", "img", "input", "link", "meta"})
_SVG_SHAPES = frozenset({"circle", "line", "path", "rect", "polyline", "polygon"})


class Markup(str):
    """A string of trusted HTML; everything else is escaped on the way in."""

    __slots__ = ()

    def format(self, *args: object, **kwargs: object) -> Markup:
        return Markup(str.format(self, *(esc(a) for a in args), **{k: esc(v) for k, v in kwargs.items()}))

    def __add__(self, other: str) -> Markup:
        return Markup(str.__add__(self, esc(other)))

    def __html__(self) -> Markup:
        return self


# Markup is a str, so it is covered by `str` (and passes through `esc` unchanged).
Child: TypeAlias = "str | int | float | None | Iterable[Child]"


def esc(value: object) -> Markup:
    """`value` as HTML text: Markup passes through, anything else is escaped (quotes included)."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("")
    return Markup(html.escape(str(value), quote=True))


def _children(children: Iterable[Child]) -> Iterable[str]:
    for child in children:
        if child is None or child is False:
            continue
        if isinstance(child, str | int | float):
            yield esc(child)
        else:
            yield from _children(child)


def join(children: Iterable[Child], sep: Child = None) -> Markup:
    return Markup(esc(sep).join(_children(children)))


def _attr(name: str, value: object) -> str:
    if not _NAME.match(name):
        raise ValueError(f"bad attribute name {name!r}")
    if value is True:
        return f" {name}"
    text = str(value)
    # "//host" and "/\\host" are other sites to a browser, although they start with a slash.
    if name in _URL_ATTRS and (not text.startswith(("/", "?", "#")) or text.startswith(("//", "/\\"))):
        raise ValueError(f"{name}: only same-site URLs are allowed, got {text[:40]!r}")
    return f' {name}="{html.escape(text, quote=True)}"'


def el(tag: str, attrs: Mapping[str, object] | None = None, *children: Child) -> Markup:
    """`<tag attrs>children</tag>`; attribute values None/False are left out, True is a bare attribute.

    A `class_` key is accepted for `class` (so call sites can use keyword-style dicts).
    """
    if not _NAME.match(tag):
        raise ValueError(f"bad tag name {tag!r}")
    rendered = "".join(
        _attr("class" if name == "class_" else name, value)
        for name, value in (attrs or {}).items()
        if value is not None and value is not False
    )
    if tag in _VOID:
        if children:
            raise ValueError(f"<{tag}> cannot have children")
        return Markup(f"<{tag}{rendered}>")
    if tag in _SVG_SHAPES and not children:
        return Markup(f"<{tag}{rendered}/>")
    return Markup(f"<{tag}{rendered}>{''.join(_children(children))}</{tag}>")
