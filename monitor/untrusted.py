"""Text from a server, made safe to store, print and log. Pure, no I/O.

Everything a server sends is untrusted. JSON escapes decode to lone surrogates (``\\ud800``), which
no UTF-8 encoder accepts (printing or storing such a string raises ``UnicodeEncodeError``), to NUL,
which PostgreSQL text refuses, and to ESC, which starts a sequence a terminal obeys. A gateway may
quote the Authorization header back anywhere, even in ``finish_reason``. ``Untrusted.text`` is the
one function all of it goes through: it replaces those characters (and every other control character
but tab, newline and carriage return) with U+FFFD and the API key with ``[redacted]``, on the whole
text, so any cut made later (``one_line``, the store's column caps) can no longer keep part of a key.

One ``Untrusted`` serves one request. Its ``sanitised`` flag says that characters were replaced,
so a result can tell that its text is not byte-for-byte what arrived. The stream meter, the error
envelope parser, the probes and the Locust users all use it (Locust imports only pure modules).
"""

from __future__ import annotations

import base64
import re

__all__ = ["MAX_DETAIL_CHARS", "REDACTED", "REPLACEMENT", "Untrusted", "one_line"]

REDACTED = "[redacted]"
REPLACEMENT = "\ufffd"
MAX_DETAIL_CHARS = 300
# Lone surrogates (json.loads pairs proper ones into one code point), NUL, and the control characters a
# terminal obeys: ESC and the C1 CSI start escape sequences (colours, cursor moves, OSC 52 clipboard writes),
# BEL, backspace and the rest rewrite what is shown. Tab, newline and carriage return stay: replies have them.
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def one_line(text: str, max_chars: int = MAX_DETAIL_CHARS) -> str:
    """Whitespace folded to single spaces, cut with an ellipsis at ``max_chars``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= max_chars else flat[: max_chars - 1] + "…"


class Untrusted:
    """Cleans the server-supplied strings of one request; ``sanitised`` is set once it replaced characters."""

    __slots__ = ("_secrets", "sanitised")

    def __init__(self, secret: str | None = None) -> None:
        forms: tuple[str, ...] = ()
        if secret:
            raw = secret.encode()
            # As a gateway could quote it: plain, or inside Basic-style base64 credentials.
            forms = (secret, base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode())
        self._secrets = tuple(dict.fromkeys(forms))
        self.sanitised = False

    def text(self, value: str) -> str:
        """``value`` storable on every backend, with the secret redacted. Apply before any truncation."""
        # isascii() is O(1) in CPython and isprintable() one C loop: most deltas skip the regex scan.
        if not (value.isascii() and value.isprintable()) and _UNSAFE.search(value) is not None:
            value = _UNSAFE.sub(REPLACEMENT, value)
            self.sanitised = True
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def line(self, value: str, max_chars: int = MAX_DETAIL_CHARS) -> str:
        """``text`` folded into one line of at most ``max_chars``: the form of an error detail."""
        return one_line(self.text(value), max_chars)

    def decode(self, raw: bytes) -> str:
        """Bytes as text (invalid UTF-8 becomes U+FFFD and counts as sanitised), then ``text``."""
        try:
            value = raw.decode()
        except UnicodeDecodeError:
            value = raw.decode(errors="replace")
            self.sanitised = True
        return self.text(value)

    def preview(self, raw: bytes, max_chars: int) -> str:
        """The start of ``raw`` as clean text of at most ``max_chars``, redacted before it is cut."""
        # A secret that starts inside the preview must be seen whole to be redacted.
        margin = max((len(s) for s in self._secrets), default=0) + 4
        # A cut can split a UTF-8 sequence: replacing it is not a sign of a hostile server.
        return self.text(raw[: max_chars + margin].decode(errors="replace"))[:max_chars]
