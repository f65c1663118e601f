"""Serving runtime: adapter bank, in-flight batching scheduler, requests, and graph runtimes.

Split like vLLM's `lora/`: `runtime` runs the exported graphs (one module per backend),
`bank` decides which voice sits in which adapter slot, `request` is one synthesis request's
state, `scheduler` batches the rows of many requests through every stage. The Triton `tts`
model (`model_repository/tts/1/model.py`) is a thin wrapper around these.
"""
