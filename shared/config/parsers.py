"""What one variable's text may be: a `Parser` turns the text into a typed value, says in words
what is allowed (for errors and the docs) and turns a value back into text (for check-config)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

from shared.config.redact import hide_query_secrets

T = TypeVar("T")
S = TypeVar("S", bound=str)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """One invalid variable: its name, the offending value (masked) and what is allowed."""

    def __init__(self, variable: str, value: str, allowed: str) -> None:
        self.variable = variable
        self.value = value
        self.allowed = allowed
        super().__init__(f"{variable}={value!r} is invalid: {allowed}")


class Invalid(ValueError):
    """A parser refused a text; the message says what is allowed (the variable adds its name)."""


@dataclass(frozen=True)
class Parser(Generic[T]):
    parse: Callable[[str], T]  # the stripped text (the default's when unset); raises Invalid
    allowed: str  # in words, for the docs
    show: Callable[[T], str] = str  # the value as text one could write back into .env


def choice(allowed: tuple[S, ...]) -> Parser[S]:
    """One of `allowed`, any case; the value is spelled as in `allowed`."""
    by_fold = {a.casefold(): a for a in allowed}

    def parse(text: str) -> S:
        if text.casefold() not in by_fold:
            raise Invalid("allowed: " + ", ".join(allowed))
        return by_fold[text.casefold()]

    return Parser(parse, ", ".join(allowed))


def mapping(codes: Mapping[str, int]) -> Parser[int]:
    """A name of `codes`, any case; the value is its code."""
    names = choice(tuple(codes))
    by_code = {code: name for name, code in codes.items()}
    return Parser(lambda text: codes[names.parse(text)], names.allowed, by_code.__getitem__)


def integer(lo: int, hi: int) -> Parser[int]:
    allowed = f"an integer from {lo} to {hi}"

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise Invalid(allowed) from None
        if not lo <= number <= hi:
            raise Invalid(allowed)
        return number

    return Parser(parse, allowed)


def seconds(lo: float, hi: float) -> Parser[float]:
    allowed = f"a number of seconds from {lo:g} to {hi:g}"

    def parse(text: str) -> float:
        try:
            number = float(text)
        except ValueError:
            raise Invalid(allowed) from None
        if not (lo <= number <= hi):  # also rejects NaN
            raise Invalid(allowed)
        return number

    return Parser(parse, allowed, _seconds_text)


def _seconds_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def boolean() -> Parser[bool]:
    allowed = ", ".join(f"{t}/{f}" for t, f in zip(_TRUE, _FALSE, strict=True))

    def parse(text: str) -> bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise Invalid("allowed: " + allowed)

    return Parser(parse, allowed, lambda value: "1" if value else "0")


_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]:/]*)(?::(\d{1,5}))?")


def hosts_of(netloc: str) -> list[tuple[str, int | None]]:
    """The hosts of a URL's `netloc`, each with its port: libpq and asyncpg take several,
    `h1:5432,h2:5433`, tried in order. Raises ValueError on a malformed host or port."""
    listed = netloc.rpartition("@")[2]
    out: list[tuple[str, int | None]] = []
    for item in listed.split(","):
        m = _HOST_PORT.fullmatch(item)
        if m is None or (m.group(2) is not None and not 0 < int(m.group(2)) < 65536):
            raise ValueError(f"bad host {item!r}")
        out.append((m.group(1), int(m.group(2)) if m.group(2) else None))
    return out


def url(*schemes: str) -> Parser[str]:
    """A URL with one of `schemes` (unix: a socket path, else a host), or empty. PostgreSQL's
    may list several hosts, `postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write`."""
    allowed = f"a URL with scheme {' or '.join(schemes)}"

    def parse(text: str) -> str:
        if not text:
            return ""
        try:
            parts = urlsplit(text)
            listed = hosts_of(parts.netloc)
            if len(listed) == 1:
                _ = parts.port  # raises ValueError on a non-numeric port
        except ValueError:
            raise Invalid(allowed) from None
        if parts.scheme not in schemes:
            raise Invalid(allowed)
        if len(listed) > 1 and (parts.scheme.startswith("unix") or not all(h for h, _ in listed)):
            raise Invalid(allowed + " and a name for every host")
        if parts.scheme.startswith("unix"):
            if not parts.path:
                raise Invalid(allowed + " and a socket path")
        elif not listed[0][0] and "host=" not in parts.query:
            # postgresql:///db?host=/run/postgresql is a valid libpq URL with the host in the query
            raise Invalid(allowed + " and a host")
        return text

    return Parser(parse, allowed + ", or empty")


def _path(text: str) -> Path:
    if "\x00" in text:
        raise Invalid("a file path")
    return Path(os.path.expanduser(text))


def path() -> Parser[Path]:
    """A file path, `~` expanded (its variable has a default, so it is never empty)."""
    return Parser(_path, "a file path")


def optional_path() -> Parser[Path | None]:
    return Parser(
        lambda text: _path(text) if text else None,
        "a file path, or empty for none",
        lambda value: "" if value is None else str(value),
    )


def text(pattern: str, allowed: str) -> Parser[str]:
    """Text matching `pattern` in full."""

    def parse(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise Invalid(allowed)
        return value

    return Parser(parse, allowed)


def optional_text(allowed: str) -> Parser[str | None]:
    """Any text; empty means none."""
    return Parser(
        lambda value: value or None, allowed, lambda value: "" if value is None else value
    )


def mask_url(url: str) -> str:
    """The URL with any password (also one given as a query parameter, `?password=`) replaced
    by `***` (safe for logs and repr)."""
    if not url:
        return url
    url = hide_query_secrets(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    # the hosts are kept as written: a multi-host list (h1:5432,h2:5433) stays whole
    user = parts.username or ""
    listed = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{listed}"))


def mask(value: str) -> str:
    """A secret as it may be shown: a URL keeps all but its password; other text is hidden."""
    if not value or "://" in value:
        return mask_url(value)
    return "***"
