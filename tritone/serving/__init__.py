"""Serving: the `tts` Triton model's stack — adapter bank, in-flight batching scheduler,
requests, streaming, and the graph runtimes.

Split like vLLM's `lora/`, one module one job: `runtime*` run the exported graphs (one module per
backend), `bank` decides which voice sits in which adapter slot, `request` is one synthesis
request's state, `streaming` the chunk schedule of one segment, `scheduler` batches the rows of
many requests through every stage, `voices` finds a request's voice prompt, `service` wires them
together, `triton` adapts the service to Triton's python backend, `server` runs `tritonserver`,
`client` talks to it. The Triton model (`model_repository/tts/1/model.py`) is a thin wrapper
around these; docs/SERVING.md describes the contract and the design.
"""
