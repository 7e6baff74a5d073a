"""Client configuration files: ``load_properties`` reads the Java-style ``client.properties``
that Kafka's own tools take with ``--command-config``, so one file serves both.

The format is ``java.util.Properties``': ``key=value``, ``key: value`` or ``key value`` lines;
``#`` and ``!`` start comment lines; blank lines are skipped; a line ending in an odd number of
backslashes continues on the next one (whose leading whitespace is dropped); ``\\t``, ``\\n``,
``\\r``, ``\\f``, ``\\uXXXX`` and a backslash before any other character (``\\=``, ``\\:``,
``\\ ``, ``\\\\``) are escapes. Two things are stricter than Java, because in a file of client
settings both are mistakes rather than intent: trailing whitespace is dropped from values
(escape it, ``\\ ``, to keep it), and a line with a name but no separator and no value is an
error (Java would read an empty value). The text is UTF-8 (Java's ``load(InputStream)`` reads
ISO-8859-1; the two agree on ASCII, which is what Kafka settings are).

Errors are :class:`~kafka_ml.ConfigError` naming the file and the line, never the line's text:
it may hold a password.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from ._native import is_consumer_only_property
from .exceptions import ConfigError

__all__ = ["load_properties", "parse_properties", "shared_client_config"]


def shared_client_config(config: Mapping[str, object]) -> dict[str, object]:
    """A consumer's configuration without its consumer-only properties: the connection and
    security settings that a producer (or another client) of the same application shares. The
    list of consumer-only properties is the Rust core's, which its dead-letter producer uses."""
    return {k: v for k, v in config.items() if not is_consumer_only_property(k)}


_WHITESPACE = " \t\f"
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def load_properties(path: str | os.PathLike[str]) -> dict[str, str]:
    """The properties of the file at ``path``, in file order (a repeated key: the last wins)."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{source}: cannot read the properties file: {e.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"{source}:{line}: not UTF-8 text") from None
    return parse_properties(text, source)


def parse_properties(text: str, source: str = "<properties>") -> dict[str, str]:
    """Parses properties text; ``source`` names it in errors (a file name)."""
    out: dict[str, str] = {}
    # Java's line terminators only: str.splitlines would also split at \f, which is whitespace here.
    lines = re.split(r"\r\n|\r|\n", text)
    i = 0
    while i < len(lines):
        start = i + 1  # errors name the line where the entry starts
        line = lines[i].lstrip(_WHITESPACE)
        i += 1
        if not line or line[0] in "#!":
            continue  # a comment is never continued, even when it ends with a backslash
        while _continues(line):
            line = line[:-1]
            if i < len(lines):
                line += lines[i].lstrip(_WHITESPACE)
                i += 1
        key, value = _entry(_unescape(line, source, start), source, start)
        out[key] = value
    return out


def _continues(line: str) -> bool:
    backslashes = len(line) - len(line.rstrip("\\"))
    return backslashes % 2 == 1


def _unescape(line: str, source: str, lineno: int) -> list[tuple[str, bool]]:
    """The line's characters, each with whether it was escaped (an escaped ``=`` or space is
    part of the key or value, not a separator)."""
    out: list[tuple[str, bool]] = []
    i = 0
    while i < len(line):
        c = line[i]
        i += 1
        if c != "\\":
            out.append((c, False))
            continue
        if i == len(line):
            break  # a backslash ending the file's last line: nothing to continue onto
        c = line[i]
        i += 1
        if c == "u":
            digits = line[i : i + 4]
            if len(digits) != 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise ConfigError(f"{source}:{lineno}: malformed \\uXXXX escape (four hex digits expected)")
            out.append((chr(int(digits, 16)), True))
            i += 4
        else:
            out.append((_ESCAPES.get(c, c), True))
    return out


def _entry(chars: list[tuple[str, bool]], source: str, lineno: int) -> tuple[str, str]:
    n = len(chars)
    i = 0
    while i < n and not (not chars[i][1] and chars[i][0] in "=:" + _WHITESPACE):
        i += 1
    key = "".join(c for c, _ in chars[:i])
    separator = False
    while i < n and not chars[i][1] and chars[i][0] in _WHITESPACE:
        i += 1
    if i < n and not chars[i][1] and chars[i][0] in "=:":
        i += 1
        separator = True
        while i < n and not chars[i][1] and chars[i][0] in _WHITESPACE:
            i += 1
    end = n
    while end > i and not chars[end - 1][1] and chars[end - 1][0] in _WHITESPACE:
        end -= 1
    value = "".join(c for c, _ in chars[i:end])
    if not key:
        raise ConfigError(f"{source}:{lineno}: a value without a property name (the line starts with = or :)")
    if not separator and not value:
        # Not echoed: a stray word on its own line may well be a pasted password.
        raise ConfigError(f"{source}:{lineno}: expected key=value, found a name with no value")
    return key, value
