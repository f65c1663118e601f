"""GET /v1/voices."""

from __future__ import annotations

from fastapi import APIRouter, Query

from gateway.dependencies import GatewayDep, PrincipalDep
from gateway.schemas import ErrorResponse, VoiceModel, VoicesResponse

router = APIRouter(tags=["voices"])


@router.get(
    "/v1/voices",
    response_model=VoicesResponse,
    summary="List the voices you may use",
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
async def list_voices(
    gateway: GatewayDep,
    caller: PrincipalDep,
    tenant: str = Query("", description="only this tenant's voices (your own or a public tenant)"),
) -> VoicesResponse:
    entries = gateway.list_voices(caller, tenant)
    return VoicesResponse(
        voices=[
            VoiceModel(
                name=str(e.voice),
                tenant=e.voice.tenant,
                aliases=e.aliases,
                latest_version=e.latest_version,
                public=public,
            )
            for e, public in entries
        ]
    )
