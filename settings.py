"""Service settings, read from the environment.

Every setting is validated when the process starts. An invalid value stops the
process with a message that names the setting; database passwords are never
part of that message.
"""

from __future__ import annotations

import configparser
import math
import re
import ssl
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

PROJECT_ROOT = Path(__file__).resolve().parent
ASYNC_DRIVER = "postgresql+asyncpg"
_ACCEPTED_SCHEMES = {"postgresql", "postgres", "postgresql+asyncpg"}
_LOCK_NAME = re.compile(r"^[\w.:/-]{1,200}$")
# The libpq query parameters a database URL may carry (service/db/engines.py turns
# them into asyncpg's `ssl`); any other would reach asyncpg.connect() unknown.
TLS_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_QUERY_PARAMETERS = ("sslmode", "sslrootcert")

# Finite: "inf" and "1e400" parse as floats, and an infinite timeout is no timeout.
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
# PostgreSQL keeps timeouts in whole milliseconds, at most 2^31 - 1 of them:
# a value that rounds to 0 ms would turn the timeout off, a larger one fails
# at the first SET.
_POSTGRES_MAX_SECONDS = 2147483.647


def _whole_milliseconds(seconds: float) -> float:
    if seconds != 0 and seconds < 0.001:
        raise ValueError(
            "is below 0.001: PostgreSQL counts whole milliseconds, and 0 ms turns the timeout off"
        )
    return seconds


# A PostgreSQL timeout (lock_timeout, statement_timeout), in seconds; 0 is none.
PostgresSeconds = Annotated[
    float,
    Field(ge=0, le=_POSTGRES_MAX_SECONDS, allow_inf_nan=False),
    AfterValidator(_whole_milliseconds),
]
# A rate limit's window is at most a day long: a rate below one request a
# day (but above 0, no limit) makes a window no clock or Redis key can hold.
_DAY_SECONDS = 86_400


def _at_least_one_a_day(per: float) -> AfterValidator:
    """A rate in requests per `per` seconds: 0, or at least one a day."""

    def check(rate: float) -> float:
        if 0 < rate < per / _DAY_SECONDS:
            raise ValueError("must be 0 (no limit) or at least one request a day")
        return rate

    return AfterValidator(check)


_Rate = Annotated[float, Field(ge=0, le=1_000_000, allow_inf_nan=False)]
RatePerSecond = Annotated[_Rate, _at_least_one_a_day(1)]
RatePerMinute = Annotated[_Rate, _at_least_one_a_day(60)]

# Operator tokens that are examples or demos, never secrets (checked case-insensitively).
_PLACEHOLDER_WORDS = ("change-me", "changeme", "change_me", "replace-me", "placeholder", "example")
# Estimated bits of an operator token (length times the entropy of its own
# character frequencies): 64 random hex characters (`openssl rand -hex 32`)
# give at least 220, `secrets.token_urlsafe(32)` at least 180, a phrase such as
# "my-operator-token-for-production" about 118, 32 copies of one character 0.
_OPERATOR_TOKEN_MIN_BITS = 128


class SettingsError(Exception):
    """Raised when the environment holds an invalid setting.

    The message names each invalid setting (by its environment variable) and
    never repeats the offending value, which may hold a password.
    """


def parse_database_url(raw: str) -> URL:
    """Parse a PostgreSQL URL and normalise it to the asyncpg driver.

    `postgresql://` and `postgres://` are accepted for convenience; any other
    driver is refused because the service is built on asyncpg.
    """
    try:
        url = make_url(raw.strip())
    except ArgumentError:
        raise ValueError(
            "is not a valid database URL (expected postgresql+asyncpg://user:password@host:port/database)"
        ) from None
    except ValueError:  # SQLAlchemy's int() of the port
        raise ValueError(
            "has a port that is not a whole number (an IPv6 address goes in brackets: [::1]:5432)"
        ) from None
    if url.drivername not in _ACCEPTED_SCHEMES:
        raise ValueError(
            f"uses the scheme {url.drivername!r}; expected postgresql+asyncpg:// (or postgresql://)"
        )
    if not url.database:
        raise ValueError("names no database (expected .../database at the end)")
    if url.port is not None and not 1 <= url.port <= 65535:
        raise ValueError(f"has the port {url.port}, outside 1-65535")
    if url.host and "@" in url.host:
        raise ValueError("has an '@' after the password: write an '@' inside the password as %40")
    _check_query_parameters(url)
    return url.set(drivername=ASYNC_DRIVER)


def _check_query_parameters(url: URL) -> None:
    for name, value in url.query.items():
        if name not in _QUERY_PARAMETERS:
            raise ValueError(
                f"has the query parameter {name!r}; only {' and '.join(_QUERY_PARAMETERS)} are understood"
            )
        if not isinstance(value, str):
            raise ValueError(f"gives the query parameter {name!r} more than once")
    mode = url.query.get("sslmode")
    if mode is not None and mode not in TLS_MODES:
        raise ValueError(f"sslmode {mode!r} is not one of {', '.join(TLS_MODES)}")
    root = url.query.get("sslrootcert")
    if isinstance(root, str):
        _check_root_certificates(root)


def _check_root_certificates(path: str) -> None:
    if not Path(path).is_file():
        raise ValueError(f"sslrootcert {path!r} is not a file")
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError, UnicodeError):
        raise ValueError(f"sslrootcert {path!r} holds no PEM certificate") from None


def masked(url: URL) -> str:
    """Render a URL for logs and responses, with the password hidden."""
    return url.render_as_string(hide_password=True)


class Settings(BaseSettings):
    """All settings of the service; each field is read from the environment
    variable of the same name in upper case."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    database_url: SecretStr | None = Field(
        default=None,
        description="postgresql+asyncpg:// URL for application traffic (may go through a pooler). "
        "Unset: `python -m service` starts an embedded PostgreSQL.",
    )
    migration_database_url: SecretStr | None = Field(
        default=None,
        description="Direct, unpooled URL for the migration lock and DDL; defaults to DATABASE_URL.",
    )
    events_database_url: SecretStr | None = Field(
        default=None,
        description="Direct, unpooled URL each worker LISTENs on for config changes (the SDK's "
        "event streams); defaults to MIGRATION_DATABASE_URL.",
    )
    database_pooler: Literal["none", "transaction"] = Field(
        default="none",
        description="transaction: DATABASE_URL goes through a transaction-pooling pooler (PgBouncer): "
        "no named prepared statements are kept across transactions.",
    )
    migrate_on_startup: bool = Field(
        default=True,
        description="Migrate to head on startup; when false, stay unready until another process has.",
    )
    migration_lock_name: str = Field(
        default="platform-service:schema-migrations",
        description="Name from which the advisory lock key is derived; processes sharing a name serialise.",
    )
    migration_lock_timeout: Annotated[PostgresSeconds, Field(gt=0)] = Field(
        default=0.5,
        description="The longest lock_timeout of a migration statement, in seconds: the first "
        "attempt of a revision waits 0.1 s for its locks, each retry twice as long, up to this.",
    )
    migration_lock_retries: Annotated[int, Field(ge=0, le=100)] = Field(
        default=20,
        description="How often a revision that hit lock_timeout is retried, after a pause with "
        "jitter that grows from 0.5 s to 30 s.",
    )
    migration_statement_timeout: PostgresSeconds = Field(
        default=3600.0,
        description="statement_timeout of migration statements, in seconds (0: none).",
    )
    migration_exit_on_failure: bool = Field(
        default=True,
        description="Exit non-zero when the migration fails, so the orchestrator restarts the process; "
        "false keeps it serving, unready.",
    )
    migration_verify: Literal["off", "warn", "strict"] = Field(
        default="warn",
        description="At startup, compare applied revisions' files with the checksums recorded when they "
        "ran: warn logs edited ones, strict also refuses readiness.",
    )
    allow_schema_ahead: bool = Field(
        default=True,
        description="Serve when the database is ahead of this code on the same line (a rolled-back "
        "deploy); false refuses readiness then. Ahead where the audit trail cannot place it: "
        "processes already serving keep serving (reported), starting ones refuse.",
    )
    migration_keepalive_idle: Annotated[int, Field(ge=1, le=3600)] = Field(
        default=20, description="Seconds before the server probes a silent migration connection."
    )
    database_connect_timeout: PositiveSeconds = Field(
        default=10.0, description="Timeout of one connection attempt, in seconds."
    )
    database_retry_max_interval: PositiveSeconds = Field(
        default=10.0,
        description="Longest pause between attempts to reach the database, in seconds.",
    )
    readiness_poll_interval: PositiveSeconds = Field(
        default=2.0,
        description="With MIGRATE_ON_STARTUP=false: how often to look whether the schema reached head.",
    )
    database_pool_size: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=10, description="Connections per worker process for application traffic."
    )
    database_max_overflow: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=0,
        description="Extra short-lived connections under load (0: none, the fastest here).",
    )
    database_statement_pool_share: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = Field(
        default=0.5,
        description="Share of DATABASE_POOL_SIZE kept in the driver's own pool for "
        "statements that commit on their own (reads, the usual create), which skip "
        "SQLAlchemy's checkout; the rest, and DATABASE_MAX_OVERFLOW, serve transactions. "
        "0, or a pool of one connection: every statement in SQLAlchemy's pool.",
    )
    database_pool_pre_ping: bool = Field(
        default=False,
        description="Test each pooled connection with a round trip before use. Off: after a "
        "database restart only requests in flight fail (503), since the first dead connection "
        "found invalidates the whole pool; on where idle connections are cut silently.",
    )
    operator_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for creating accounts (POST /v1/accounts); unset disables that route.",
    )
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = Field(
        default=1024 * 1024, description="Largest request body accepted, in bytes."
    )
    request_statement_timeout: Annotated[PostgresSeconds, Field(le=3600)] = Field(
        default=10.0,
        description="statement_timeout of the SQL statements of API requests, in seconds (0: none).",
    )
    rate_limit_per_key: RatePerSecond = Field(
        default=100.0,
        description="Requests per second one API key (or the operator token) may make to one "
        "worker process, with bursts of twice as many; 0 turns the limit off.",
    )
    rate_limit_auth_failures: RatePerMinute = Field(
        default=30.0,
        description="Failed authentications per minute one client address may make to one "
        "worker process before it is answered 429; 0 turns the limit off.",
    )
    rate_limit_storage_url: SecretStr | None = Field(
        default=None,
        description="A Redis server (redis://[:password@]host:port[/db], rediss:// for TLS) "
        "where every process of the fleet counts the rate limits together; unset: each worker "
        "process counts alone, in memory. When it does not answer, each process counts alone "
        "until it does (one warning).",
    )
    http_max_head_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = Field(
        default=16 * 1024,
        description="Largest request head (request line and headers) accepted, in bytes (431 above).",
    )
    http_head_timeout: Annotated[PositiveSeconds, Field(le=3600)] = Field(
        default=10.0,
        description="Time a connection may take to send a request's head, in seconds (408 after).",
    )
    http_body_timeout: Annotated[PositiveSeconds, Field(le=3600)] = Field(
        default=30.0,
        description="Time a request may take to send its body after its head, in seconds (408 after).",
    )
    http_send_timeout: Annotated[PositiveSeconds, Field(le=3600)] = Field(
        default=30.0,
        description="Time a client may leave an answer unread while it fills the send buffer, "
        "in seconds; the connection is dropped after.",
    )
    http_max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=1000,
        description="Open connections per worker process; requests on connections beyond it "
        "are answered 503.",
    )
    http_max_connections_per_address: Annotated[int, Field(ge=0, le=1_000_000)] = Field(
        default=100,
        description="Open connections one client address (the TCP peer's) may hold on one worker "
        "process; more are answered 429 and closed at once. 0: no limit (behind a proxy every "
        "client has the proxy's address).",
    )
    quota_configs: Annotated[int, Field(ge=1, le=100_000_000)] = Field(
        default=10_000,
        description="Configs one account may hold; a write beyond is answered 409 naming the quota.",
    )
    quota_contexts: Annotated[int, Field(ge=1, le=100_000_000)] = Field(
        default=100_000,
        description="Contexts (reported by SDKs) one account may hold; a write beyond is answered 409 naming the quota.",
    )
    quota_environments: Annotated[int, Field(ge=1, le=100_000_000)] = Field(
        default=100,
        description="Environments one account may hold; a write beyond is answered 409 naming the quota.",
    )
    quota_api_keys: Annotated[int, Field(ge=1, le=100_000_000)] = Field(
        default=1_000,
        description="Live (not revoked) API keys one account may hold; a write beyond is answered 409 naming the quota.",
    )
    quota_users: Annotated[int, Field(ge=1, le=100_000_000)] = Field(
        default=1_000,
        description="Users one account may hold; a write beyond is answered 409 naming the quota.",
    )
    account_pool_share: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = Field(
        default=0.5,
        description="Share of a worker's pool connections (DATABASE_POOL_SIZE + "
        "DATABASE_MAX_OVERFLOW) one account's requests may hold at once; its further requests "
        "wait for their turn (503 after 10 s), others' go ahead.",
    )
    answer_buffer_bytes: Annotated[int, Field(ge=1024 * 1024, le=1024 * 1024 * 1024)] = Field(
        default=64 * 1024 * 1024,
        description="Bytes of large answers (pages of /api/v1/configs from 256 KiB) one worker "
        "process may hold that clients have not read yet; beyond, such a request is answered 503.",
    )
    events_keepalive_seconds: Annotated[PositiveSeconds, Field(le=3600)] = Field(
        default=15.0,
        description="How often a quiet event stream gets a keepalive comment, in seconds: "
        "shorter than any idle timeout of a proxy in front of the service.",
    )
    api_key_usage_interval: PositiveSeconds = Field(
        default=60.0,
        description="How stale an API key's last-used time may get, in seconds (no write per request).",
    )
    graceful_shutdown_timeout: PositiveSeconds = Field(
        default=8.0,
        description="After SIGTERM, how long in-flight requests may take before the process exits, in seconds.",
    )
    alembic_config: Path = Field(
        default=PROJECT_ROOT / "alembic.ini", description="Path of alembic.ini."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Level of the service's own log messages."
    )
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description="json: one JSON object per line; text: for people; auto: text on a terminal, else json.",
    )

    @field_validator("database_url", "migration_database_url", "events_database_url")
    @classmethod
    def _valid_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        url = parse_database_url(value.get_secret_value())
        return SecretStr(url.render_as_string(hide_password=False))

    @field_validator("rate_limit_storage_url")
    @classmethod
    def _valid_rate_limit_storage_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        problem = _redis_url_problem(value.get_secret_value().strip())
        if problem:
            raise ValueError(problem)
        return SecretStr(value.get_secret_value().strip())

    @field_validator("operator_token")
    @classmethod
    def _strong_operator_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        problem = _operator_token_problem(value.get_secret_value())
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("migration_lock_name")
    @classmethod
    def _valid_lock_name(cls, value: str) -> str:
        if not _LOCK_NAME.match(value):
            raise ValueError("must be 1 to 200 letters, digits or . : / _ -")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("alembic_config")
    @classmethod
    def _alembic_config_exists(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"{value} is not a file")
        parser = configparser.ConfigParser()
        try:
            parser.read(value, encoding="utf-8")
        except (configparser.Error, UnicodeError, OSError):
            raise ValueError(f"{value} is not an ini file") from None
        if not parser.has_section("alembic"):
            raise ValueError(f"{value} has no [alembic] section")
        return value.resolve()

    @model_validator(mode="after")
    def _migration_url_needs_database_url(self) -> Settings:
        if self.migration_database_url is not None and self.database_url is None:
            raise ValueError("MIGRATION_DATABASE_URL is set but DATABASE_URL is not")
        return self

    @model_validator(mode="after")
    def _pooled_traffic_needs_a_direct_migration_url(self) -> Settings:
        # A session-level advisory lock taken through a transaction-pooling
        # pooler stays on a pooled server connection, shared with other clients.
        if self.database_pooler == "transaction" and self.migration_database_url is None:
            raise ValueError(
                "DATABASE_POOLER is transaction but MIGRATION_DATABASE_URL is not set: the "
                "migration lock and DDL must reach PostgreSQL directly, not through the pooler "
                "of DATABASE_URL"
            )
        return self

    @property
    def app_url(self) -> URL:
        """URL for application traffic; only valid once a database is configured."""
        if self.database_url is None:
            raise SettingsError("DATABASE_URL: not set")
        return make_url(self.database_url.get_secret_value())

    @property
    def migration_url(self) -> URL:
        """Direct URL for the migration lock and DDL."""
        if self.migration_database_url is None:
            return self.app_url
        return make_url(self.migration_database_url.get_secret_value())

    @property
    def statement_pool_size(self) -> int:
        """Connections of a worker's driver pool, for statements that commit
        on their own (0: none, they run in SQLAlchemy's pool)."""
        if self.database_pool_pre_ping:
            return 0  # the driver's pool has no ping: SQLAlchemy's pings each
        share = int(self.database_pool_size * self.database_statement_pool_share)
        return min(share, self.database_pool_size - 1)

    @property
    def transaction_pool_size(self) -> int:
        """Connections of a worker's SQLAlchemy pool, for transactions (and
        DATABASE_MAX_OVERFLOW more under load)."""
        return self.database_pool_size - self.statement_pool_size

    @property
    def account_slots(self) -> int:
        """Requests one account may have in flight on one worker (ACCOUNT_POOL_SHARE)."""
        pool = self.database_pool_size + self.database_max_overflow
        return max(1, int(pool * self.account_pool_share))

    @property
    def events_url(self) -> URL:
        """Direct URL the workers LISTEN on for config changes."""
        if self.events_database_url is None:
            return self.migration_url
        return make_url(self.events_database_url.get_secret_value())


def _redis_url_problem(url: str) -> str | None:
    """Why a URL cannot name the Redis of the rate limits, or None (never
    repeating the URL, which may hold a password)."""
    if not url.isascii() or not url.isprintable():
        return "must be printable ASCII"
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return "must be a redis:// or rediss:// URL"
    try:
        port = parts.port
    except ValueError:
        return "has a port outside 1-65535"
    if not parts.hostname or port == 0:
        return "names no host (expected redis://host:port)"
    if parts.path not in ("", "/") and not parts.path[1:].isdecimal():
        return "names a database that is not a number (expected redis://host:port/0)"
    return _redis_client_problem(parts)


def _redis_client_problem(parts: SplitResult) -> str | None:
    """Why Redis's client would refuse to make a connection of the URL (a
    query parameter it does not know, or a value it cannot read), or None;
    nothing is connected. Only the parameters' names are told, never their
    values. Imported here: only a fleet that shares its rate limits loads
    the Redis client."""
    from redis.asyncio import ConnectionPool
    from redis.exceptions import RedisError

    def refuses(query: str) -> bool:
        try:
            pool = ConnectionPool.from_url(parts._replace(query=query).geturl())
            pool.make_connection()  # type: ignore[no-untyped-call]
        except (TypeError, ValueError, RedisError):
            return True
        return False

    parameters = parse_qsl(parts.query, keep_blank_values=True)
    refused = sorted({name for name, value in parameters if refuses(urlencode({name: value}))})
    if refused:
        return f"has query parameters Redis's client refuses: {', '.join(refused)}"
    return None


def _operator_token_problem(token: str) -> str | None:
    """Why a token is not fit to guard operator routes, or None."""
    if len(token) < 32:
        return "must be at least 32 characters"
    if not all("!" <= character <= "~" for character in token):
        return "must be printable ASCII without spaces"
    lowered = token.lower()
    if any(word in lowered for word in _PLACEHOLDER_WORDS):
        return "is a placeholder from an example; generate a random token"
    if _repeats_itself(token):
        return "repeats itself too much to be a random token; generate one"
    if (bits := _estimated_bits(token)) < _OPERATOR_TOKEN_MIN_BITS:
        return (
            f"has about {bits:.0f} bits of entropy by a simple estimate (its length times the "
            f"entropy of its characters' frequencies), under {_OPERATOR_TOKEN_MIN_BITS}: "
            "generate one, for example with `openssl rand -hex 32`"
        )
    return None


def _repeats_itself(token: str) -> bool:
    """ "abcdefgh" four times, say: a period no longer than half the token."""
    return any(token[period:] == token[:-period] for period in range(1, len(token) // 2 + 1))


def _estimated_bits(token: str) -> float:
    counts = [token.count(character) for character in set(token)]
    per_character = -sum(n / len(token) * math.log2(n / len(token)) for n in counts)
    return per_character * len(token)


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (and overrides), or raise SettingsError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError(describe_validation_error(error)) from None


def describe_validation_error(error: ValidationError) -> str:
    """One line per invalid setting, named by its environment variable, without its value."""
    lines = []
    for problem in error.errors(include_input=False, include_url=False):
        location = ".".join(str(part) for part in problem["loc"]).upper()
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{location}: {message}" if location else message)
    return "invalid settings: " + "; ".join(lines)
