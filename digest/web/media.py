"""Mail-sized copies of the portal's images: fetched once, scaled with Pillow, cached on disk.

Consent is not decided here: the ``/media/`` endpoint checks it at every view before it asks
for a copy, so a cached file is only ever served while the children in it still allow mail.
The cache is a flat directory of files named by a hash of (media id, portal URL) and width, so
neither an id nor a URL ever becomes a path; its size is bounded (the oldest files go first) and
the retention job removes what is older than the retention with ``purge_media_cache``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
from PIL import Image, ImageOps, UnidentifiedImageError

from digest.errors import DigestError
from digest.settings import Settings

log = logging.getLogger(__name__)

MAIL_WIDTH = 600  # the mail's design width; a thumbnail is smaller, a retina phone is fine
FETCH_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
MAX_SOURCE_BYTES = 40 * 1024 * 1024  # a phone's photo is a few MB; anything this big is not
MAX_SOURCE_PIXELS = 60_000_000  # refuse decompression bombs long before Pillow's own limit
JPEG_QUALITY = 82

# A cached file's extension says its content type.
_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


class MediaUnavailable(DigestError, OSError):
    """The portal's image could not be fetched or read; the endpoint answers 502."""

    def __init__(self, media_id: str, problem: str) -> None:
        super().__init__(f"media {media_id}: {problem}")
        self.media_id = media_id
        self.problem = problem


@dataclass(frozen=True)
class ScaledImage:
    body: bytes
    content_type: str
    from_cache: bool


def mail_image(
    settings: Settings, media_id: str, source_url: str, *, width: int = MAIL_WIDTH
) -> ScaledImage:
    """The image at ``source_url`` at most ``width`` px wide: from the cache, else fetched."""
    cache = Path(settings.media_cache_dir)
    stem = _cache_stem(media_id, source_url, width)
    for extension, content_type in _TYPES.items():
        path = cache / f"{stem}.{extension}"
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            continue
        return ScaledImage(body, content_type, from_cache=True)
    original = _fetch(media_id, source_url)
    body, extension = _scale(media_id, original, width)
    _store(cache, f"{stem}.{extension}", body, settings.media_cache_mb * 1024 * 1024)
    log.info("media %s fetched and scaled (%d bytes)", media_id, len(body))
    return ScaledImage(body, _TYPES[extension], from_cache=False)


def forget_image(settings: Settings, media_id: str, source_url: str) -> int:
    """Remove the cached copies of one image (its consent was withdrawn); how many went."""
    removed = 0
    prefix = _cache_key(media_id, source_url) + "-"
    cache = Path(settings.media_cache_dir)
    if not cache.is_dir():
        return 0
    for path in cache.glob(f"{prefix}*"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def purge_media_cache(settings: Settings, older_than: datetime) -> int:
    """Remove every cached image written before ``older_than``; how many files went."""
    cache = Path(settings.media_cache_dir)
    if not cache.is_dir():
        return 0
    limit = older_than.timestamp()
    removed = 0
    # Every file: a half-written ``.incoming-`` file left by a crash goes with the images.
    for path in (entry for entry in cache.iterdir() if entry.is_file()):
        try:
            if path.stat().st_mtime < limit:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # another process got there first
    return removed


def _cache_key(media_id: str, source_url: str) -> str:
    # The URL is part of the key: a portal that replaces an image gives it a new URL.
    return hashlib.sha256(f"{media_id}\0{source_url}".encode()).hexdigest()[:40]


def _cache_stem(media_id: str, source_url: str, width: int) -> str:
    return f"{_cache_key(media_id, source_url)}-{width}"


def _cached_files(cache: Path) -> list[Path]:
    return [path for path in cache.iterdir() if path.suffix.lstrip(".") in _TYPES]


def _fetch(media_id: str, source_url: str) -> bytes:
    if not source_url.lower().startswith(("https://", "http://")):
        raise MediaUnavailable(media_id, "the portal's URL is not http(s)")
    try:
        with (
            httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=True, max_redirects=3) as client,
            client.stream("GET", source_url, headers={"Accept": "image/*"}) as response,
        ):
            if response.status_code != 200:
                raise MediaUnavailable(media_id, f"the portal answered {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_SOURCE_BYTES:
                    raise MediaUnavailable(media_id, "the portal's image is too large")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        problem = f"the portal could not be reached ({type(exc).__name__})"
        raise MediaUnavailable(media_id, problem) from exc
    return b"".join(chunks)


def _scale(media_id: str, original: bytes, width: int) -> tuple[bytes, str]:
    """Re-encode (always: that also drops EXIF, GPS included) at most ``width`` px wide."""
    try:
        with Image.open(io.BytesIO(original)) as image:
            pixels = image.width * image.height
            if pixels <= MAX_SOURCE_PIXELS:
                source_format = image.format or ""
                image.seek(0)  # an animation shows its first frame
                upright = ImageOps.exif_transpose(image)
                if upright.width > width:
                    height = max(1, round(upright.height * width / upright.width))
                    upright = upright.resize((width, height), Image.Resampling.LANCZOS)
                return _encode(upright, source_format)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaUnavailable(media_id, "the portal's file is not an image we can read") from exc
    raise MediaUnavailable(media_id, "the portal's image has too many pixels")


def _encode(image: Image.Image, source_format: str) -> tuple[bytes, str]:
    out = io.BytesIO()
    transparent = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if source_format == "WEBP":
        image.save(out, "WEBP", quality=JPEG_QUALITY)
        return out.getvalue(), "webp"
    if transparent or source_format in ("PNG", "GIF"):
        # Drawings and screenshots: PNG keeps their sharp edges and their transparency.
        if image.mode not in ("RGB", "RGBA", "L", "LA", "P"):
            image = image.convert("RGBA")
        image.save(out, "PNG", optimize=True)
        return out.getvalue(), "png"
    image.convert("RGB").save(out, "JPEG", quality=JPEG_QUALITY, progressive=True, optimize=True)
    return out.getvalue(), "jpg"


def _store(cache: Path, name: str, body: bytes, limit_bytes: int) -> None:
    """Write atomically (two views at once each write a whole file), then keep under the limit."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=cache, prefix=".incoming-")
        with os.fdopen(handle, "wb") as out:
            out.write(body)
        os.replace(temporary, cache / name)
        _evict(cache, limit_bytes)
    except OSError as exc:
        # A full or read-only disk costs a refetch next time, never the parent's image.
        log.warning("media cache not written: %s", type(exc).__name__)


def _evict(cache: Path, limit_bytes: int) -> None:
    entries = []
    total = 0
    for path in _cached_files(cache):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        entries.append((stat.st_mtime, path, stat.st_size))
        total += stat.st_size
    for _mtime, path, size in sorted(entries):
        if total <= limit_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size
