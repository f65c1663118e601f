"""Running a gateway in a background thread (its own asyncio loop), for tests and scripts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.config import GatewaySettings
from gateway.server import GatewayServer

if TYPE_CHECKING:
    from adapters.registry import AdapterRegistry

T = TypeVar("T")


class ThreadedGateway:
    def __init__(self, settings: GatewaySettings, registry: AdapterRegistry | None = None) -> None:
        self.settings = settings
        self.registry = (
            registry  # the registry client the gateway uses (default: one for settings.mlflow_uri)
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gateway-loop", daemon=True)
        self.server: GatewayServer | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ThreadedGateway:
        self.thread.start()

        async def make() -> GatewayServer:
            from gateway.service import Gateway

            server = GatewayServer(self.settings, Gateway(self.settings, self.registry))
            await server.start()
            return server

        self.server = self.run(make())
        return self

    def wait_ready(self, timeout: float = 60.0) -> ThreadedGateway:
        """Wait until the gateway reports ready (a Triton replica ready, the registry reached)."""
        deadline = time.monotonic() + timeout
        while self.server is None or not self.server.gateway.readiness()[0]:
            if time.monotonic() > deadline:
                checks = self.server.gateway.readiness()[1] if self.server is not None else {}
                raise TimeoutError(f"the gateway was not ready within {timeout:.0f} s: {checks}")
            time.sleep(0.1)
        return self

    @property
    def http(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.http_port}"

    @property
    def grpc(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.grpc_port}"

    def stop(self) -> None:
        if self.server is not None:
            self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
