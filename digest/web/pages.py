"""Server-rendered pages: one Jinja environment over ``templates/web``, and the error pages."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from digest.render import templates_path

templates = Jinja2Templates(directory=str(templates_path() / "web"))

# Pages never go in a frame of another site, never load anything remote, never leak referrers.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "SAMEORIGIN",
}


def page(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> HTMLResponse:
    """Render ``templates/web/<name>`` with ``request`` and ``context``."""
    response = templates.TemplateResponse(request, name, context or {}, status_code=status_code)
    return response


def error_page(
    request: Request, status_code: int, message: str, *, lang: str | None = None
) -> HTMLResponse:
    """A short, clear page for a 4xx (an expired link, a refused page): nothing changed."""
    return page(
        request,
        "error.html",
        {
            "status_code": status_code,
            "message": message,
            # The administrators' pages are in English; the rest speak to parents in Dutch.
            "lang": lang or ("en" if request.url.path.startswith("/admin") else "nl"),
        },
        status_code=status_code,
    )


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def install(app: FastAPI) -> None:
    """Security headers on every response; HTML error pages outside ``/api/``."""

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _wants_json(request):
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        return error_page(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": exc.errors()}, status_code=422)
        return error_page(request, 400, "The request was not understood.")
