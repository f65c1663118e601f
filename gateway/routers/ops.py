"""/healthz, /readyz, /metrics and the web page at /."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.dependencies import GatewayDep
from gateway.schemas import ReadyResponse

router = APIRouter(tags=["operations"])
STATIC = Path(__file__).resolve().parent.parent / "static"


@router.get("/healthz", summary="Liveness: the process serves requests")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    summary="Readiness: Triton ready, and the registry reachable or the voice cache warm",
    responses={503: {"model": ReadyResponse}},
)
async def readyz(gateway: GatewayDep) -> JSONResponse:
    ready, checks = gateway.readiness()
    body = ReadyResponse(ready=ready, checks=checks, triton=gateway.pool.status().endpoints)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(gateway: GatewayDep) -> Response:
    gateway._update_gauges()
    return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")
