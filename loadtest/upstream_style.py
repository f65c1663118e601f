"""The upstream-style serving path over our models: the baseline `make bench` compares against.

Upstream GPT-SoVITS serves with `api_v2.py`: one FastAPI app under `uvicorn` with one worker,
one global `TTS` object holding exactly one GPT and one SoVITS, handlers that run inference
on the event loop (so requests are served one at a time, in arrival order), and speakers
changed by swapping weights globally (`/set_gpt_weights`, `/set_sovits_weights`, which build new
model objects from the voice's full fine-tuned checkpoint files) and by re-extracting the
reference (SSL features, semantic codes, spectrogram, prompt phones) whenever a request names
another reference clip (`prompt_cache` holds a single reference). This module does the same
with tritone's models and pipeline:

- every voice is a **full model copy on disk** (`<root>/<tenant.name>/model/`, a base bundle
  with the voice's adapter merged in, as upstream users keep one fine-tuned s1/s2 pair per
  speaker) plus its reference clip (`reference.wav` + `reference.json`);
- `GlobalTTS` holds one model. A request for another voice than the last one reads that voice's
  GPT, SoVITS and vocoder weights from disk into newly built modules, swaps them in, and
  rebuilds the voice prompt from the reference clip; then it synthesises with
  `tritone.pipeline.Pipeline` (the same reference path every runtime is checked against);
- `serve` is a tiny HTTP server whose requests run strictly one at a time in arrival order
  (a FIFO queue and one worker thread: what one uvicorn worker with a blocking handler gives).

    python -m loadtest.upstream_style prepare --base DIR --adapter DIR [--adapter DIR ...] --out ROOT
    python -m loadtest.upstream_style serve --base DIR --root ROOT [--port 9880] [--threads N]
    python -m loadtest.upstream_style hold --root ROOT --count N   # memory: N copies held at once

`POST /tts` takes the gateway's JSON (`text`, `lang`, `voice`, `params`, `stream`) and answers a
16-bit WAV, or with `"stream": true` raw 16-bit PCM in chunked transfer encoding.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import queue
import sys
import threading
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

MODEL_DIR = "model"
REFERENCE_WAV = "reference.wav"
REFERENCE_META = "reference.json"
PROMPT_FILE = "voice_prompt.safetensors"
DEFAULT_PORT = 9880  # upstream api_v2's default port


def prepare_voice(base_dir: Path, adapter_dir: Path, out: Path, clip: Any | None = None) -> Path:
    """Write one voice as upstream users hold it: the merged full model + its reference clip.

    `clip` is a `loadtest.voices.ReferenceClip`; without one, the adapter's stored voice prompt
    is kept instead (then read from disk on each speaker change rather than re-extracted).
    """
    import shutil

    import soundfile as sf

    from adapters.apply import apply_adapter
    from adapters.format import read_adapter
    from tritone.models.base import BaseModel

    model = BaseModel.load(base_dir)
    adapter = read_adapter(adapter_dir)
    apply_adapter(model, adapter)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL_DIR)
    if clip is not None:
        sf.write(out / REFERENCE_WAV, clip.audio, clip.sample_rate, subtype="FLOAT")
        (out / REFERENCE_META).write_text(json.dumps({"text": clip.text, "lang": clip.lang}) + "\n")
    else:
        shutil.copyfile(adapter_dir / PROMPT_FILE, out / PROMPT_FILE)
    return out


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class GlobalTTS:
    """One global model; another voice = that voice's full weights loaded from disk + its reference re-extracted."""

    def __init__(self, base_dir: Path, root: Path) -> None:
        from tritone.models.base import BaseModel
        from tritone.pipeline import Pipeline

        self.root = Path(root)
        self.model = BaseModel.load(base_dir)  # what the server starts with (api_v2: the configured weights)
        self.pipeline = Pipeline(self.model)
        self.voice: str | None = None
        self.prompt: Any = None
        self.swaps = 0
        self.swap_s = 0.0
        self.requests = 0

    def _load_weights(self, model_dir: Path) -> None:
        """Build new GPT, SoVITS and vocoder modules from the voice's files and swap them in."""
        from tritone.checkpoints import load_weights
        from tritone.models.gpt import GPT, GPTConfig
        from tritone.models.sovits import SoVITS, SoVITSConfig
        from tritone.models.vocoder import Vocoder, VocoderConfig

        gpt_cfg, gpt_sd = load_weights(model_dir / "gpt", "gpt")
        gpt = GPT(GPTConfig(**gpt_cfg))
        gpt.load_state_dict(gpt_sd)
        s2_cfg, s2_sd = load_weights(model_dir / "sovits", "sovits")
        sovits = SoVITS(SoVITSConfig(**s2_cfg), posterior=False)
        sovits.remove_weight_norm()
        sovits.load_state_dict(s2_sd)
        voc_cfg, voc_sd = load_weights(model_dir / "vocoder", "vocoder")
        vocoder = Vocoder(VocoderConfig(**voc_cfg))
        vocoder.remove_weight_norm()
        vocoder.load_state_dict(voc_sd)
        self.model.gpt, self.model.sovits, self.model.vocoder = gpt.eval(), sovits.eval(), vocoder.eval()

    def _reference(self, voice_dir: Path) -> Any:
        """The voice prompt: re-extracted from the reference clip (as upstream does on a change)."""
        if (voice_dir / REFERENCE_WAV).is_file():
            import soundfile as sf

            audio, sr = sf.read(voice_dir / REFERENCE_WAV, dtype="float32")
            meta = json.loads((voice_dir / REFERENCE_META).read_text())
            return self.pipeline.build_voice_prompt(audio, sr, meta["text"], meta.get("lang", "en"))
        from tritone.voice import VoicePrompt

        return VoicePrompt.load(voice_dir / PROMPT_FILE)

    def use(self, voice: str) -> None:
        """Make `voice` the loaded one (a no-op when it already is)."""
        if voice == self.voice:
            return
        voice_dir = self.root / voice
        if not (voice_dir / MODEL_DIR).is_dir():
            raise KeyError(f"unknown voice {voice!r} (no {voice_dir / MODEL_DIR})")
        start = time.perf_counter()
        self._load_weights(voice_dir / MODEL_DIR)
        self.prompt = self._reference(voice_dir)
        self.voice = voice
        self.swaps += 1
        self.swap_s += time.perf_counter() - start

    def _params(self, params: dict[str, Any] | None) -> Any:
        from tritone.pipeline import SynthesisParams

        return SynthesisParams(**(params or {}))

    def synthesize(
        self, text: str, lang: str, voice: str, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        self.use(voice)
        self.requests += 1
        return self.pipeline.synthesize(text, lang, self.prompt, self._params(params))

    def synthesize_stream(
        self, text: str, lang: str, voice: str, params: dict[str, Any] | None = None
    ) -> Iterator[np.ndarray]:
        self.use(voice)
        self.requests += 1
        yield from self.pipeline.synthesize_stream(text, lang, self.prompt, self._params(params))


_END = object()


class Serializer:
    """Runs jobs one at a time, in arrival order, on one worker thread; their outputs stream back."""

    def __init__(self) -> None:
        self.jobs: queue.Queue[tuple[Callable[[], Iterator[Any]], queue.Queue[Any]]] = queue.Queue()
        threading.Thread(target=self._work, name="upstream-worker", daemon=True).start()

    def _work(self) -> None:
        while True:
            job, out = self.jobs.get()
            try:
                for item in job():
                    out.put(item)
                out.put(_END)
            except Exception as exc:
                out.put(exc)

    def submit(self, job: Callable[[], Iterator[Any]]) -> Iterator[Any]:
        out: queue.Queue[Any] = queue.Queue()
        self.jobs.put((job, out))
        while True:
            item = out.get()
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm16(audio))
    return buf.getvalue()


@dataclass
class ServerState:
    tts: GlobalTTS
    serializer: Serializer


def make_handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    sample_rate = state.tts.pipeline.sample_rate

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._json(200, {"status": "ok"})
            elif self.path == "/stats":
                t = state.tts
                self._json(
                    200, {"requests": t.requests, "swaps": t.swaps, "swap_s": t.swap_s, "voice": t.voice}
                )
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path != "/tts":
                self._json(404, {"error": "not found"})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                text, voice = str(body["text"]), str(body["voice"])
                lang, params, stream = (
                    str(body.get("lang", "en")),
                    body.get("params") or {},
                    bool(body.get("stream")),
                )
            except (ValueError, KeyError, TypeError) as exc:
                self._json(400, {"error": f"bad request: {exc}"})
                return
            tts = state.tts
            try:
                if not stream:
                    (audio,) = list(
                        state.serializer.submit(lambda: iter([tts.synthesize(text, lang, voice, params)]))
                    )
                    data = wav_bytes(audio, sample_rate)
                    self.send_response(200)
                    self.send_header("Content-Type", "audio/wav")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("X-Audio-Seconds", f"{audio.size / sample_rate:.3f}")
                    self.end_headers()
                    self.wfile.write(data)
                    return
                chunks = state.serializer.submit(lambda: tts.synthesize_stream(text, lang, voice, params))
                first = next(chunks, None)  # errors surface before the headers, as a status
            except (KeyError, ValueError) as exc:
                self._json(404 if isinstance(exc, KeyError) else 400, {"error": str(exc)})
                return
            self.send_response(200)
            self.send_header("Content-Type", f"audio/L16;rate={sample_rate}")
            self.send_header("X-Sample-Rate", str(sample_rate))
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if first is not None:
                self._chunk(pcm16(first))
            for chunk in chunks:
                self._chunk(pcm16(chunk))
            self.wfile.write(b"0\r\n\r\n")

        def _chunk(self, data: bytes) -> None:
            if data:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

    return Handler


class UpstreamStyleServer:
    """The HTTP server in a background thread (tests), or in the foreground (`serve`)."""

    def __init__(self, base_dir: Path, root: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = ServerState(GlobalTTS(base_dir, root), Serializer())
        self.httpd = ThreadingHTTPServer((host, port), make_handler(self.state))
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 256

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> UpstreamStyleServer:
        threading.Thread(target=self.httpd.serve_forever, name="upstream-http", daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def hold(root: Path, count: int) -> list[dict[str, Any]]:
    """Load `count` voices' full weights into memory at once (what serving them without swaps costs)."""
    from tritone.checkpoints import load_weights

    voices = sorted(p.name for p in root.iterdir() if (p / MODEL_DIR).is_dir())
    if not voices:
        raise FileNotFoundError(f"no voices under {root}")
    held = []
    for i in range(count):
        model_dir = root / voices[i % len(voices)] / MODEL_DIR
        # distinct copies even when fewer voices exist on disk than `count`
        held.append({kind: {k: v.clone() for k, v in load_weights(model_dir / kind, kind)[1].items()}
                     for kind in ("gpt", "sovits", "vocoder")})  # fmt: skip
    return held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.upstream_style",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="write voices as full model copies (merged adapters)")
    prep.add_argument("--base", type=Path, required=True, help="base bundle directory")
    prep.add_argument(
        "--adapter", type=Path, action="append", required=True, help="adapter directory (repeat)"
    )
    prep.add_argument("--out", type=Path, required=True, help="voices root")
    srv = sub.add_parser("serve", help="the one-request-at-a-time HTTP server")
    srv.add_argument("--base", type=Path, required=True, help="base bundle the server starts with")
    srv.add_argument("--root", type=Path, required=True, help="voices root (from `prepare`)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=DEFAULT_PORT)
    srv.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: library default)")
    hld = sub.add_parser("hold", help="hold N voices' full weights in memory, print RSS, wait for stdin EOF")
    hld.add_argument("--root", type=Path, required=True)
    hld.add_argument("--count", type=int, required=True)
    args = parser.parse_args(argv)

    if args.command == "prepare":
        from adapters.format import read_manifest

        for adapter in args.adapter:
            manifest, _ = read_manifest(adapter)
            out = prepare_voice(args.base, adapter, args.out / f"{manifest.tenant}.{manifest.voice}")
            print(f"{out} ({dir_bytes(out) / 1e6:.1f} MB)")
        return 0
    if args.command == "hold":
        import psutil

        held = hold(args.root, args.count)
        print(json.dumps({"count": len(held), "rss": psutil.Process().memory_info().rss}), flush=True)
        sys.stdin.read()
        return 0
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    server = UpstreamStyleServer(args.base, args.root, args.host, args.port)
    print(f"upstream-style server on {server.url} (pid {os.getpid()})", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
