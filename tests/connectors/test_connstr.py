"""Connection strings: parsing, formatting, masking and per-provider validation."""

from __future__ import annotations

import pytest

from odata_sync.connectors import open_connector, provider_name
from odata_sync.connectors.connstr import (
    MASK,
    format_connection_string,
    is_secret_key,
    mask,
    parse,
    scrub,
    unmask,
    validate,
)
from odata_sync.errors import BadRequest


def test_plain_pairs_are_case_insensitive_and_trimmed() -> None:
    parsed = parse(" Server = db.local ; port=5432;DATABASE=sales;; User=me ;")
    assert parsed["server"] == "db.local"
    assert parsed["PORT"] == "5432"
    assert parsed["Database"] == "sales"
    assert list(parsed) == ["Server", "port", "DATABASE", "User"]


def test_quoted_values_keep_semicolons_equals_and_doubled_quotes() -> None:
    parsed = parse('Password=\'a;b=c\';User="say ""hi""";Other=\'it\'\'s\';Plain=x=y')
    assert parsed["Password"] == "a;b=c"
    assert parsed["User"] == 'say "hi"'
    assert parsed["Other"] == "it's"
    assert parsed["Plain"] == "x=y"


def test_quoted_value_keeps_its_spaces() -> None:
    assert parse("Password=' padded '")["password"] == " padded "


def test_last_repeated_key_wins() -> None:
    assert parse("User=a;user=b")["USER"] == "b"


@pytest.mark.parametrize(("text", "secret"), [("Server", None), ("=value", "value"),
                                              ("Password='unterminated-s3cret", "s3cret"),
                                              ("Password='s3cret' trailing;User=a", "s3cret")])
def test_malformed_strings_are_bad_requests_without_echoing_values(text: str, secret: str | None) -> None:
    with pytest.raises(BadRequest) as info:
        parse(text)
    if secret:
        assert secret not in info.value.message


@pytest.mark.parametrize("value", ["simple", "a;b", "x=y", " lead", "'quoted'", 'both \' and "', "", "ünï 🚀"])
def test_format_round_trips(value: str) -> None:
    text = format_connection_string({"Key1": value, "Server": "s"})
    assert parse(text)["Key1"] == value
    assert parse(text)["Server"] == "s"


@pytest.mark.parametrize("key", ["Password", "pwd", "AuthToken", "Auth Token", "client_secret", "ApiKey",
                                 "AccessKey", "SecretKey", "OAuthRefreshToken", "SSLPassword", "key"])
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["Server", "User", "Database", "Port", "URI", "Timeout"])
def test_non_secret_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_mask_hides_every_secret_and_keeps_the_rest() -> None:
    text = "Server=h;User=me;Password='p;w=d';AuthToken=tok123;ApiKey=k;Empty Password="
    masked = mask(text)
    parsed = parse(masked)
    assert parsed["Password"] == MASK and parsed["AuthToken"] == MASK and parsed["ApiKey"] == MASK
    assert parsed["Server"] == "h" and parsed["User"] == "me"
    assert parsed["Empty Password"] == ""
    for secret in ("p;w=d", "tok123"):
        assert secret not in masked


def test_mask_of_an_unparseable_string_shows_nothing() -> None:
    assert mask("Password='oops") == MASK


def test_unmask_restores_masked_secrets_and_keeps_new_ones() -> None:
    old = "Server=h;User=me;Password='s3;cret';AuthToken=t1"
    new = mask(old).replace("Server=h", "Server=h2").replace(f"AuthToken={MASK}", "AuthToken=t2")
    restored = parse(unmask(new, old))
    assert restored["Server"] == "h2"
    assert restored["Password"] == "s3;cret"
    assert restored["AuthToken"] == "t2"


def test_unmask_matches_keys_case_insensitively() -> None:
    assert parse(unmask(f"password={MASK}", "PASSWORD=x"))["password"] == "x"


def test_unmask_without_a_stored_value_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="Password"):
        unmask(f"Password={MASK}", "Server=h")


def test_scrub_removes_secrets_and_url_passwords() -> None:
    message = 'password authentication failed for "hunter2" at postgresql://me:hunter2@h/db and http://u:pw@x/'
    cleaned = scrub(message, ["hunter2"])
    assert "hunter2" not in cleaned and ":pw@" not in cleaned
    assert MASK in cleaned


def test_validation_fills_defaults_and_types_values() -> None:
    settings = validate("PostgreSQL", "host=h;Database=d;UID=u;PWD=p;Timeout=2.5")
    assert settings == {"Server": "h", "Database": "d", "User": "u", "Password": "p", "Timeout": 2.5, "Port": 5432}


def test_unknown_key_is_named() -> None:
    with pytest.raises(BadRequest, match="'Colour'"):
        validate("SQLite", "Database=x.db;Colour=blue")


@pytest.mark.parametrize(("provider", "text", "missing"), [
    ("PostgreSQL", "Server=h;User=u", "Database"),
    ("MySQL", "Database=d;User=u", "Server"),
    ("SQLite", "Timeout=3", "Database"),
    ("CSV", "Charset=utf-8", "URI"),
    ("OData", "User=u", "URL"),
])
def test_missing_required_key_is_named(provider: str, text: str, missing: str) -> None:
    with pytest.raises(BadRequest, match=f"'{missing}'"):
        validate(provider, text)


def test_bad_typed_value_is_named() -> None:
    with pytest.raises(BadRequest, match="'Port'"):
        validate("MySQL", "Server=h;Port=abc;Database=d;User=u")


@pytest.mark.parametrize(("name", "canonical"), [("sqlite", "SQLite"), ("POSTGRESQL", "PostgreSQL"),
                                                 ("MariaDB", "MySQL"), ("mysql", "MySQL"), ("duckdb", "DuckDB"),
                                                 ("csv", "CSV"), ("odata", "OData")])
def test_provider_names_are_case_insensitive(name: str, canonical: str) -> None:
    assert provider_name(name) == canonical


def test_unknown_provider_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="Oracle"):
        open_connector("Oracle", "Server=x")


def test_open_connector_validates_immediately_and_hides_secrets_in_repr() -> None:
    connector = open_connector("MariaDB", "Server=h;Database=d;User=u;Password=topsecret", timeout=3)
    assert connector.provider == "MySQL"
    assert connector.timeout == 3
    assert "topsecret" not in repr(parse("Password=topsecret"))


def test_validation_accepts_any_casing_or_alias_of_the_provider() -> None:
    assert validate("mariadb", "Server=h;Database=d;User=u")["Port"] == 3306
    assert validate("sqlite", "Database=x.db") == {"Database": "x.db"}
    with pytest.raises(BadRequest, match="Unknown provider"):
        validate("Oracle", "Server=h")


@pytest.mark.parametrize(("provider", "text", "key"), [
    ("CSV", "URI=/tmp;Delimiter=ab", "Delimiter"), ("CSV", "URI=/tmp;Charset=klingon-8", "Charset"),
    ("OData", "URL=ftp://host/x", "URL"), ("CSV", "URI=/tmp;TypeDetectionScheme=Guess", "TypeDetectionScheme"),
])
def test_unusable_values_are_caught_when_validating(provider: str, text: str, key: str) -> None:
    with pytest.raises(BadRequest, match=key):
        validate(provider, text)


def test_tab_delimiter() -> None:
    assert validate("CSV", "URI=/tmp;Delimiter=\\t")["Delimiter"] == "\t"


def test_a_url_password_is_masked_and_restored() -> None:
    stored = 'URL="http://admin:s3cr;et@host/api.rsc/";User=x'
    masked = mask(stored)
    assert "s3cr" not in masked and f"admin:{MASK}@" in masked
    assert parse(unmask(masked, stored))["URL"] == "http://admin:s3cr;et@host/api.rsc/"
    with pytest.raises(BadRequest):
        unmask(masked, None)


@pytest.mark.parametrize("text", ["Server=a;Password=Plain;TailOfTheSecret42", "Server=a;Password=a;rest=x"])
def test_the_tail_of_an_unquoted_secret_is_never_echoed(text: str) -> None:
    with pytest.raises(BadRequest) as caught:
        validate("PostgreSQL", text)
    assert "Tail" not in caught.value.message and "rest" not in caught.value.message
    assert "quote" in caught.value.message
