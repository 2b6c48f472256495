"""Secrets out of every text the bridge shows: logs, api_logs rows, dead letters, status.

`redact(text, secrets)` hides any URL password (`scheme://user:PASSWORD@`), any password-like
URL query parameter (`?password=`, libpq and redis-py both accept one), and every value in
`secrets`. Exception texts are the usual way in: a driver's error may quote its DSN, so every
path from an exception's text to an output goes through it (`scrub`).

`scrub(text)` is `redact` with the secrets of this process's configuration, remembered once
by the entry point (`remember(settings)`); before that it still hides URL passwords.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

HIDDEN = "***"
# shorter values are hidden in URLs (the patterns below) but not wherever they occur as text:
# a 2-letter password would otherwise blank out every log line that happens to hold it
MIN_SECRET_LEN = 4
SECRET_QUERY_KEYS = ("password", "sslpassword", "pass", "passwd", "token", "secret")

_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://[^\s:/@?#]*:)([^\s@/?#]*)@")
_QUERY_SECRET = re.compile(r"(?i)([?&;](?:" + "|".join(SECRET_QUERY_KEYS) + r")=)([^&;#\s'\"]*)")

_remembered: list[str] = []  # this process's configured secrets, longest first


def url_secrets(url: str) -> list[str]:
    """The secret parts of `url`: its password and password-like query values, as written
    and percent-decoded (an error message may show either)."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
        found += [v for k, v in parse_qsl(parts.query) if k.lower() in SECRET_QUERY_KEYS]
        found += [m.group(2) for m in _QUERY_SECRET.finditer(url)]  # as written
    except ValueError:
        return [url]  # unreadable: the whole text is the secret
    raw = [s for s in found if s]
    return raw + [unquote(s) for s in raw]


def secret_values(values: Iterable[str]) -> tuple[str, ...]:
    """What must never be shown of these configured secrets: URLs give their passwords, any
    other text is secret as a whole. Longest first, so a secret holding another is hidden
    whole."""
    found: set[str] = set()
    for value in values:
        if not value:
            continue
        if "://" in value:
            found.update(url_secrets(value))
        else:
            found.add(value)
    return tuple(sorted((s for s in found if len(s) >= MIN_SECRET_LEN), key=len, reverse=True))


def hide_query_secrets(text: str) -> str:
    """`text` with the values of password-like URL query parameters hidden."""
    return _QUERY_SECRET.sub(lambda m: m.group(1) + HIDDEN, text)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without URL passwords, password-like query values and any of `secrets`."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + HIDDEN + "@", text)
    text = hide_query_secrets(text)
    for secret in secrets:
        if len(secret) >= MIN_SECRET_LEN and secret in text:
            text = text.replace(secret, HIDDEN)
    return text


def remember(values: Iterable[str]) -> None:
    """Hide these configured secrets (see `secret_values`) in every later `scrub`; the
    secrets already remembered stay hidden too."""
    merged = set(_remembered) | set(secret_values(values))
    _remembered[:] = sorted(merged, key=len, reverse=True)


def scrub(text: str) -> str:
    """`redact` with this process's configured secrets."""
    return redact(text, _remembered)


def scrub_all(value: object) -> object:
    """`scrub` applied to every text inside nested dicts, lists and tuples (e.g. a JSON
    body); other values are returned as they are."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_all(v) for v in value)
    return value
