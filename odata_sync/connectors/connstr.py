"""CData-style connection strings: parsing, formatting, secret masking and per-provider validation.

A connection string is ``key=value;`` pairs. Keys are case-insensitive (``password`` and ``Password`` are the same key)
and keep the caller's spelling for display. A value may be wrapped in single or double quotes so that ``;`` and ``=``
can appear in it; inside quotes the quote character is written twice (``'it''s'``). Secrets are never shown back:
``mask`` replaces them with ``********`` and ``unmask`` restores the stored value when a client writes the mask back.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from odata_sync.errors import BadRequest

MASK = "********"

#: Keys that are always secret. Any other key whose name contains one of SECRET_WORDS is secret too.
SECRET_KEYS = frozenset({
    "password", "pwd", "token", "authtoken", "secret", "key", "apikey", "accesskey", "secretkey", "clientsecret",
    "accesstoken", "refreshtoken", "oauthaccesstoken", "oauthrefreshtoken", "oauthclientsecret", "sharedaccesskey",
    "privatekey", "sslkey", "sslpassword", "proxypassword", "passphrase",
})
SECRET_WORDS = ("password", "secret", "token", "key", "pwd", "passphrase")


def _fold(key: str) -> str:
    """The identity of a key: case, spaces, dashes and underscores do not matter (``Auth Token`` is ``AuthToken``)."""
    return re.sub(r"[\s_\-]+", "", key).lower()


def is_secret_key(key: str) -> bool:
    folded = _fold(key)
    return folded in SECRET_KEYS or any(word in folded for word in SECRET_WORDS)


class ConnectionString(Mapping[str, str]):
    """An ordered, case-insensitive mapping of a connection string's pairs (the last of a repeated key wins)."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for key, value in pairs:
            self[key] = value

    def __setitem__(self, key: str, value: str) -> None:
        folded = _fold(key)
        original = self._items.get(folded, (key.strip(), ""))[0]
        self._items[folded] = (original, value)

    def __delitem__(self, key: str) -> None:
        del self._items[_fold(key)]

    def __getitem__(self, key: str) -> str:
        return self._items[_fold(key)][1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and _fold(key) in self._items

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"ConnectionString({mask(format_connection_string(self))!r})"

    def secrets(self) -> list[str]:
        """The non-empty secret values, for scrubbing driver messages."""
        return [value for key, value in self.items() if value and is_secret_key(key)]

    def __str__(self) -> str:
        return format_connection_string(self)


def parse(text: str) -> ConnectionString:
    """Parse ``key=value;`` pairs; raise BadRequest (never echoing a value) on malformed input."""
    result = ConnectionString()
    i, n = 0, len(text or "")
    text = text or ""
    previous_key = None
    while i < n:
        while i < n and (text[i].isspace() or text[i] == ";"):
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        semi = text.find(";", i)
        if eq < 0 or (0 <= semi < eq):
            end = semi if semi >= 0 else n
            if previous_key is not None and is_secret_key(previous_key):
                # most likely the rest of an unquoted secret that contains ';': never echo it
                raise BadRequest(f"Connection string: the text after '{previous_key}' is not a key=value pair; "
                                 f"quote a value that contains ';' ({previous_key}='...')")
            raise BadRequest(f"Connection string: '{text[i:end].strip()[:40]}' is not a key=value pair")
        key = text[i:eq].strip()
        if not key:
            raise BadRequest("Connection string: a pair has an empty key")
        i = eq + 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] in "'\"":
            quote, i, chunks = text[i], i + 1, []
            while True:
                close = text.find(quote, i)
                if close < 0:
                    raise BadRequest(f"Connection string: the value of '{key}' has no closing {quote}")
                chunks.append(text[i:close])
                if close + 1 < n and text[close + 1] == quote:
                    chunks.append(quote)
                    i = close + 2
                    continue
                i = close + 1
                break
            value = "".join(chunks)
            while i < n and text[i].isspace():
                i += 1
            if i < n and text[i] != ";":
                raise BadRequest(f"Connection string: unexpected text after the quoted value of '{key}'")
        else:
            end = text.find(";", i)
            end = n if end < 0 else end
            value = text[i:end].strip()
            i = end
        result[key] = value
        previous_key = key
    return result


def _quote(value: str) -> str:
    needs = (";" in value or "=" in value or value != value.strip() or value[:1] in ("'", '"'))
    if not needs:
        return value
    if '"' not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    return '"' + value.replace('"', '""') + '"'


def format_connection_string(pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """Write pairs back as ``Key=value;Key2=value2``, quoting values that need it."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return ";".join(f"{key}={_quote(str(value))}" for key, value in items)


def mask(text: str) -> str:
    """The connection string with every non-empty secret value replaced by ``********``."""
    try:
        parsed = parse(text)
    except BadRequest:
        return MASK  # unparseable: showing any of it could show a secret
    for key, value in list(parsed.items()):
        if value and is_secret_key(key):
            parsed[key] = MASK
        elif value and _URL_PASSWORD.search(value):
            parsed[key] = _URL_PASSWORD.sub(rf"\1{MASK}@", value)
    return format_connection_string(parsed)


def unmask(new: str, old: str | None) -> str:
    """Put the stored secret values back where a client wrote the mask (it read a masked string and sent it back)."""
    parsed = parse(new)
    previous = parse(old) if old else ConnectionString()
    for key, value in list(parsed.items()):
        if value == MASK and is_secret_key(key):
            if key not in previous:
                raise BadRequest(f"Connection string: '{key}' is {MASK} but there is no stored value to keep",
                                 target=key)
            parsed[key] = previous[key]
        elif f":{MASK}@" in value:  # a URL whose password was masked on read
            stored = _URL_PASSWORD.search(previous.get(key, ""))
            if stored is None:
                raise BadRequest(f"Connection string: the password in '{key}' is {MASK} but there is no stored "
                                 "value to keep", target=key)
            password = stored.group(0)[len(stored.group(1)):-1]
            parsed[key] = value.replace(f":{MASK}@", f":{password}@", 1)
    return format_connection_string(parsed)


_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def scrub(message: str, secrets: Iterable[str]) -> str:
    """Remove secret values (and URL passwords) from a driver message before anybody sees it."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        message = message.replace(secret, MASK)
    return _URL_PASSWORD.sub(rf"\1{MASK}@", message)


# --- per-provider validation -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeySpec:
    """One accepted key: its display name, aliases, whether it is required, and how its value is typed."""

    name: str
    aliases: tuple[str, ...] = ()
    required: bool = False
    kind: str = "str"  # str | int | float | bool | choice
    choices: tuple[str, ...] = ()
    default: Any = None


_TIMEOUT = KeySpec("Timeout", ("CommandTimeout", "ConnectTimeout", "Connect Timeout", "Connection Timeout"), kind="float")
_SERVER_KEYS = (
    KeySpec("Server", ("Host", "Hostname", "Data Source", "DataSource", "Address"), required=True),
    KeySpec("Database", ("DB", "Initial Catalog", "DatabaseName"), required=True),
    KeySpec("User", ("Username", "UID", "User Id", "UserId", "User Name"), required=True),
    KeySpec("Password", ("PWD",)),
    KeySpec("SSLMode", ("SSL Mode", "SSL"), kind="choice",
            choices=("disable", "allow", "prefer", "require", "verify-ca", "verify-full")),
    _TIMEOUT,
)

PROVIDER_KEYS: dict[str, tuple[KeySpec, ...]] = {
    "SQLite": (KeySpec("Database", ("Data Source", "DataSource", "File", "FileName", "URI"), required=True), _TIMEOUT),
    "DuckDB": (KeySpec("Database", ("Data Source", "DataSource", "File", "FileName", "URI"), required=True), _TIMEOUT),
    "PostgreSQL": (KeySpec("Port", kind="int", default=5432), *_SERVER_KEYS),
    "MySQL": (KeySpec("Port", kind="int", default=3306), *_SERVER_KEYS),
    "CSV": (
        KeySpec("URI", ("Folder", "Path", "Data Source", "DataSource"), required=True),
        KeySpec("Charset", ("Encoding",)),  # absent: UTF-8, falling back to cp1252 / latin-1 when the file is not
        KeySpec("Delimiter", ("FieldDelimiter", "Separator"), default=","),
        KeySpec("TypeDetectionScheme", kind="choice", choices=("RowScan", "None"), default="RowScan"),
        KeySpec("RowScanDepth", kind="int", default=100),
        _TIMEOUT,
    ),
    "OData": (
        KeySpec("URL", ("URI", "ServiceURL", "Service URL"), required=True),
        KeySpec("User", ("Username", "UID", "User Id", "UserId")),
        KeySpec("Password", ("PWD",)),
        KeySpec("AuthToken", ("Auth Token", "Token")),
        KeySpec("PageSize", ("MaxPageSize",), kind="int"),
        _TIMEOUT,
    ),
}


def _typed(spec: KeySpec, key: str, value: str) -> Any:
    try:
        if spec.kind == "int":
            number = int(value)
            if number < 0:
                raise ValueError
            return number
        if spec.kind == "float":
            number = float(value)
            if number < 0 or number != number:
                raise ValueError
            return number
        if spec.kind == "bool":
            lowered = value.lower()
            if lowered in ("true", "yes", "1", "on"):
                return True
            if lowered in ("false", "no", "0", "off"):
                return False
            raise ValueError
    except ValueError:
        raise BadRequest(f"Connection string: '{key}' must be a non-negative {spec.kind}, got '{value[:40]}'",
                         target=key) from None
    if spec.kind == "choice":
        for choice in spec.choices:
            if choice.lower() == value.lower():
                return choice
        raise BadRequest(f"Connection string: '{key}' must be one of {', '.join(spec.choices)}, got '{value[:40]}'",
                         target=key)
    return value


_PROVIDER_ALIASES = {name.lower(): name for name in PROVIDER_KEYS} | {
    "mariadb": "MySQL", "postgres": "PostgreSQL", "sqlite3": "SQLite", "odata4": "OData", "odatav4": "OData",
}


def provider_name(name: str) -> str:
    """The canonical provider name for any casing or alias (``mariadb`` -> ``MySQL``); BadRequest if unknown."""
    canonical = _PROVIDER_ALIASES.get((name or "").strip().lower())
    if canonical is None:
        raise BadRequest(f"Unknown provider '{name}' (known: {', '.join(PROVIDER_KEYS)}, MariaDB)",
                         target="ProviderName")
    return canonical


def validate(provider: str, text: str | Mapping[str, str]) -> dict[str, Any]:
    """Check a provider's connection string; return its settings by display name, typed, with defaults filled in.

    ``provider`` is matched case-insensitively (``MariaDB`` is MySQL). Unknown keys and missing required keys are
    BadRequest naming the key, so a typo is not silently ignored.
    """
    provider = provider_name(provider)
    parsed = text if isinstance(text, ConnectionString) else parse(text) if isinstance(text, str) else ConnectionString(
        text.items())
    specs = PROVIDER_KEYS[provider]
    by_name = {_fold(alias): spec for spec in specs for alias in (spec.name, *spec.aliases)}
    settings: dict[str, Any] = {}
    previous_key = None
    for key, value in parsed.items():
        spec = by_name.get(_fold(key))
        if spec is None and previous_key is not None and is_secret_key(previous_key):
            # an unknown "key" right after a secret is most likely the rest of an unquoted secret: never echo it
            raise BadRequest(f"Connection string: unexpected text after '{previous_key}'; quote a value that "
                             f"contains ';' ({previous_key}='...')", target=previous_key)
        previous_key = key
        if spec is None:
            known = ", ".join(spec.name for spec in specs)
            raise BadRequest(f"Connection string: unknown key '{key}' for provider {provider} (known keys: {known})",
                             target=key)
        if value == "":
            continue
        settings[spec.name] = _typed(spec, key, value)
    for spec in specs:
        if spec.name not in settings:
            if spec.required:
                raise BadRequest(f"Connection string: the key '{spec.name}' is required for provider {provider}",
                                 target=spec.name)
            if spec.default is not None:
                settings[spec.name] = spec.default
    _check_values(provider, settings)
    return settings


def _check_values(provider: str, settings: dict[str, Any]) -> None:
    """Values that are well-typed but still unusable, caught when the connection is saved rather than at run time."""
    if provider == "CSV":
        delimiter = {"\\t": "\t", "tab": "\t"}.get(str(settings["Delimiter"]).lower(), settings["Delimiter"])
        if len(delimiter) != 1:
            raise BadRequest("Connection string: 'Delimiter' must be a single character", target="Delimiter")
        settings["Delimiter"] = delimiter
        if settings.get("Charset"):
            try:
                codecs.lookup(settings["Charset"])
            except LookupError:
                raise BadRequest(f"Connection string: unknown Charset '{settings['Charset']}'",
                                 target="Charset") from None
    if provider == "OData" and not str(settings["URL"]).lower().startswith(("http://", "https://")):
        raise BadRequest("Connection string: 'URL' must be an http:// or https:// address", target="URL")
