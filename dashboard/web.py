"""The dashboard's HTTP side, one set of aiohttp handlers served two ways:

- by the worker (:func:`register`, called from ``streams.app.create_app``): Faust pages on the worker's web
  server, reading through ``Pipeline.read_store`` (the worker's own ClickHouse connection and reader thread:
  embedded chDB admits one process);
- standalone (:func:`serve`, ``satpulse dashboard``): an aiohttp server with its own connection, for a
  ClickHouse server that the workers write to.

Routes: ``/dashboard`` (the page), ``/dashboard/data?dimension=&period=`` (JSON, :func:`dashboard.model.build`;
400 for a bad parameter, 503 while ClickHouse cannot be read), ``/dashboard/static/{name}`` (the page's
script and styles, and uPlot from ``dashboard/node_modules``, installed by ``npm ci``: never a CDN).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from dashboard.model import Alerts, Snapshot, build, parse_request
from dashboard.store import read_snapshot
from satpulse.settings import Settings
from sinks.clickhouse import ClickHouse, ClickHouseError, StoreNotReady, connect

Reader = Callable[[Callable[[ClickHouse], Snapshot]], Awaitable[Snapshot]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HERE = Path(__file__).resolve().parent
UPLOT = HERE / "node_modules" / "uplot" / "dist"
ASSETS = {  # name -> (file, content type); nothing else is served
    "dashboard.js": (HERE / "static" / "dashboard.js", "text/javascript"),
    "dashboard.css": (HERE / "static" / "dashboard.css", "text/css"),
    "uPlot.iife.min.js": (UPLOT / "uPlot.iife.min.js", "text/javascript"),
    "uPlot.min.css": (UPLOT / "uPlot.min.css", "text/css"),
}
ALERTMANAGER_TIMEOUT_SECONDS = 2.0


class Dashboard:
    """The handlers. ``read(fn)`` runs ``fn(ch)`` on the thread that owns a ClickHouse connection."""

    def __init__(self, read: Reader, settings: Settings) -> None:
        self.read = read
        self.settings = settings
        self.dimensions = [d for d in settings.dimensions if d != "all"]

    def routes(self) -> list[tuple[str, Handler]]:
        """(path, GET handler) of every route."""
        return [("/dashboard", self.page), ("/dashboard/data", self.data),
                ("/dashboard/static/{name}", self.asset)]

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(HERE / "static" / "index.html", headers={"Cache-Control": "no-cache"})

    async def asset(self, request: web.Request) -> web.StreamResponse:
        """A file of :data:`ASSETS`; 404 for another name or a file not installed (uPlot before ``npm ci``)."""
        path, content_type = ASSETS.get(request.match_info["name"], (None, ""))
        if path is None or not path.is_file():
            raise web.HTTPNotFound(text="not found")
        return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "no-cache"})

    async def data(self, request: web.Request) -> web.StreamResponse:
        """The page's figures as JSON: 200, 400 {"error"} for a bad parameter, 503 {"error"} while the store
        cannot be read (worker starting, ClickHouse down)."""
        try:
            dimension, period = parse_request(request.query, self.dimensions)
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        now_s = int(time.time())
        cell = self.settings.window_seconds
        try:
            snapshot, alerts = await asyncio.gather(
                self.read(lambda ch: read_snapshot(ch, dimension, period, now_s, cell)),
                fetch_alerts(self.settings.alertmanager_url))
        except (StoreNotReady, ClickHouseError) as exc:
            return _json({"error": f"ClickHouse cannot be read yet: {_first_words(exc)}"}, 503)
        return _json(build(snapshot, alerts, dimension, period, now_s, cell, self.dimensions), 200)


def _first_words(exc: Exception, limit: int = 300) -> str:
    """An error's message on one line, without the server's stack trace, at most ``limit`` characters."""
    return " ".join(str(exc).split("Stack trace:")[0].split())[:limit]


def _json(value: Any, status: int) -> web.Response:
    return web.json_response(value, status=status, headers={"Cache-Control": "no-store"})


async def fetch_alerts(url: str | None) -> Alerts:
    """Alertmanager's alerts (``GET {url}/api/v2/alerts``, active ones, silenced and inhibited left out); never
    raises: an unreachable or failing Alertmanager is reported in :attr:`Alerts.error`."""
    if not url:
        return Alerts(configured=False)
    query = {"active": "true", "silenced": "false", "inhibited": "false"}
    try:
        timeout = aiohttp.ClientTimeout(total=ALERTMANAGER_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
                f"{url.rstrip('/')}/api/v2/alerts", params=query) as response:
            response.raise_for_status()
            body = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return Alerts(configured=True, error=f"Alertmanager at {url} cannot be read: {exc or type(exc).__name__}")
    return Alerts(configured=True, alerts=body if isinstance(body, list) else [])


def register(app: Any, read: Reader, settings: Settings) -> None:
    """Serve the dashboard on a Faust app's web server (``app.page``)."""
    for path, handler in Dashboard(read, settings).routes():
        app.page(path, name=f"dashboard{path.replace('/', '_')}")(_faust_view(handler))


def _faust_view(handler: Handler) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A Faust page function (``self``, request, URL parameters) calling an aiohttp handler: Faust's web driver
    is aiohttp, so the request and the response pass through unchanged."""
    async def view(self: Any, request: web.Request, **params: str) -> web.StreamResponse:
        return await handler(request)

    view.__name__ = handler.__name__
    return view


class OwnConnection:
    """A :data:`Reader` with its own connection to ``url``, opened on first use on its one thread (a
    ClickHouse client is not thread-safe); a failed connect is retried at the next read."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._ch: ClickHouse | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-clickhouse")

    async def read(self, fn: Callable[[ClickHouse], Snapshot]) -> Snapshot:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._call, fn)

    def _call(self, fn: Callable[[ClickHouse], Snapshot]) -> Snapshot:
        if self._ch is None:
            self._ch = connect(self.url)
        return fn(self._ch)

    def close(self) -> None:
        """Close the connection (on its thread) and stop the thread."""
        if self._ch is not None:
            self._thread.submit(self._ch.close).result()
        self._thread.shutdown()


def standalone_app(settings: Settings, reader: OwnConnection) -> web.Application:
    """The dashboard as an aiohttp application (``/`` redirects to the page); closes ``reader`` on cleanup."""
    app = web.Application()
    for path, handler in Dashboard(reader.read, settings).routes():
        app.router.add_get(path, handler)

    async def index(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/dashboard")

    async def close_reader(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, reader.close)

    app.router.add_get("/", index)
    app.on_cleanup.append(close_reader)
    return app


def serve(settings: Settings, host: str, port: int) -> None:
    """``satpulse dashboard``: serve the page on host:port against ``settings.clickhouse_url`` until SIGINT or
    SIGTERM. Blocks."""
    reader = OwnConnection(settings.clickhouse_url.get_secret_value())
    print(f"satpulse dashboard: http://{host}:{port}/dashboard", flush=True)
    web.run_app(standalone_app(settings, reader), host=host, port=port, print=None)
