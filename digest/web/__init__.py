"""The web face: administrators' pages, parents' links from the mails, the portal's API.

``create_app`` builds one FastAPI application on the service's settings and sessions; each part
lives in its own router module and reads what it needs from ``request.app.state``.
"""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from digest import __version__
from digest.settings import Settings


def create_app(settings: Settings, sessions: sessionmaker[Session]) -> FastAPI:
    """The application: ``/admin/``, the parents' ``/p/ /u/ /media/ /gallery/ /ics/``, the API."""
    from digest.web import admin, api, ops, pages, parents

    app = FastAPI(
        title="digest",
        version=__version__,
        description="The school digest service: the portal's import and preferences API.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.settings = settings
    app.state.sessions = sessions
    pages.install(app)
    app.include_router(ops.router)
    app.include_router(api.router)
    app.include_router(parents.router)
    app.include_router(admin.router)
    return app
