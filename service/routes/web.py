"""The gateway's pages for people: `GET /` (ask once, every strategy's answer side by side, with its
sources), `GET /reports` and `GET /reports/{run_id}` (the eval runs under $KC_HOME/reports), and what
the page needs: its script and styles (`GET /static/page.js`, `/static/page.css`, shipped in the package)
and `GET /web/config`.

The page itself holds no data, so `/` and its assets are served without the API key; everything it shows
comes from keyed routes (`/ask`, `/feedback`, `/web/config`, `/reports...`), to which its script sends
the key that the person typed, kept in sessionStorage, as a Bearer header, never in a URL. A browser that
opens a report's address without a key (a key is set and the address bar cannot send a header) gets
the page, which then fetches the report with the key. See docs/web.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from service.api_schemas import STRATEGIES, StrategyName
from service.deps import EngineDep
from service.errors import NotFound
from service.report_pages import list_runs, read_run, render_index, render_report, run_dir
from service.security import ApiKey, SettingsDep, require_api_key

router = APIRouter(tags=["web"])

STATIC = Path(__file__).resolve().parents[1] / "static"
ASSETS = {"page.js": "text/javascript; charset=utf-8", "page.css": "text/css; charset=utf-8"}
# Nothing from another origin, no inline script; inline styles and data: images for the report pages.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class WebModel(BaseModel):
    name: str
    role: str
    checkpoint_id: str


class WebConfig(BaseModel):
    """`GET /web/config` (extension, for the page): what it shows around the answers."""

    strategies: list[StrategyName] = Field(description="The columns, in order.")
    cutoff: dt.date | None = Field(
        description="The chat model's knowledge cutoff (KC_AUTO_CUTOFF): newer sources are marked."
    )
    models: list[WebModel]


def _page(status: int = 200) -> HTMLResponse:
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"), status, headers)


def _wants_page(request: Request, key_required: bool) -> bool:
    """A browser opening the address itself (not the page's script) without a key where one is required."""
    if not key_required or "authorization" in request.headers:
        return False
    navigating = request.headers.get("sec-fetch-mode") == "navigate"
    return navigating or "text/html" in request.headers.get("accept", "")


@router.get("/", include_in_schema=False)
async def page() -> HTMLResponse:
    return _page()


@router.get("/static/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFound(f"no asset {name[:80]!r}: the page has {', '.join(ASSETS)}")
    body = (STATIC / name).read_bytes()
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return Response(body, media_type=ASSETS[name], headers=headers)


@router.get("/web/config", dependencies=[ApiKey])
async def web_config(settings: SettingsDep, engine: EngineDep) -> WebConfig:
    models = [WebModel(name=c.name, role=c.role, checkpoint_id=c.checkpoint_id) for c in engine.models()]
    return WebConfig(strategies=list(STRATEGIES), cutoff=settings.auto_cutoff, models=models)


@lru_cache(maxsize=16)
def _rendered(folder: Path, stamp: tuple[int, int]) -> str:
    """A run's page, drawn once per version of its files (`stamp`: their mtimes); plots take a second."""
    full, rows = read_run(folder)
    return render_report(full, rows, nav=True)


def _stamp(folder: Path) -> tuple[int, int]:
    results = folder / "results.jsonl"
    return (folder / "summary.json").stat().st_mtime_ns, results.stat().st_mtime_ns if results.exists() else 0


@router.get("/reports", include_in_schema=False)
async def reports(request: Request, settings: SettingsDep) -> HTMLResponse:
    if _wants_page(request, settings.api_key is not None):
        return _page()
    await require_api_key(request, settings)
    runs = await asyncio.to_thread(list_runs, settings.resolved_home / "reports")
    return HTMLResponse(render_index(runs), headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


@router.get("/reports/{run_id}", include_in_schema=False)
async def report(run_id: str, request: Request, settings: SettingsDep) -> HTMLResponse:
    if _wants_page(request, settings.api_key is not None):
        return _page()
    await require_api_key(request, settings)
    folder = run_dir(settings.resolved_home / "reports", run_id)
    page = await asyncio.to_thread(_rendered, folder, _stamp(folder))
    return HTMLResponse(page, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})
