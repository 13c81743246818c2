"""Signed links that mails carry: images, galleries, calendar entries, preferences, unsubscribe.

One salt per purpose, so a token made for one purpose never opens another. Image, gallery and
calendar links expire (``DIGEST_MEDIA_LINK_DAYS``); the web endpoints check them with ``open_*``
and check the children's consent again at every view.
"""

from __future__ import annotations

from typing import Any

from itsdangerous import (
    BadSignature,
    SignatureExpired,
    Signer,
    TimestampSigner,
    URLSafeSerializer,
    URLSafeTimedSerializer,
)
from itsdangerous.encoding import base64_encode
from itsdangerous.url_safe import URLSafeSerializerMixin

from digest.settings import Settings


class _Uncompressed(URLSafeSerializerMixin):
    """Payloads as URL-safe base64 JSON, never zlib-compressed.

    itsdangerous compresses every payload and keeps the result when it is shorter. Ours (an id,
    a few ids) never get shorter, and the attempt sets up a deflate stream per token: 3 % of an
    edition's instructions, for the two links of every mail and each photo's. The tokens are the
    ones itsdangerous makes for such payloads, and a compressed token still opens.
    """

    def dump_payload(self, obj: Any) -> bytes:
        return base64_encode(super(URLSafeSerializerMixin, self).dump_payload(obj))

    def make_signer(self, salt: str | bytes | None = None) -> Signer:
        # One signer per salt, made once: itsdangerous makes a new one for every token, and
        # a mail carries two tokens and one more per photo.
        signers: dict[str | bytes | None, Signer] = self.__dict__.setdefault("_signers", {})
        signer = signers.get(salt)
        if signer is None:
            signer = signers[salt] = super().make_signer(salt)
        return signer


class _KeyOnce(Signer):
    """Derives its signing key once, where itsdangerous derives it again for every signature."""

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        if secret_key is not None:  # checking a token: each key of a rotation in turn
            return super().derive_key(secret_key)
        derived: bytes | None = self.__dict__.get("_derived")
        if derived is None:
            derived = self._derived = super().derive_key()
        return derived


class _TimestampKeyOnce(_KeyOnce, TimestampSigner):
    pass


class _Serializer(_Uncompressed, URLSafeSerializer):
    default_signer = _KeyOnce


class _TimedSerializer(_Uncompressed, URLSafeTimedSerializer):
    default_signer = _TimestampKeyOnce


class LinkExpired(Exception):
    """A well-signed token older than its lifetime."""


class LinkInvalid(Exception):
    """A token that is not ours (tampered, truncated, or made for another purpose)."""


class Links:
    """Builds and checks the service's own signed URLs on ``DIGEST_BASE_URL``."""

    def __init__(self, settings: Settings) -> None:
        self._base = settings.base_url
        self._max_age = settings.media_link_days * 86400
        key = settings.secret_key
        self._media = _TimedSerializer(key, salt="media")
        self._gallery = _TimedSerializer(key, salt="gallery")
        self._event = _TimedSerializer(key, salt="event-ics")
        self._preferences = _Serializer(key, salt="preferences")
        self._unsubscribe = _Serializer(key, salt="unsubscribe")

    # --- building ---------------------------------------------------------------------------

    def media(self, media_id: str) -> str:
        """An image link; the web endpoint checks its age and the children's consent at view."""
        return f"{self._base}/media/{self._media.dumps(media_id)}"

    def gallery(self, post_id: str) -> str:
        """The service's page with every photo of a post that consent allows."""
        return f"{self._base}/gallery/{self._gallery.dumps(post_id)}"

    def event(self, post_id: str) -> str:
        """One event as an ``.ics`` file ("add to calendar")."""
        return f"{self._base}/ics/{self._event.dumps(post_id)}.ics"

    def preferences(self, guardian_ids: list[str]) -> str:
        """The page where the guardians of one address choose how news reaches them."""
        return f"{self._base}/p/{self._preferences.dumps(sorted(guardian_ids))}"

    def unsubscribe(self, guardian_ids: list[str]) -> str:
        """The one-click unsubscribe link (RFC 8058) of one address."""
        return f"{self._base}/u/{self._unsubscribe.dumps(sorted(guardian_ids))}"

    # --- checking (for the web endpoints) ---------------------------------------------------

    def open_media(self, token: str) -> str:
        """The media id of a token; LinkExpired or LinkInvalid otherwise."""
        return str(self._timed(self._media, token))

    def open_gallery(self, token: str) -> str:
        return str(self._timed(self._gallery, token))

    def open_event(self, token: str) -> str:
        return str(self._timed(self._event, token.removesuffix(".ics")))

    def open_preferences(self, token: str) -> list[str]:
        return self._plain(self._preferences, token)

    def open_unsubscribe(self, token: str) -> list[str]:
        return self._plain(self._unsubscribe, token)

    def _timed(self, serializer: URLSafeTimedSerializer, token: str) -> Any:
        try:
            return serializer.loads(token, max_age=self._max_age)
        except SignatureExpired as exc:
            raise LinkExpired("the link has expired") from exc
        except BadSignature as exc:
            raise LinkInvalid("the link is not valid") from exc

    @staticmethod
    def _plain(serializer: URLSafeSerializer, token: str) -> list[str]:
        try:
            value = serializer.loads(token)
        except BadSignature as exc:
            raise LinkInvalid("the link is not valid") from exc
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise LinkInvalid("the link is not valid")
        return value
