"""The `tts` Triton model: Triton's python backend around `TTSService`.

`model_repository/tts/1/model.py` subclasses `TritonTTSModel`; this module never imports
`triton_python_backend_utils` at import time (it exists only inside the backend's stub process).

The model is decoupled: `execute` validates each request, runs the text frontend, hands the
request to the scheduler thread and returns at once; responses are sent from the scheduler
thread through the request's response sender, the last one flagged final. Every refused or
failed request gets exactly one error response (a `pb_utils.TritonError` with a code and a
message); nothing a request carries can crash the model.

A request with the optional `control` input is a control request instead of a synthesis:
`revoke` (evict the voice named in `voice` from the bank, refuse it from now on and stop its
requests) or `evict` (drop it from the bank; it loads again on next use), or `stats`. Its one
response carries JSON in the `info` output.

Custom metrics (`tritone_tts_*`, next to Triton's `nv_inference_*` on the metrics port) are
refreshed from the scheduler's counters every second by a small thread.
"""

from __future__ import annotations

import faulthandler
import importlib
import json
import logging
import os
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from tritone.serving.errors import ServeError, from_exception, invalid
from tritone.serving.request import parse_request

log = logging.getLogger("tritone.serving")

GAUGES = {
    "active_rows": "GPT batch rows in use (text segments decoding)",
    "jobs": "requests queued or running in the scheduler",
    "waiting": "requests waiting for a voice or a batch row",
    "bank_resident": "voices resident in the adapter bank",
    "bank_loading": "voices being loaded into the adapter bank",
    "bank_capacity": "adapter bank slots for voices",
}
COUNTERS = {
    "submitted": "requests accepted by the scheduler",
    "completed": "requests finished",
    "failed": "requests ended with an error",
    "cancelled": "requests cancelled by their client",
    "rejected": "requests refused because the queue was full or the model stopping",
    "steps": "GPT decode steps",
    "tokens": "semantic tokens decoded",
    "bank_loads": "adapters loaded into the bank",
    "bank_load_failures": "adapter loads refused or failed",
    "bank_evictions": "voices evicted from the bank",
    "bank_revocations": "voices revoked",
}


class TritonSink:
    """A request's response sender: audio chunks, the final flag, or one error.

    The sender is dropped as soon as the request is complete (final flag sent, or sending
    failed): the python backend frees a request's response factory, which holds the model, when
    the final flag goes out or the sender is destroyed, so a lingering sender would keep the
    model from unloading.
    """

    def __init__(self, pb: Any, sender: Any, sample_rate: int) -> None:
        self.pb, self.sender, self.sample_rate = pb, sender, sample_rate
        self.seed = 0

    def _tensors(self, audio: np.ndarray) -> list[Any]:
        pb = self.pb
        return [
            pb.Tensor("audio", np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)),
            pb.Tensor("sample_rate", np.array([self.sample_rate], np.int32)),
            pb.Tensor("seed", np.array([self.seed], np.int64)),
        ]

    def _send(self, response: Any, final: bool) -> None:
        sender = self.sender
        if sender is None:
            return
        try:
            sender.send(response, flags=self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0)
        except Exception:
            self.sender = None  # the request is gone: release it
            raise
        if final:
            self.sender = None

    def send(self, audio: np.ndarray, final: bool) -> None:
        self._send(self.pb.InferenceResponse(output_tensors=self._tensors(audio)), final)

    def info(self, data: dict[str, Any]) -> None:
        pb = self.pb
        out = [pb.Tensor("info", np.array([json.dumps(data, sort_keys=True).encode()], dtype=np.object_))]
        self._send(pb.InferenceResponse(output_tensors=out), final=True)

    def fail(self, error: ServeError) -> None:
        pb = self.pb
        code = getattr(pb.TritonError, error.code, None)
        try:
            err = pb.TritonError(error.message, code) if code is not None else pb.TritonError(error.message)
        except TypeError:  # a backend without error codes
            err = pb.TritonError(error.message)
        self._send(pb.InferenceResponse(error=err), final=True)

    def cancelled(self) -> bool:
        sender = self.sender
        return sender is None or bool(sender.is_cancelled())


def _one(pb: Any, request: Any, name: str) -> Any:
    """The single element of an optional input, or None when absent."""
    tensor = pb.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    array = tensor.as_numpy()
    if array.size != 1:
        raise invalid(f"input {name} must hold exactly one value, got shape {list(array.shape)}")
    return array.reshape(-1)[0]


def _string(pb: Any, request: Any, name: str) -> str | None:
    value = _one(pb, request, name)
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid(f"input {name} is not valid UTF-8") from None
    return str(value)


def _int(pb: Any, request: Any, name: str) -> int | None:
    value = _one(pb, request, name)
    return None if value is None else int(value)


class TritonTTSModel:
    """The python backend's `TritonPythonModel` for `tts` (see the module docstring)."""

    def initialize(self, args: dict[str, Any]) -> None:
        self.pb = importlib.import_module("triton_python_backend_utils")
        logging.basicConfig(
            level=os.environ.get("TRITONE_LOG_LEVEL", "INFO").upper(),
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        # `kill -USR1 <stub pid>` writes every thread's stack into the server log (debugging a stall)
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        config = json.loads(args["model_config"])
        if not self.pb.using_decoupled_model_transaction_policy(config):
            raise ValueError("the tts model must be decoupled (model_transaction_policy { decoupled: true })")
        parameters = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        from tritone.serving.service import ServeSettings, TTSService

        settings = ServeSettings.from_sources(parameters)
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        self.service = TTSService(settings, version_dir=version_dir)
        self.sample_rate = self.service.sample_rate
        self._stop = threading.Event()
        self._metrics_thread: threading.Thread | None = None
        try:
            self._init_metrics(args)
        except Exception:  # metrics are an extra; serving goes on without them
            log.exception("custom metrics are unavailable")

    # -- requests --------------------------------------------------------------------------------

    def execute(self, requests: list[Any]) -> None:
        pb = self.pb
        for request in requests:
            sink = TritonSink(pb, request.get_response_sender(), self.sample_rate)
            try:
                control = _string(pb, request, "control")
                if control:
                    sink.info(self._control(control, _string(pb, request, "voice") or ""))
                    continue
                parsed = parse_request(
                    request_id=request.request_id() or uuid.uuid4().hex,
                    text=_string(pb, request, "text"),
                    lang=_string(pb, request, "lang"),
                    voice=_string(pb, request, "voice"),
                    voice_version=_int(pb, request, "voice_version"),
                    params=_string(pb, request, "params"),
                    ref_audio=self._array(request, "ref_audio"),
                    ref_sample_rate=_int(pb, request, "ref_sample_rate"),
                    ref_text=_string(pb, request, "ref_text"),
                    ref_lang=_string(pb, request, "ref_lang"),
                    default_tenant=self.service.settings.default_tenant,
                )
                sink.seed = parsed.seed
                self.service.submit(parsed, sink)
            except ServeError as exc:
                sink.fail(exc)
            except Exception as exc:
                log.exception("request failed before scheduling")
                sink.fail(from_exception(exc))
        return None

    def _array(self, request: Any, name: str) -> np.ndarray | None:
        tensor = self.pb.get_input_tensor_by_name(request, name)
        return None if tensor is None else tensor.as_numpy()

    def _control(self, action: str, voice: str) -> dict[str, Any]:
        if action == "stats":
            return self.service.stats()
        if action in ("revoke", "evict"):
            if not voice:
                raise invalid(f"control {action} needs the voice to act on in the voice input")
            return self.service.evict(voice, revoked=action == "revoke")
        raise invalid(f"unknown control {action!r}; expected revoke, evict or stats")

    # -- metrics ---------------------------------------------------------------------------------

    def _init_metrics(self, args: dict[str, Any]) -> None:
        pb = self.pb
        labels = {"model": args.get("model_name", "tts"), "version": str(args.get("model_version", "1"))}
        self._families = []
        self._gauges: dict[str, Any] = {}
        self._counters: dict[str, Any] = {}
        self._last: dict[str, float] = {}
        for name, help_text in GAUGES.items():
            family = pb.MetricFamily(
                name=f"tritone_tts_{name}", description=help_text, kind=pb.MetricFamily.GAUGE
            )
            self._families.append(family)
            self._gauges[name] = family.Metric(labels=labels)
        for name, help_text in COUNTERS.items():
            family = pb.MetricFamily(
                name=f"tritone_tts_{name}_total", description=help_text, kind=pb.MetricFamily.COUNTER
            )
            self._families.append(family)
            self._counters[name] = family.Metric(labels=labels)
        self._metrics_thread = threading.Thread(
            target=self._metrics_loop, name="tritone-metrics", daemon=True
        )
        self._metrics_thread.start()

    def _metrics_loop(self) -> None:
        interval = float(os.environ.get("TRITONE_METRICS_INTERVAL_S", "1"))
        while not self._stop.wait(interval):
            try:
                self._update_metrics()
            except Exception:
                log.debug("metrics update failed", exc_info=True)

    def _update_metrics(self) -> None:
        stats = self.service.stats()
        for name, metric in self._gauges.items():
            metric.set(float(stats.get(name, 0)))
        for name, metric in self._counters.items():
            value = float(stats.get(name, 0))
            delta = value - self._last.get(name, 0.0)
            if delta > 0:
                metric.increment(delta)
                self._last[name] = value

    def finalize(self) -> None:
        log.info("tts model finalizing")
        self._stop.set()
        if self._metrics_thread is not None:
            self._metrics_thread.join(timeout=2.0)
        self.service.close()
        log.info("tts model finalized")
