"""The digest service: a school portal's group news, delivered by email."""

from __future__ import annotations

__version__ = "0.1.0"
