"""The tritone gateway: FastAPI (HTTP) and grpcio (gRPC) in front of Triton.

It authenticates API keys to tenants, resolves each request's voice to an immutable adapter
version in the registry, routes the request to a Triton replica by consistent hashing on the
voice, streams the audio back with an inaudible watermark, and enforces per-tenant limits.
See docs/GATEWAY.md.
"""
