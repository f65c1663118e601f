"""Running the gateway: HTTP (uvicorn) and gRPC in one asyncio loop, with graceful shutdown.

On SIGTERM or SIGINT the gateway reports not ready (readyz 503, gRPC health NOT_SERVING),
stops accepting new requests, lets in-flight syntheses and streams finish for up to
``shutdown_grace_s``, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator

import uvicorn

from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.grpc_server import GrpcServer
from gateway.service import Gateway

log = logging.getLogger(__name__)


class _Uvicorn(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the gateway handles signals itself
        pass


class GatewayServer:
    """Both servers of one gateway; ``http_port``/``grpc_port`` are the bound ports (0 = any)."""

    def __init__(self, settings: GatewaySettings, gateway: Gateway | None = None) -> None:
        self.settings = settings
        self.gateway = gateway or Gateway(settings)
        self.app = create_app(self.gateway)
        self.grpc = GrpcServer(self.gateway, settings.host, settings.grpc_port)
        self.grpc_port = self.grpc.port
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((settings.host, settings.http_port))
        self.http_port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            log_level=settings.log_level,
            access_log=settings.log_level == "debug",
            timeout_graceful_shutdown=int(settings.shutdown_grace_s) or 1,
            lifespan="off",
        )
        self.uvicorn = _Uvicorn(config)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        await self.gateway.start()
        await self.grpc.start()
        self._tasks.append(asyncio.create_task(self.uvicorn.serve(sockets=[self._sock]), name="http"))
        self._tasks.append(asyncio.create_task(self._track_health(), name="grpc-health"))
        while not self.uvicorn.started:
            if self._tasks[0].done():
                self._tasks[0].result()
            await asyncio.sleep(0.02)
        log.info(
            "gateway listening: HTTP %s:%d, gRPC %s:%d",
            self.settings.host,
            self.http_port,
            self.settings.host,
            self.grpc_port,
        )

    async def _track_health(self) -> None:
        serving: bool | None = None
        while True:
            ready, _ = self.gateway.readiness()
            if ready != serving:
                await self.grpc.set_serving(ready)
                serving = ready
                log.info("gateway %s", "ready" if ready else "not ready")
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.shutdown_grace_s
        self.gateway.draining = True
        for task in self._tasks[1:]:
            task.cancel()
        await self.grpc.set_serving(False)
        self.uvicorn.should_exit = True
        await asyncio.gather(self.grpc.stop(grace), self.gateway.stop(grace), return_exceptions=True)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._tasks[0], grace + 5)
        self._sock.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[GatewayServer]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()


async def serve(settings: GatewaySettings) -> None:
    server = GatewayServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    print(
        f"tritone gateway: HTTP on {settings.host}:{server.http_port}, gRPC on {settings.host}:{server.grpc_port}",
        flush=True,
    )
    await stop.wait()
    log.info("shutting down: draining in-flight requests (up to %.0f s)", settings.shutdown_grace_s)
    await server.stop()
