"""Signed links that mails carry: images, preferences and unsubscribe (one salt per purpose)."""

from __future__ import annotations

from itsdangerous import URLSafeSerializer, URLSafeTimedSerializer

from digest.settings import Settings


class Links:
    """Builds (and later checks) the service's own signed URLs on ``DIGEST_BASE_URL``."""

    def __init__(self, settings: Settings) -> None:
        self._base = settings.base_url
        self._media = URLSafeTimedSerializer(settings.secret_key, salt="media")
        self._preferences = URLSafeSerializer(settings.secret_key, salt="preferences")
        self._unsubscribe = URLSafeSerializer(settings.secret_key, salt="unsubscribe")

    def media(self, media_id: str) -> str:
        """An image link; the web endpoint checks its age and the children's consent at view."""
        return f"{self._base}/media/{self._media.dumps(media_id)}"

    def preferences(self, guardian_ids: list[str]) -> str:
        """The page where the guardians of one address choose how news reaches them."""
        return f"{self._base}/p/{self._preferences.dumps(sorted(guardian_ids))}"

    def unsubscribe(self, guardian_ids: list[str]) -> str:
        """The one-click unsubscribe link (RFC 8058) of one address."""
        return f"{self._base}/u/{self._unsubscribe.dumps(sorted(guardian_ids))}"
