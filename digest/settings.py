"""One typed settings object, read from ``DIGEST_*`` environment variables, checked at start."""

from __future__ import annotations

from email.headerregistry import Address
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from digest.errors import ConfigError

MAIL_SCHEMES = ("maildir", "smtp", "null")
DEV_SECRET_KEY = "insecure-development-key-change-me"


class Settings(BaseSettings):
    """Every option of the service; the README lists them with these defaults."""

    model_config = SettingsConfigDict(env_prefix="DIGEST_", frozen=True, extra="ignore")

    database_url: str = "sqlite:///./digest.db"
    mail_url: str = "maildir://./outbox"
    base_url: str = "http://127.0.0.1:8000"
    secret_key: Annotated[str, Field(repr=False)] = DEV_SECRET_KEY
    mail_from: str = "nieuwsbrief@localhost"
    message_id_domain: str | None = None

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

    @field_validator("mail_from")
    @classmethod
    def _plain_address(cls, value: str) -> str:
        if "\r" in value or "\n" in value or "@" not in value:
            raise ValueError(f'"{value}" is not an email address')
        try:
            Address(addr_spec=value)
        except (ValueError, IndexError) as exc:
            raise ValueError(f'"{value}" is not an email address') from exc
        return value

    @property
    def mail_domain(self) -> str:
        """The domain for Message-IDs: the configured one, else the sender's."""
        return self.message_id_domain or self.mail_from.rsplit("@", 1)[1]


def load_settings(**overrides: object) -> Settings:
    """Read the settings; a wrong value raises ConfigError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"DIGEST_{field.upper()}", message) from None
