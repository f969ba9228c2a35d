"""``GET /metrics``: the server's metrics in Prometheus's text format.

Served on the main listener behind a bearer token, or on an address of its own (a token is
then optional), as ``[metrics]`` in the configuration says. The numbers come from
:class:`meeting.metrics.ServerMetrics`.
"""

from __future__ import annotations

import hmac
import logging
from typing import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from meeting.config import Config, parse_listen
from meeting.logfmt import kv
from meeting.metrics import ServerMetrics

log = logging.getLogger(__name__)

PATH = "/metrics"


def metrics_handler(metrics: ServerMetrics, token: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The handler: 401 without the right ``Authorization: Bearer <token>`` when ``token`` is
    set; the metrics otherwise."""
    expected = f"Bearer {token}".encode()

    async def handle(request: web.Request) -> web.Response:
        if token:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return web.Response(status=401, text="a valid bearer token is needed\n",
                                    headers={"WWW-Authenticate": 'Bearer realm="meetnow metrics"'})
        body = await metrics.render()
        # CONTENT_TYPE_LATEST carries its own charset; aiohttp wants it whole in the header.
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handle


def add_metrics_route(app: web.Application, metrics: ServerMetrics, token: str) -> None:
    """Serve ``/metrics`` from ``app`` (the main application)."""
    app.router.add_get(PATH, metrics_handler(metrics, token), allow_head=False)


def metrics_app(metrics: ServerMetrics, token: str) -> web.Application:
    """An application with ``/metrics`` alone, for a listener of its own."""
    app = web.Application()
    add_metrics_route(app, metrics, token)
    return app


async def serve_metrics(metrics: ServerMetrics, config: Config) -> web.AppRunner:
    """Listen on ``metrics.listen``; raises OSError when the address cannot be used."""
    host, port = parse_listen(config.metrics.listen)
    runner = web.AppRunner(metrics_app(metrics, config.metrics.token), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    log.info("metrics %s", kv(listen=config.metrics.listen, token="yes" if config.metrics.token else "no"))
    return runner
