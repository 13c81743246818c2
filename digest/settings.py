"""One typed settings object, read from ``DIGEST_*`` environment variables, checked at start."""

from __future__ import annotations

from email.errors import HeaderParseError
from email.headerregistry import Address
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from digest.errors import ConfigError

MAIL_SCHEMES = ("maildir", "smtp", "null")
DEV_SECRET_KEY = "insecure-development-key-change-me"


class Settings(BaseSettings):
    """Every option of the service; the README lists them with these defaults."""

    model_config = SettingsConfigDict(env_prefix="DIGEST_", frozen=True, extra="ignore")

    # Both URLs may carry a password: kept out of the settings' repr.
    database_url: Annotated[str, Field(repr=False)] = "sqlite:///./digest.db"
    mail_url: Annotated[str, Field(repr=False)] = "maildir://./outbox"
    base_url: str = "http://127.0.0.1:8000"
    secret_key: Annotated[str, Field(repr=False)] = DEV_SECRET_KEY
    mail_from: str = "nieuwsbrief@localhost"
    message_id_domain: str | None = None
    # The envelope sender (MAIL FROM), where bounces go; default: mail_from.
    bounce_address: str | None = None
    # Images in mails are signed links that stop working after this many days.
    media_link_days: Annotated[int, Field(gt=0)] = 60
    # Delivery: connections in the SMTP pool, a total deadline per message, a rate limit
    # (messages per second, 0 = unlimited), the lease of a claimed row, the retry schedule.
    send_concurrency: Annotated[int, Field(gt=0, le=100)] = 8
    send_deadline_seconds: Annotated[float, Field(gt=0)] = 120.0
    send_rate: Annotated[float, Field(ge=0)] = 0.0
    # Rows a worker claims at a time. Each batch loads its posts, photos and consent, and builds
    # and renders each post again: at 100 a batch, an edition took about 3 % more instructions
    # a mail than at 300 (callgrind, bench/edition.py's 10,000 guardians). Smaller batches
    # share a small edition among more workers.
    send_batch: Annotated[int, Field(gt=0)] = 300
    lease_seconds: Annotated[float, Field(gt=0)] = 600.0
    retry_first_minutes: Annotated[float, Field(gt=0)] = 5.0
    retry_max_hours: Annotated[float, Field(gt=0)] = 48.0
    # A transport the server blames us at waits this long, doubling, up to pause_max_minutes.
    pause_first_minutes: Annotated[float, Field(gt=0)] = 1.0
    pause_max_minutes: Annotated[float, Field(gt=0)] = 60.0
    # The event loop of the processes that deliver: uvloop (where installed), or asyncio's.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Per-post mails wait this long after publication, so a teacher's quick edits land.
    notify_settle_minutes: Annotated[float, Field(ge=0)] = 10.0
    # The scheduler: how late a weekly run may still start (a restart after the cutoff), and
    # how often it plans per-post mails and (with its own worker) retries due deliveries.
    misfire_grace_hours: Annotated[float, Field(gt=0, le=168)] = 6.0
    notify_interval_seconds: Annotated[float, Field(gt=0)] = 60.0
    retry_interval_seconds: Annotated[float, Field(gt=0)] = 30.0
    # The web face: the bearer token of the portal's API calls (unset: the API answers 503),
    # how long an administrator's session lasts, where scaled images are cached and how much.
    api_token: Annotated[str | None, Field(repr=False)] = None
    session_hours: Annotated[float, Field(gt=0)] = 12.0
    media_cache_dir: str = "./media-cache"
    media_cache_mb: Annotated[int, Field(gt=0)] = 500
    # Operations: log lines as text or JSON, when a heartbeat counts as stale, how long delivery
    # rows, frozen post lists, audit entries and cached images are kept.
    log_format: Literal["text", "json"] = "text"
    heartbeat_stale_seconds: Annotated[float, Field(gt=0)] = 120.0
    retention_days: Annotated[int, Field(gt=0)] = 365
    # DKIM signing: all three set, or none.
    dkim_key_file: str | None = None
    dkim_selector: str | None = None
    dkim_domain: str | None = None

    @field_validator("mail_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in MAIL_SCHEMES:
            raise ValueError(f'unknown scheme "{scheme}" (use {", ".join(MAIL_SCHEMES)})')
        return value

    @field_validator("base_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f'"{value}" is not an absolute http(s) URL')
        return value.rstrip("/")

    @field_validator("mail_from", "bounce_address")
    @classmethod
    def _plain_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "\r" in value or "\n" in value or "@" not in value:
            raise ValueError(f'"{value}" is not an email address')
        try:
            Address(addr_spec=value)
        except (ValueError, IndexError, HeaderParseError) as exc:
            raise ValueError(f'"{value}" is not an email address') from exc
        return value

    @model_validator(mode="after")
    def _dkim_complete(self) -> Settings:
        given = {
            "dkim_key_file": self.dkim_key_file,
            "dkim_selector": self.dkim_selector,
            "dkim_domain": self.dkim_domain,
        }
        if any(given.values()) and not all(given.values()):
            missing = next(name for name, value in given.items() if not value)
            raise ValueError(f"{missing}: DKIM needs a key file, a selector and a domain")
        return self

    @property
    def envelope_sender(self) -> str:
        """MAIL FROM: the bounce address if set, else the From address."""
        return self.bounce_address or self.mail_from

    @property
    def mail_domain(self) -> str:
        """The domain for Message-IDs: the configured one, else the sender's."""
        return self.message_id_domain or self.mail_from.rsplit("@", 1)[1]


def without_password(url: str) -> str:
    """``url`` with its password masked, for printing (``smtp://user:***@host:587``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{parts.username}:***@{netloc[2]}").geturl()


def load_settings(**overrides: object) -> Settings:
    """Read the settings; a wrong value raises ConfigError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["loc"]:
            field = str(first["loc"][0])
        else:  # a check across fields names its field first ("dkim_selector: …")
            field, _, message = message.partition(": ")
        raise ConfigError(f"DIGEST_{field.upper()}", message) from None
