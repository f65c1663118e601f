"""FastAPI dependencies: the gateway instance, the authenticated caller, the request id."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from gateway.auth import Principal
from gateway.service import Gateway, check_request_id


def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def request_id(request: Request, x_request_id: Annotated[str | None, Header()] = None) -> str:
    """The client's X-Request-Id (checked) or a fresh one; error bodies and headers carry it."""
    rid = check_request_id(x_request_id) if x_request_id else check_request_id(None)
    request.state.request_id = rid
    return rid


def principal(
    request: Request,
    gateway: Annotated[Gateway, Depends(get_gateway)],
    authorization: Annotated[str | None, Header()] = None,
) -> Principal:
    """The tenant behind the `Authorization: Bearer <key>` header (401 otherwise)."""
    caller = gateway.authenticate(authorization)
    request.state.tenant = caller.tenant
    return caller


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
PrincipalDep = Annotated[Principal, Depends(principal)]
RequestIdDep = Annotated[str, Depends(request_id)]
