"""Settings: invalid values are refused with the setting's name, never its password."""

from __future__ import annotations

import pytest

from settings import ASYNC_DRIVER, SettingsError, load_settings

SECRET = "hunter2-Very-Secret"


def test_defaults_without_environment() -> None:
    settings = load_settings()
    assert settings.database_url is None
    assert settings.migrate_on_startup is True
    assert settings.migration_exit_on_failure is True
    assert settings.alembic_config.name == "alembic.ini"


@pytest.mark.parametrize(
    "raw",
    ["postgresql://u:p@db:5432/app", "postgres://u:p@db/app", "postgresql+asyncpg://u:p@db/app"],
)
def test_database_urls_are_normalised_to_asyncpg(raw: str) -> None:
    settings = load_settings(database_url=raw)
    assert settings.app_url.drivername == ASYNC_DRIVER
    assert settings.app_url.database == "app"
    assert settings.migration_url == settings.app_url


def test_migration_url_is_separate_when_given() -> None:
    settings = load_settings(
        database_url="postgresql://u:p@pooler:6432/app",
        migration_database_url="postgresql://u:p@primary:5432/app",
    )
    assert settings.app_url.host == "pooler"
    assert settings.migration_url.host == "primary"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DATABASE_URL", f"mysql://root:{SECRET}@db/app", "DATABASE_URL: uses the scheme 'mysql'"),
        ("DATABASE_URL", f"postgresql://root:{SECRET}@db", "DATABASE_URL: names no database"),
        ("DATABASE_URL", "not a url at all", "DATABASE_URL: is not a valid database URL"),
        (
            "DATABASE_URL",
            f"postgresql://u:{SECRET}@db/app?sslmode=sometimes",
            "DATABASE_URL: sslmode 'sometimes' is not one of disable, allow, prefer, require, "
            "verify-ca, verify-full",
        ),
        (
            "MIGRATION_DATABASE_URL",
            f"postgresql://u:{SECRET}@db/app?sslmode=verify-full&sslrootcert=/no/such/ca.crt",
            "MIGRATION_DATABASE_URL: sslrootcert '/no/such/ca.crt' is not a file",
        ),
        (
            "DATABASE_URL",
            f"postgresql://u:{SECRET}@db/app?ssl=true",
            "DATABASE_URL: has the query parameter 'ssl'; only sslmode and sslrootcert are understood",
        ),
        (
            "DATABASE_URL",
            f"postgresql://u:{SECRET}@db/app?sslmode=require&sslmode=disable",
            "DATABASE_URL: gives the query parameter 'sslmode' more than once",
        ),
        ("MIGRATE_ON_STARTUP", "perhaps", "MIGRATE_ON_STARTUP: Input should be a valid boolean"),
        (
            "DATABASE_POOL_PRE_PING",
            "sometimes",
            "DATABASE_POOL_PRE_PING: Input should be a valid boolean",
        ),
        ("MIGRATION_LOCK_TIMEOUT", "0", "MIGRATION_LOCK_TIMEOUT: Input should be greater than 0"),
        (
            "MIGRATION_LOCK_TIMEOUT",
            "0.0004",
            "MIGRATION_LOCK_TIMEOUT: is below 0.001: PostgreSQL counts whole milliseconds",
        ),
        (
            "REQUEST_STATEMENT_TIMEOUT",
            "0.0001",
            "REQUEST_STATEMENT_TIMEOUT: is below 0.001: PostgreSQL counts whole milliseconds",
        ),
        (
            "MIGRATION_STATEMENT_TIMEOUT",
            "3000000",
            "MIGRATION_STATEMENT_TIMEOUT: Input should be less than or equal to 2147483.647",
        ),
        (
            "DATABASE_URL",
            f"postgresql://u:{SECRET}@[::1:5432/app",
            "DATABASE_URL: has a port that is not a whole number (an IPv6 address goes "
            "in brackets: [::1]:5432)",
        ),
        (
            "DATABASE_URL",
            f"postgresql://u:{SECRET}@db:http/app",
            "DATABASE_URL: has a port that is not a whole number",
        ),
        (
            "DATABASE_URL",
            f"postgresql://u:{SECRET}@db:99999/app",
            "DATABASE_URL: has the port 99999, outside 1-65535",
        ),
        (
            "DATABASE_URL",
            f"postgresql://u:{SECRET}@x@db/app",
            "DATABASE_URL: has an '@' after the password",
        ),
        (
            "DATABASE_URL",
            f"postgresql://u:{SECRET}@db/app?sslmode=verify-full&sslrootcert={__file__}",
            f"DATABASE_URL: sslrootcert '{__file__}' holds no PEM certificate",
        ),
        ("ALEMBIC_CONFIG", __file__, f"ALEMBIC_CONFIG: {__file__} is not an ini file"),
        (
            "MIGRATION_LOCK_TIMEOUT",
            "soon",
            "MIGRATION_LOCK_TIMEOUT: Input should be a valid number",
        ),
        (
            "MIGRATION_LOCK_RETRIES",
            "-1",
            "MIGRATION_LOCK_RETRIES: Input should be greater than or equal to 0",
        ),
        (
            "MIGRATION_STATEMENT_TIMEOUT",
            "-5",
            "MIGRATION_STATEMENT_TIMEOUT: Input should be greater than or equal to 0",
        ),
        (
            "MIGRATION_LOCK_NAME",
            "has spaces in it",
            "MIGRATION_LOCK_NAME: must be 1 to 200 letters",
        ),
        (
            "DATABASE_POOL_SIZE",
            "0",
            "DATABASE_POOL_SIZE: Input should be greater than or equal to 1",
        ),
        (
            "DATABASE_STATEMENT_POOL_SHARE",
            "1",
            "DATABASE_STATEMENT_POOL_SHARE: Input should be less than 1",
        ),
        (
            "DATABASE_STATEMENT_POOL_SHARE",
            "-0.5",
            "DATABASE_STATEMENT_POOL_SHARE: Input should be greater than or equal to 0",
        ),
        (
            "DATABASE_STATEMENT_POOL_SHARE",
            "NaN",
            "DATABASE_STATEMENT_POOL_SHARE: Input should be a finite number",
        ),
        (
            "DATABASE_STATEMENT_POOL_SHARE",
            "\u0660.5",
            "DATABASE_STATEMENT_POOL_SHARE: Input should be a valid number",
        ),
        ("LOG_LEVEL", "chatty", "LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        (
            "ALEMBIC_CONFIG",
            "/no/such/alembic.ini",
            "ALEMBIC_CONFIG: /no/such/alembic.ini is not a file",
        ),
        (
            "MIGRATION_LOCK_TIMEOUT",
            "inf",
            "MIGRATION_LOCK_TIMEOUT: Input should be a finite number",
        ),
        (
            "MIGRATION_STATEMENT_TIMEOUT",
            "1e400",
            "MIGRATION_STATEMENT_TIMEOUT: Input should be a finite number",
        ),
        (
            "DATABASE_POOL_SIZE",
            "\u0661\u0660",
            "DATABASE_POOL_SIZE: Input should be a valid integer",
        ),
        ("HTTP_MAX_HEAD_BYTES", "\u00b2", "HTTP_MAX_HEAD_BYTES: Input should be a valid integer"),
        ("HTTP_HEAD_TIMEOUT", "0", "HTTP_HEAD_TIMEOUT: Input should be greater than 0"),
        ("HTTP_BODY_TIMEOUT", "NaN", "HTTP_BODY_TIMEOUT: Input should be a finite number"),
        (
            "HTTP_MAX_CONNECTIONS",
            "0",
            "HTTP_MAX_CONNECTIONS: Input should be greater than or equal to 1",
        ),
        (
            "REQUEST_STATEMENT_TIMEOUT",
            "-1",
            "REQUEST_STATEMENT_TIMEOUT: Input should be greater than or equal to 0",
        ),
        ("RATE_LIMIT_PER_KEY", "Infinity", "RATE_LIMIT_PER_KEY: Input should be a finite number"),
        (
            "RATE_LIMIT_PER_KEY",
            "1e-310",
            "RATE_LIMIT_PER_KEY: must be 0 (no limit) or at least one request a day",
        ),
        (
            "RATE_LIMIT_AUTH_FAILURES",
            "0.0005",
            "RATE_LIMIT_AUTH_FAILURES: must be 0 (no limit) or at least one request a day",
        ),
        (
            "RATE_LIMIT_STORAGE_URL",
            f"redis://:{SECRET}@cache:6379/0?foo=bar&socket_timeout=1",
            "RATE_LIMIT_STORAGE_URL: has query parameters Redis's client refuses: foo",
        ),
        (
            "RATE_LIMIT_STORAGE_URL",
            f"redis://:{SECRET}@cache:6379/0?socket_timeout=abc&db=x",
            "RATE_LIMIT_STORAGE_URL: has query parameters Redis's client refuses: db, socket_timeout",
        ),
        (
            "RATE_LIMIT_STORAGE_URL",
            f"rediss://:{SECRET}@cache:6379/0?ssl_cert_reqs=bogus",
            "RATE_LIMIT_STORAGE_URL: has query parameters Redis's client refuses: ssl_cert_reqs",
        ),
        (
            "RATE_LIMIT_AUTH_FAILURES",
            "-5",
            "RATE_LIMIT_AUTH_FAILURES: Input should be greater than or equal to 0",
        ),
        (
            "RATE_LIMIT_STORAGE_URL",
            f"memcached://u:{SECRET}@cache:11211",
            "RATE_LIMIT_STORAGE_URL: must be a redis:// or rediss:// URL",
        ),
        ("RATE_LIMIT_STORAGE_URL", "redis://", "RATE_LIMIT_STORAGE_URL: names no host"),
        (
            "RATE_LIMIT_STORAGE_URL",
            f"redis://:{SECRET}@cache:99999",
            "RATE_LIMIT_STORAGE_URL: has a port outside 1-65535",
        ),
        (
            "RATE_LIMIT_STORAGE_URL",
            f"redis://:{SECRET}@cache:6379/\u0661",
            "RATE_LIMIT_STORAGE_URL: must be printable ASCII",
        ),
        (
            "RATE_LIMIT_STORAGE_URL",
            "redis://cache:6379/zero",
            "RATE_LIMIT_STORAGE_URL: names a database that is not a number",
        ),
        ("OPERATOR_TOKEN", "short", "OPERATOR_TOKEN: must be at least 32 characters"),
        ("OPERATOR_TOKEN", "a" * 40, "OPERATOR_TOKEN: repeats itself too much"),
        (
            "OPERATOR_TOKEN",
            "my-operator-token-for-production",
            "OPERATOR_TOKEN: has about 118 bits of entropy by a simple estimate",
        ),
        (
            "OPERATOR_TOKEN",
            "3f9c1e0b7a5d4c2e" + "8f6a1b0c9d7e5f3a",
            "OPERATOR_TOKEN: has about 125 bits",
        ),
        ("OPERATOR_TOKEN", "abcdefgh" * 5, "OPERATOR_TOKEN: repeats itself too much"),
        (
            "OPERATOR_TOKEN",
            "CHANGE-ME-to-at-least-32-random-characters",
            "OPERATOR_TOKEN: is a placeholder from an example",
        ),
        (
            "OPERATOR_TOKEN",
            "demo-operator-token-change-me-0123456789",
            "OPERATOR_TOKEN: is a placeholder from an example",
        ),
        (
            "OPERATOR_TOKEN",
            "3f9c1e0b7a5d4c2e8f6a1b0c9d7e5f3a 2b4c",
            "OPERATOR_TOKEN: must be printable ASCII without spaces",
        ),
    ],
)
def test_invalid_settings_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert expected in str(refused.value)
    assert SECRET not in str(refused.value)
    if variable == "OPERATOR_TOKEN":
        assert value not in str(refused.value)


def test_a_random_operator_token_is_accepted() -> None:
    import secrets

    # The README's generator (64 hex characters) and the compose file's.
    for token in (secrets.token_hex(32), secrets.token_urlsafe(32)):
        assert load_settings(operator_token=token).operator_token is not None


def test_a_redis_url_is_taken_for_the_rate_limits() -> None:
    url = f"rediss://:{SECRET}@cache.example.test:6380/2?socket_timeout=2&ssl_cert_reqs=required"
    settings = load_settings(rate_limit_storage_url=f" {url} ")
    assert settings.rate_limit_storage_url is not None
    assert settings.rate_limit_storage_url.get_secret_value() == url
    assert SECRET not in repr(settings)
    assert load_settings(rate_limit_storage_url="").rate_limit_storage_url is None


def test_migration_url_without_database_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATION_DATABASE_URL", f"postgresql://u:{SECRET}@primary/app")
    with pytest.raises(
        SettingsError, match="MIGRATION_DATABASE_URL is set but DATABASE_URL is not"
    ) as refused:
        load_settings()
    assert SECRET not in str(refused.value)


def test_a_transaction_pooler_without_a_direct_migration_url_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://u:{SECRET}@pgbouncer:6432/app")
    monkeypatch.setenv("DATABASE_POOLER", "transaction")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert "DATABASE_POOLER is transaction but MIGRATION_DATABASE_URL is not set" in str(
        refused.value
    )
    assert SECRET not in str(refused.value)
    monkeypatch.setenv("MIGRATION_DATABASE_URL", f"postgresql://u:{SECRET}@postgres:5432/app")
    assert load_settings().migration_url.host == "postgres"


def test_password_is_hidden_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://u:{SECRET}@db/app")
    settings = load_settings()
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())


def test_the_settings_page_documents_every_setting() -> None:
    from settings import Settings
    from tests.support.processes import PROJECT_ROOT

    page = (PROJECT_ROOT / "docs" / "operations" / "settings.md").read_text()
    missing = [
        name.upper() for name in Settings.model_fields if f"| `{name.upper()}` |" not in page
    ]
    assert missing == []


@pytest.mark.processes
def test_the_service_refuses_a_weak_operator_token_at_startup() -> None:
    from tests.support.processes import run_python

    weak = "my-operator-token-for-production"
    result = run_python(
        "-m", "service", "--workers", "2", OPERATOR_TOKEN=weak, DATABASE_URL="postgresql://u@h/d"
    )
    assert result.returncode == 2, result.stderr
    assert "OPERATOR_TOKEN: has about 118 bits of entropy" in result.stderr
    assert "openssl rand -hex 32" in result.stderr
    assert weak not in result.stdout + result.stderr


def test_a_worker_count_the_memory_cannot_hold_is_explained() -> None:
    from service.__main__ import WORKER_MEMORY, too_many_workers

    gib = 2**30
    fits = gib // WORKER_MEMORY
    assert too_many_workers(fits, gib) is None
    problem = too_many_workers(fits + 1, gib)
    assert problem is not None
    assert f"at most {fits} fit" in problem
    assert "gives the service 1.0 GiB" in problem
    assert too_many_workers(10**9, None) is None  # a system that does not say


def test_the_usable_memory_is_at_most_the_machines() -> None:
    import os

    from service.__main__ import usable_memory

    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    memory = usable_memory()
    assert memory is not None
    assert 0 < memory <= physical
