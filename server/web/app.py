"""The FastAPI application: the JSON API, the static frontend, and the guards around them."""

from __future__ import annotations

from pathlib import Path

import plotly
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from ..cache import PassCache
from ..data import Dataset
from .routes import router

MAX_BODY_BYTES = 64 * 1024  # no endpoint needs more; larger bodies are refused before parsing
FRONTEND = Path(__file__).resolve().parent.parent.parent / "frontend"
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


def create_app(dataset: Dataset, cache_size: int = 512) -> FastAPI:
    """An app serving one dataset, chosen at start-up."""
    app = FastAPI(
        title="Backprop Explorer",
        description="Karpathy's makemore part 4 (backprop ninja): forward, manual backward and autograd, "
        "as a pure function of (config, mode, step).",
        version="0.1.0",
    )
    app.state.cache = PassCache(dataset, maxsize=cache_size)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):  # type: ignore[no-untyped-def]
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)

    app.include_router(router)

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        # 3.5 MB that never changes for an installed plotly: let the browser keep it (and V8 its compiled code)
        return FileResponse(PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})

    if FRONTEND.is_dir():
        app.mount("/", StaticFiles(directory=FRONTEND, html=True), name="frontend")
    return app
