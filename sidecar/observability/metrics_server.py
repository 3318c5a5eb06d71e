"""The /metrics endpoint: aiohttp on the sidecar's event loop, imported only when
observability.metrics.listen is set."""

from __future__ import annotations

import socket

from aiohttp import web

from memsidecar.sidecar.errors import MemError
from memsidecar.sidecar.observability.metrics import Metrics
from memsidecar.sidecar.observability.settings import split_host_port


class MetricsServer:
    """`GET <path>` on host:port → the metrics; anything else 404."""

    def __init__(self, metrics: Metrics, listen: str, path: str) -> None:
        self.metrics = metrics
        self.listen = listen
        self.path = path
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        host, port = split_host_port(self.listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.create_server((host, port), family=family)
        except OSError as exc:
            raise MemError(
                f"cannot serve metrics on {self.listen}: {exc.strerror or exc}; pick another "
                "observability.metrics.listen (port 0 = any free port) or set it to null"
            ) from exc
        app = web.Application()
        app.router.add_get(self.path, self._scrape)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
        self._runner = runner
        bound_port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound_port}{self.path}"

    async def _scrape(self, request: web.Request) -> web.Response:
        body, content_type = await self.metrics.render(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
