"""The dashboard: static files (HTML, CSS, plain JavaScript) over the `/api/v1` API.

No build step and nothing fetched at run time: the files ship in the package and the browser
asks the same server for everything. The page itself holds no data, so it is served without a
token; the browser keeps the token the user pastes and sends it on every API call.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["mount_dashboard"]

STATIC = Path(__file__).resolve().parent / "static"


def mount_dashboard(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.mount("/ui", StaticFiles(directory=STATIC, html=True), name="ui")
