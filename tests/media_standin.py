"""A stand-in for the service's media endpoint: any ``/media/<token>`` answers with a photo.

Mails point their images at ``DIGEST_BASE_URL/media/<signed token>``. Until the web app serves
that endpoint, this server on 127.0.0.1 answers every such path with a generated JPEG, so a
browser lays the mail out as it would with a parent's real (large) photos. It also stands in for
the portal's own image URLs (the web app's ``/media/`` fetches them): ``/media/<name>`` is a
simple drawing, ``/noise/<name>`` a photo that compresses badly; anything else is a 404.
"""

from __future__ import annotations

import hashlib
import io
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image, ImageDraw

# A phone camera's 4:3 at a size a gallery would serve: much wider than the 168 px thumbnail,
# so the template, not the image, has to keep the layout within the screen.
PHOTO_SIZE = (1200, 900)


@dataclass
class MediaStandIn:
    """A running stand-in: its base URL (for ``DIGEST_BASE_URL``) and the paths it was asked."""

    base_url: str
    requested: list[str] = field(default_factory=list)


@lru_cache(maxsize=64)
def photo_jpeg(token: str) -> bytes:
    """A JPEG of ``PHOTO_SIZE`` whose colours depend on ``token``: each image looks different."""
    seed = hashlib.sha256(token.encode()).digest()
    sky, ground, sun = (tuple(seed[i : i + 3]) for i in (0, 3, 6))
    width, height = PHOTO_SIZE
    image = Image.new("RGB", PHOTO_SIZE, sky)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height * 2 // 3, width, height), fill=ground)
    draw.ellipse((width // 8, height // 8, width // 3, height * 2 // 5), fill=sun)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=70)
    return out.getvalue()


@lru_cache(maxsize=16)
def noise_jpeg(token: str) -> bytes:
    """A JPEG of ``PHOTO_SIZE`` of random pixels: it compresses badly, as a busy photo does."""
    seed = int.from_bytes(hashlib.sha256(token.encode()).digest()[:4], "big")
    pixels = random.Random(seed).randbytes(PHOTO_SIZE[0] * PHOTO_SIZE[1] * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", PHOTO_SIZE, pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.standin.requested.append(self.path)
        if self.path.startswith("/noise/"):
            body = noise_jpeg(self.path.removeprefix("/noise/"))
        elif self.path.startswith("/media/"):
            body = photo_jpeg(self.path.removeprefix("/media/"))
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the test output is no place for an access log


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: MediaStandIn


@contextmanager
def media_standin() -> Iterator[MediaStandIn]:
    """Serve on 127.0.0.1 on a free port until the block ends."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.standin = MediaStandIn(base_url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, name="media-standin", daemon=True)
    thread.start()
    try:
        yield server.standin
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
