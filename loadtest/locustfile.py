"""Locust users of the tritone gateway: HTTP and gRPC, unary and streaming.

    locust -f loadtest/locustfile.py --headless -u 16 -r 4 -t 2m --scenario data/loadtest/scenario.json \\
        --csv out/lt --csv-full-history --html out/lt_locust.html HttpTTSUser GrpcTTSUser

Each request picks a voice from the scenario (`python -m loadtest.setup_voices`) with Zipf
popularity over the first `--voices` voices (exponent `--zipf-s`), authenticates with the API key
of the voice's tenant, and speaks a text drawn at a realistic length (`loadtest.texts`). A share
`--stream-ratio` of requests stream; the rest are unary.

Request names (one Locust statistic each):

| user | unary | streaming |
|---|---|---|
| `HttpTTSUser` | `POST /v1/tts` | `POST /v1/tts stream: first audio`, `POST /v1/tts stream: total` |
| `GrpcTTSUser` | `/tritone.v1.TextToSpeech/Synthesize` | `SynthesizeStream: first audio`, `SynthesizeStream: total` |

Unary gRPC calls are timed by a `grpc_interceptor.ClientInterceptor` that fires Locust's request
event; streams fire their two events by hand (time to the first chunk with audio, and time to
the end of the stream). With `--csv PREFIX`, every request is also written to
`PREFIX_requests.csv` (start time, API, voice, tenant, characters, seconds of audio, latency,
time to first audio), which `python -m loadtest.report` turns into plots with the CSVs Locust
writes itself.
"""

from __future__ import annotations

import csv
import itertools
import os
import threading
import time
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
import requests
from grpc_interceptor import ClientInterceptor
from locust import User, events, task
from locust.env import Environment

from gateway.proto.gen import tts_pb2, tts_pb2_grpc
from loadtest.mix import ZipfSampler
from loadtest.scenario import Scenario, Voice
from loadtest.texts import TextLengths, TextSampler

grpc_gevent.init_gevent()  # grpc's I/O cooperates with Locust's greenlets

HTTP_UNARY = "POST /v1/tts"
HTTP_FIRST = "POST /v1/tts stream: first audio"
HTTP_TOTAL = "POST /v1/tts stream: total"
GRPC_UNARY = "/tritone.v1.TextToSpeech/Synthesize"
GRPC_FIRST = "SynthesizeStream: first audio"
GRPC_TOTAL = "SynthesizeStream: total"
REQUEST_TIMEOUT_S = 300.0


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    group = parser.add_argument_group("tritone load test")
    group.add_argument(
        "--scenario",
        default=os.environ.get("TRITONE_LOADTEST_SCENARIO", "data/loadtest/scenario.json"),
        help="scenario file from `python -m loadtest.setup_voices` ($TRITONE_LOADTEST_SCENARIO)",
    )
    group.add_argument("--voices", type=int, default=0, help="use the N most popular voices (0: all)")
    group.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent of voice popularity")
    group.add_argument("--stream-ratio", type=float, default=0.5, help="share of streaming requests")
    group.add_argument("--text-median", type=float, default=90.0, help="median text length, characters")
    group.add_argument("--text-sigma", type=float, default=0.9, help="log-normal spread of text lengths")
    group.add_argument("--text-max", type=int, default=600, help="longest text, characters")
    group.add_argument("--max-new-tokens", type=int, default=0, help="cap per text segment (0: server's)")
    group.add_argument("--think-max", type=float, default=1.0, help="pause 0..N s between a user's requests")
    group.add_argument("--grpc-host", default="", help="gateway gRPC host:port (default: the scenario's)")
    group.add_argument("--seed", type=int, default=1, help="seed of voices, texts and synthesis")


@dataclass
class Record:
    """One request, as `PREFIX_requests.csv` stores it."""

    start: float  # unix time
    api: str  # http | grpc
    kind: str  # unary | stream
    voice: str
    tenant: str
    chars: int
    ok: int
    latency_s: float
    first_audio_s: float  # = latency for unary requests; nan when no audio came
    audio_s: float
    bytes: int
    error: str


class _Shared:
    """Per-process state: the scenario, the request log, a counter that gives each user its seed."""

    def __init__(self) -> None:
        self.scenario: Scenario | None = None
        self.voices: list[Voice] = []
        self.records: list[Record] = []
        self.lock = threading.Lock()
        self.counter = itertools.count()


SHARED = _Shared()


@events.init.add_listener
def _load_scenario(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is None:
        return
    SHARED.scenario = Scenario.load(Path(opts.scenario))
    SHARED.voices = SHARED.scenario.first(opts.voices or None)


@events.test_stop.add_listener
def _write_records(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    prefix = getattr(opts, "csv_prefix", None) if opts is not None else None
    if not prefix:
        return
    with SHARED.lock:
        rows = list(SHARED.records)
    path = Path(f"{prefix}_requests.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([f.name for f in fields(Record)])
        writer.writerows(astuple(r) for r in rows)


@dataclass
class Job:
    voice: Voice
    text: str
    stream: bool
    params: dict[str, Any]


class TTSUser(User):
    """Shared by both APIs: what to say, in which voice, with which key."""

    abstract = True

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        opts = environment.parsed_options
        assert opts is not None and SHARED.scenario is not None, "run under locust with --scenario"
        self.opts = opts
        self.scenario = SHARED.scenario
        seed = opts.seed * 1_000_003 + next(SHARED.counter)
        self.voice_mix = ZipfSampler(SHARED.voices, opts.zipf_s, seed=seed)
        lengths = TextLengths(median=opts.text_median, sigma=opts.text_sigma, maximum=opts.text_max)
        self.texts = TextSampler(lengths, seed=seed + 1)
        self.rng = self.texts.rng

    def wait_time(self) -> float:
        return float(self.rng.uniform(0.0, self.opts.think_max)) if self.opts.think_max > 0 else 0.0

    def next_job(self) -> Job:
        voice = self.voice_mix.sample()
        params: dict[str, Any] = {"seed": int(self.rng.integers(2**62))}
        if self.opts.max_new_tokens > 0:
            params["max_new_tokens"] = self.opts.max_new_tokens
        stream = bool(self.rng.random() < self.opts.stream_ratio)
        return Job(voice, self.texts.sample(), stream, params)

    def key(self, voice: Voice) -> str:
        return self.scenario.keys[voice.tenant]

    def fire(
        self, request_type: str, name: str, seconds: float, length: int, exc: BaseException | None
    ) -> None:
        self.environment.events.request.fire(
            request_type=request_type,
            name=name,
            response_time=seconds * 1000.0,
            response_length=length,
            exception=exc,
            context={},
        )

    def log(self, job: Job, api: str, start: float, latency: float, first: float | None, audio_s: float,
            nbytes: int, exc: BaseException | None) -> None:  # fmt: skip
        record = Record(
            start=start,
            api=api,
            kind="stream" if job.stream else "unary",
            voice=job.voice.ref,
            tenant=job.voice.tenant,
            chars=len(job.text),
            ok=int(exc is None),
            latency_s=round(latency, 6),
            first_audio_s=round(first, 6) if first is not None else float("nan"),
            audio_s=round(audio_s, 4),
            bytes=nbytes,
            error="" if exc is None else str(exc)[:200],
        )
        with SHARED.lock:
            SHARED.records.append(record)


class RequestFailed(Exception):
    pass


class HttpTTSUser(TTSUser):
    """`POST /v1/tts`: WAV, or a chunked 16-bit PCM stream."""

    def on_start(self) -> None:
        self.session = requests.Session()
        self.url = (self.environment.host or self.scenario.http).rstrip("/") + "/v1/tts"

    def on_stop(self) -> None:
        self.session.close()

    @task
    def synthesize(self) -> None:
        job = self.next_job()
        body: dict[str, Any] = {
            "text": job.text,
            "lang": "en",
            "voice": job.voice.ref,
            "params": job.params,
            "stream": job.stream,
        }
        headers = {"Authorization": f"Bearer {self.key(job.voice)}"}
        wall, start = time.time(), time.perf_counter()
        first: float | None = None
        nbytes, audio_s = 0, 0.0
        exc: BaseException | None = None
        try:
            with self.session.post(
                self.url, json=body, headers=headers, stream=job.stream, timeout=REQUEST_TIMEOUT_S
            ) as resp:
                if resp.status_code != 200:
                    raise RequestFailed(f"HTTP {resp.status_code}: {resp.text[:200]}")
                if job.stream:
                    rate = int(resp.headers.get("X-Sample-Rate", "32000"))
                    for chunk in resp.iter_content(chunk_size=None):
                        if chunk and first is None:
                            first = time.perf_counter() - start
                            self.fire("HTTP", HTTP_FIRST, first, len(chunk), None)
                        nbytes += len(chunk)
                    audio_s = nbytes / 2 / rate
                else:
                    nbytes = len(resp.content)
                    audio_s = float(resp.headers.get("X-Audio-Seconds", "0"))
                if audio_s <= 0:
                    raise RequestFailed("no audio in the response")
        except (requests.RequestException, RequestFailed) as err:
            exc = err
        latency = time.perf_counter() - start
        if job.stream:
            if first is None:
                self.fire("HTTP", HTTP_FIRST, latency, 0, exc or RequestFailed("no audio"))
            self.fire("HTTP", HTTP_TOTAL, latency, nbytes, exc)
        else:
            self.fire("HTTP", HTTP_UNARY, latency, nbytes, exc)
        self.log(job, "http", wall, latency, latency if not job.stream and exc is None else first,
                 audio_s, nbytes, exc)  # fmt: skip


class LocustInterceptor(ClientInterceptor):
    """Fires a Locust request event for every unary call (streams fire theirs by hand)."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment

    def intercept(self, method: Any, request_or_iterator: Any, call_details: Any) -> Any:
        if call_details.method.endswith("Stream"):
            return method(request_or_iterator, call_details)
        start = time.perf_counter()
        response = method(request_or_iterator, call_details)
        exc: BaseException | None = None
        length = 0
        try:
            length = response.result().ByteSize()
        except grpc.RpcError as err:
            exc = err
        self.environment.events.request.fire(
            request_type="gRPC",
            name=call_details.method,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=length,
            exception=exc,
            context={},
        )
        return response


class GrpcTTSUser(TTSUser):
    """`tritone.v1.TextToSpeech`: Synthesize (WAV) and SynthesizeStream (16-bit PCM chunks)."""

    def on_start(self) -> None:
        target = self.opts.grpc_host or self.scenario.grpc
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        self.channel = grpc.insecure_channel(target, options=options)
        channel = grpc.intercept_channel(self.channel, LocustInterceptor(self.environment))
        self.stub = tts_pb2_grpc.TextToSpeechStub(channel)

    def on_stop(self) -> None:
        self.channel.close()

    def _request(self, job: Job) -> Any:
        params = tts_pb2.SamplingParams(**job.params)
        return tts_pb2.SynthesizeRequest(text=job.text, lang="en", voice=job.voice.ref, params=params)

    @task
    def synthesize(self) -> None:
        job = self.next_job()
        metadata = [("authorization", f"Bearer {self.key(job.voice)}")]
        wall, start = time.time(), time.perf_counter()
        first: float | None = None
        nbytes, audio_s = 0, 0.0
        exc: BaseException | None = None
        if not job.stream:
            try:
                reply = self.stub.Synthesize(self._request(job), metadata=metadata, timeout=REQUEST_TIMEOUT_S)
                nbytes, audio_s = len(reply.audio), reply.duration_seconds
            except grpc.RpcError as err:
                exc = err
            latency = time.perf_counter() - start
            self.log(job, "grpc", wall, latency, latency if exc is None else None, audio_s, nbytes, exc)
            return
        rate = 32_000
        try:
            for message in self.stub.SynthesizeStream(
                self._request(job), metadata=metadata, timeout=REQUEST_TIMEOUT_S
            ):
                if message.HasField("info"):
                    rate = message.info.sample_rate or rate
                if message.audio and first is None:
                    first = time.perf_counter() - start
                    self.fire("gRPC", GRPC_FIRST, first, len(message.audio), None)
                nbytes += len(message.audio)
            audio_s = nbytes / 2 / rate
            if nbytes == 0:
                raise RequestFailed("the stream carried no audio")
        except (grpc.RpcError, RequestFailed) as err:
            exc = err
        latency = time.perf_counter() - start
        if first is None:
            self.fire("gRPC", GRPC_FIRST, latency, 0, exc or RequestFailed("no audio"))
        self.fire("gRPC", GRPC_TOTAL, latency, nbytes, exc)
        self.log(job, "grpc", wall, latency, first, audio_s, nbytes, exc)
