"""Benchmark: the served stack vs the upstream-style path, side by side in one run (`make bench`).

    python -m loadtest.bench_upstream [--base auto|tiny|DIR] [--quick] [--results FILE]
    python -m loadtest.bench_upstream --render throughput|goals|memory FILE

One run, one machine, one base model, the same voices and the same requests for both paths:

- **served**: the gateway (its own process, HTTP on loopback) in front of the real Triton server
  running the `tts` model (in-flight batching across voices, LoRA adapter bank of
  `--bank-slots` voices, torch runtime), voices resolved through the embedded MLflow registry;
- **upstream-style** (`loadtest.upstream_style`): one process, one global model, requests served
  one at a time in arrival order, every speaker change loading that voice's merged full weights
  from disk and re-extracting its reference, as upstream `api_v2.py` does.

Voices are real adapters (random LoRA over `DEFAULT_TARGETS`, voice prompts from spoken
reference clips; `loadtest.voices`); the upstream-style path holds each as a full model copy
with the adapter merged. For each number of voices (1, 8, 64) and each concurrency (1, 8, 32),
a closed loop of `concurrency` clients sends the same list of streamed requests to each path
(texts at realistic lengths from `loadtest.texts`, voices Zipf-distributed with exponent
`--zipf-s`, fixed seeds): throughput in seconds of audio per wall second, latency p50/p95/p99
(time to the last byte) and time to first audio (first audio byte). Paths alternate which goes
first per cell. Then memory: the summed RSS (and PSS) of the served stack's processes (gateway,
tritonserver, its python-backend stub) with 1, 64 and 1,000 registered voices, each measured after
traffic touched every registered voice; and the upstream-style path's process (one model
resident, swapped per voice) and the cost of holding every voice loaded at once (`hold`).

With `--results FILE` the measurements are saved as JSON; `--render` prints one table from such
a file (the `make bench` sections `upstream`, `upstream-goals` and `upstream-memory`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_BASE = REPO_ROOT / "demo" / "base"
TENANT = "bench"
SAMPLE_RATE = 32_000
WARM_TEXT = "Hello there."
TOUCH_TEXT = "Hi."


# -- requests and the closed-loop client ---------------------------------------------------------


@dataclass(frozen=True)
class Request:
    text: str
    voice: str
    seed: int


@dataclass
class Result:
    ok: bool
    latency: float = math.nan
    first_audio: float = math.nan
    audio_s: float = 0.0
    error: str = ""


def make_requests(
    n: int,
    voices: Sequence[str],
    zipf_s: float,
    text_seed: int,
    voice_seed: int,
    lengths: Any = None,
) -> list[Request]:
    """`n` requests: texts and synthesis seeds from `text_seed` (so the same for every voice
    count), voices Zipf-drawn from `voice_seed`."""
    from loadtest.mix import ZipfSampler
    from loadtest.texts import TextSampler

    mix = ZipfSampler(voices, zipf_s, seed=voice_seed)
    texts = TextSampler(lengths, seed=text_seed)
    rng = np.random.default_rng(text_seed + 1)
    return [Request(texts.sample(), mix.sample(), int(rng.integers(2**62))) for _ in range(n)]


def one_request(client: Any, url: str, headers: dict[str, str], req: Request, params: dict[str, Any],
                stream: bool = True) -> Result:  # fmt: skip
    body = {
        "text": req.text,
        "lang": "en",
        "voice": req.voice,
        "params": {"seed": req.seed, **params},
        "stream": stream,
    }
    start = time.perf_counter()
    first = math.nan
    nbytes = 0
    try:
        with client.stream("POST", url, json=body, headers=headers) as resp:
            if resp.status_code != 200:
                resp.read()
                return Result(False, error=f"HTTP {resp.status_code}: {resp.text[:200]}")
            for chunk in resp.iter_raw():
                if chunk and math.isnan(first):
                    first = time.perf_counter() - start
                nbytes += len(chunk)
    except Exception as exc:  # a failed request is a result, not a crash of the benchmark
        return Result(False, error=f"{type(exc).__name__}: {exc}")
    audio_s = nbytes / 2 / SAMPLE_RATE if stream else max(0.0, (nbytes - 44) / 2 / SAMPLE_RATE)
    return Result(True, time.perf_counter() - start, first, audio_s)


def closed_loop(url: str, headers: dict[str, str], requests: Sequence[Request], concurrency: int,
                params: dict[str, Any], stream: bool = True) -> tuple[list[Result], float]:  # fmt: skip
    """`concurrency` clients, each sending its next request as soon as its last one finished."""
    import httpx

    results: list[Result | None] = [None] * len(requests)
    nxt = iter(range(len(requests)))
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(timeout=httpx.Timeout(600.0, connect=30.0)) as client:
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                results[i] = one_request(client, url, headers, requests[i], params, stream)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(concurrency, len(requests)))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return [r if r is not None else Result(False, error="not run") for r in results], wall


def summarise(results: Sequence[Result], wall: float) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    lat = np.array([r.latency for r in ok])
    ttfa = np.array([r.first_audio for r in ok if math.isfinite(r.first_audio)])
    audio = float(sum(r.audio_s for r in ok))

    def pct(values: np.ndarray, q: float) -> float:
        return float(np.percentile(values, q)) if values.size else math.nan

    return {
        "n": len(results),
        "ok": len(ok),
        "errors": sorted({r.error for r in results if not r.ok})[:3],
        "wall_s": wall,
        "audio_s": audio,
        "throughput": audio / wall if wall > 0 else 0.0,
        "p50": pct(lat, 50),
        "p95": pct(lat, 95),
        "p99": pct(lat, 99),
        "ttfa_p50": pct(ttfa, 50),
        "ttfa_p95": pct(ttfa, 95),
    }


# -- processes -----------------------------------------------------------------------------------


def wait_http(
    url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.is_file() else ""
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered:\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s")


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        return subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )  # fmt: skip


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    import signal

    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def tree_memory(pids: Sequence[int]) -> dict[str, int]:
    """Summed RSS and PSS of these processes and all their descendants."""
    import psutil

    procs: dict[int, Any] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        for p in [root, *root.children(recursive=True)]:
            procs[p.pid] = p
    rss = pss = 0
    for p in procs.values():
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return {"rss": rss, "pss": pss, "processes": len(procs)}


def free_port() -> int:
    from tritone.serving.server import free_port as _free

    return _free()


class ServedStack:
    """Triton (the tts model) + the gateway in its own process, on loopback."""

    def __init__(
        self, home: Path, base_dir: Path, uri: str, keys_file: Path, threads: int, bank_slots: int
    ) -> None:
        from tritone.serving.server import TritonServer

        self.home = home
        env = {
            "TRITONE_HOME": str(home),
            "TRITONE_BASE_MODEL": str(base_dir),
            "TRITONE_MLFLOW_URI": uri,
            "TRITONE_TARGET": "cpu",
            "TRITONE_RUNTIME": "torch",
            "TRITONE_THREADS": str(threads),
            "TRITONE_BANK_SLOTS": str(bank_slots),
        }
        self.triton = TritonServer(env=env, log_file=home / "logs" / "triton.log", startup_timeout_s=600)
        self.http_port, self.grpc_port = free_port(), free_port()
        self.gateway_cmd = [
            sys.executable, "-m", "gateway", "gateway", "serve", "--host", "127.0.0.1",
            "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
            "--triton-urls", "", "--mlflow-uri", uri, "--api-keys-file", str(keys_file), "--log-level", "warning",
        ]  # fmt: skip
        self.gateway_env = {"TRITONE_HOME": str(home), "OMP_NUM_THREADS": str(max(threads, 1))}
        self.gateway: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/tts"

    def start(self) -> ServedStack:
        self.triton.start()
        self.gateway_cmd[self.gateway_cmd.index("--triton-urls") + 1] = self.triton.grpc_url
        log = self.home / "logs" / "gateway.log"
        self.gateway = spawn(self.gateway_cmd, log, self.gateway_env)
        wait_http(f"http://127.0.0.1:{self.http_port}/readyz", 300, self.gateway, log)
        return self

    def pids(self) -> list[int]:
        return [p.pid for p in (self.gateway, self.triton.process) if p is not None]

    def stop(self) -> None:
        stop(self.gateway)
        self.triton.stop()


class UpstreamProcess:
    def __init__(self, home: Path, base_dir: Path, root: Path, threads: int) -> None:
        self.port = free_port()
        self.cmd = [
            sys.executable, "-m", "loadtest.upstream_style", "serve", "--base", str(base_dir),
            "--root", str(root), "--port", str(self.port), "--threads", str(threads),
        ]  # fmt: skip
        self.log = home / "logs" / "upstream.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tts"

    def start(self) -> UpstreamProcess:
        self.proc = spawn(self.cmd, self.log)
        wait_http(f"http://127.0.0.1:{self.port}/health", 300, self.proc, self.log)
        return self

    def stats(self) -> dict[str, Any]:
        import httpx

        return dict(httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=10).json())

    def stop(self) -> None:
        stop(self.proc)


def hold_memory(root: Path, count: int) -> int:
    """RSS of a process holding `count` voices' full weights at once."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest.upstream_style", "hold", "--root", str(root), "--count", str(count)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    rss = tree_memory([proc.pid])["rss"]
    proc.stdin.close()
    proc.wait(60)
    if not line:
        raise RuntimeError("hold process failed")
    return rss


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Settings:
    base: str
    voices: list[int]
    concurrency: list[int]
    requests: int
    memory_voices: list[int]
    threads: int
    bank_slots: int
    zipf_s: float
    max_new_tokens: int
    text_median: float
    text_sigma: float
    text_max: int
    touch_concurrency: int
    seed: int
    quick: bool


@dataclass
class Results:
    meta: dict[str, Any] = field(default_factory=dict)
    cells: list[dict[str, Any]] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)


def resolve_base(spec: str, home: Path) -> tuple[Path, str]:
    """The base bundle to benchmark and how to name it in the rows."""
    from tritone.models.base import BaseModel, BaseModelConfig

    if spec == "auto":
        spec = str(DEMO_BASE) if (DEMO_BASE / "manifest.json").is_file() else "tiny"
    if spec == "tiny":
        model = BaseModel.random(BaseModelConfig.tiny(), seed=0)
        return model.save(home / "base"), "tiny base, random weights"
    path = Path(spec).resolve()
    model = BaseModel.load(path)
    try:
        shown = path.relative_to(REPO_ROOT)
    except ValueError:
        shown = path
    params = sum(t.numel() for t in model.state_dict().values()) / 1e6
    return path, f"base `{shown}` ({params:.1f} M params, {model.weights_sha256[:8]})"


@contextmanager
def workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.resolve()
        return
    tmp = tempfile.mkdtemp(prefix="tritone-bench-upstream-")
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def log(msg: str) -> None:
    print(f"[bench upstream {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(s: Settings, command: str, keep: Path | None) -> Results:
    from adapters.registry import AdapterRegistry
    from adapters.store import AdapterStore
    from gateway.auth import add_key
    from loadtest.texts import TextLengths
    from loadtest.upstream_style import dir_bytes, prepare_voice
    from loadtest.voices import VoiceFactory, register_voices, register_voices_bulk, voice_specs
    from tritone.benchmarking import machine

    res = Results()
    with workdir(keep) as home:
        os.environ["TRITONE_HOME"] = str(home)
        base_dir, base_desc = resolve_base(s.base, home)
        log(f"base: {base_desc}; work dir {home}")
        uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
        registry = AdapterRegistry(uri, store=AdapterStore(home / "setup-store"))
        pin = registry.register_base(base_dir)
        factory = VoiceFactory(base_dir, pin)
        max_voices = max([*s.voices, *s.memory_voices])
        specs = voice_specs(max_voices, [TENANT], clips=len(factory.clips))
        adapters_root, upstream_root = home / "adapters", home / "upstream-voices"
        keys_file = home / "api-keys"
        _, key = add_key(
            keys_file, TENANT, "bench", {"max_concurrent": 512, "rate_per_s": 1e4, "burst": 10_000}
        )
        headers = {"Authorization": f"Bearer {key}"}
        registered = 0
        prepared = 0

        def register_upto(n: int, bulk: bool = False) -> None:
            nonlocal registered
            if n <= registered:
                return
            t = time.perf_counter()
            dirs = [factory.write(adapters_root, spec) for spec in specs[registered:n]]
            (register_voices_bulk if bulk else register_voices)(registry, dirs)
            log(f"registered voices {registered}..{n - 1} in {time.perf_counter() - t:.0f} s")
            registered = n

        def prepare_upto(n: int) -> None:
            nonlocal prepared
            for spec in specs[prepared:n]:
                prepare_voice(base_dir, adapters_root / spec.ref, upstream_root / spec.ref,
                              factory.clips[spec.clip % len(factory.clips)])  # fmt: skip
            prepared = max(prepared, n)

        register_upto(1)
        prepare_upto(1)
        served = ServedStack(home, base_dir, uri, keys_file, s.threads, s.bank_slots)
        upstream = UpstreamProcess(home, base_dir, upstream_root, s.threads)
        log("starting the served stack (Triton + gateway) and the upstream-style server ...")
        try:
            served.start()
            upstream.start()
            params = {"max_new_tokens": s.max_new_tokens} if s.max_new_tokens > 0 else {}
            warm_params = {"max_new_tokens": 8}
            paths = {"served": (served.url, headers), "upstream": (upstream.url, {})}
            flip = False
            for n_voices in sorted(s.voices):
                register_upto(n_voices)
                prepare_upto(n_voices)
                names = [spec.ref for spec in specs[:n_voices]]
                warm = [Request(WARM_TEXT, v, 1) for v in names]
                for name, (url, hdrs) in paths.items():  # every voice resolved, loaded and run once
                    results, _ = closed_loop(url, hdrs, warm, 4 if name == "served" else 1, warm_params)
                    bad = [r.error for r in results if not r.ok]
                    if bad:
                        raise RuntimeError(f"warm-up of the {name} path failed: {bad[:3]}")
                for conc in s.concurrency:
                    n_req = max(s.requests, conc if s.quick else 2 * conc)
                    lengths = TextLengths(s.text_median, s.text_sigma, maximum=s.text_max)
                    reqs = make_requests(n_req, names, s.zipf_s, s.seed + conc, s.seed + 1000 * n_voices + conc,
                                         lengths)  # fmt: skip
                    order = ["upstream", "served"] if flip else ["served", "upstream"]
                    flip = not flip
                    for name in order:
                        url, hdrs = paths[name]
                        before = upstream.stats() if name == "upstream" else {}
                        results, wall = closed_loop(url, hdrs, reqs, conc, params)
                        cell = {
                            "voices": n_voices,
                            "concurrency": conc,
                            "path": name,
                            **summarise(results, wall),
                        }
                        if name == "upstream":
                            after = upstream.stats()
                            cell["swaps"] = after["swaps"] - before["swaps"]
                            cell["swap_s"] = after["swap_s"] - before["swap_s"]
                        res.cells.append(cell)
                        log(f"{n_voices:>3} voices, c={conc:>2}, {name:>8}: {cell['ok']}/{cell['n']} ok, "
                            f"{cell['throughput']:.2f} audio s/s, p50 {cell['p50']:.2f} p99 {cell['p99']:.2f} s, "
                            f"TTFA p50 {cell['ttfa_p50']:.2f} s")  # fmt: skip
                if n_voices in s.memory_voices:
                    res.memory.append(memory_point(n_voices, n_voices, served, upstream))
            for n_mem in sorted(s.memory_voices):
                if any(m["voices"] == n_mem for m in res.memory):
                    continue
                register_upto(n_mem, bulk=n_mem - registered > 100)
                names = [spec.ref for spec in specs[:n_mem]]
                t = time.perf_counter()
                touch = [Request(TOUCH_TEXT, v, 1) for v in names]
                results, _ = closed_loop(
                    served.url, headers, touch, s.touch_concurrency, {"max_new_tokens": 4}, False
                )
                bad = [r.error for r in results if not r.ok]
                if bad:
                    raise RuntimeError(f"touching {n_mem} voices failed ({len(bad)}): {bad[:3]}")
                log(f"touched all {n_mem} voices through the served stack in {time.perf_counter() - t:.0f} s")
                res.memory.append(memory_point(n_mem, prepared, served, None))
            voice_disk = dir_bytes(upstream_root / specs[0].ref)
            adapter_disk = dir_bytes(adapters_root / specs[0].ref)
            model_disk = dir_bytes(upstream_root / specs[0].ref / "model")
            for point in res.memory:
                point["upstream_disk"] = point["voices"] * voice_disk
                point["served_disk"] = point["voices"] * adapter_disk
        finally:
            upstream.stop()
            served.stop()
        hold_points(res, upstream_root, voice_bytes=model_disk)
        res.meta = {
            "base": base_desc,
            "machine": machine(),
            "date": dt.date.today().isoformat(),
            "command": command,
            "settings": asdict(s),
            "adapter_bytes": adapter_disk,
            "voice_copy_bytes": voice_disk,
            "model_bytes": model_disk,
        }
    return res


def memory_point(
    n_registered: int, touched: int, served: ServedStack, upstream: UpstreamProcess | None
) -> dict[str, Any]:
    mem = tree_memory(served.pids())
    point: dict[str, Any] = {"voices": n_registered, "served_rss": mem["rss"], "served_pss": mem["pss"],
                             "served_processes": mem["processes"]}  # fmt: skip
    if upstream is not None and upstream.proc is not None:
        up = tree_memory([upstream.proc.pid])
        point.update(upstream_rss=up["rss"], upstream_pss=up["pss"], upstream_voices_swapped=touched)
    log(f"memory with {n_registered} voices: served {mem['rss'] / 1e6:.0f} MB RSS"
        + (f", upstream-style {point['upstream_rss'] / 1e6:.0f} MB" if "upstream_rss" in point else ""))  # fmt: skip
    return point


def hold_points(res: Results, root: Path, voice_bytes: int) -> None:
    """RSS of one process holding N full copies at once; projected where it would not fit in memory."""
    import psutil

    available = psutil.virtual_memory().available
    measured: dict[int, int] = {}
    for point in res.memory:
        n = point["voices"]
        if n * voice_bytes * 1.5 < 0.5 * available:
            measured[n] = hold_memory(root, n)
            point["hold_rss"], point["hold_measured"] = measured[n], True
            log(f"holding {n} full copies: {measured[n] / 1e6:.0f} MB RSS")
    if len(measured) >= 2:
        lo, hi = min(measured), max(measured)
        per_copy = (measured[hi] - measured[lo]) / max(hi - lo, 1)
        for point in res.memory:
            if "hold_rss" not in point:
                point["hold_rss"] = int(measured[lo] + (point["voices"] - lo) * per_copy)
                point["hold_measured"] = False


# -- rendering -----------------------------------------------------------------------------------


def _mb(b: float) -> str:
    return f"{b / 1e9:.2f} GB" if b >= 1e9 else f"{b / 1e6:.0f} MB"


def _s(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:.2f}"


def _cell(res: Results, voices: int, conc: int, path: str) -> dict[str, Any] | None:
    return next(
        (c for c in res.cells if (c["voices"], c["concurrency"], c["path"]) == (voices, conc, path)), None
    )


def _tail(res: Results) -> str:
    m = res.meta
    return f"{m['base']} | `{m['command']}` | {m['machine']} | {m['date']} |"


def render_throughput(res: Results) -> list[str]:
    rows = [
        "| voices | concurrency | served: audio s / wall s · latency p50 / p95 / p99 · first audio p50 | "
        "upstream-style: audio s / wall s · latency p50 / p95 / p99 · first audio p50; time swapping (swaps) | "
        "served ÷ upstream throughput | base | command | machine | date |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    pairs = sorted({(c["voices"], c["concurrency"]) for c in res.cells})
    for voices, conc in pairs:
        sv, up = _cell(res, voices, conc, "served"), _cell(res, voices, conc, "upstream")
        if sv is None or up is None:
            continue

        def fmt(c: dict[str, Any], extra: str = "") -> str:
            fails = f", **{c['n'] - c['ok']} failed**" if c["ok"] < c["n"] else ""
            return (f"{c['throughput']:.2f} · {_s(c['p50'])} / {_s(c['p95'])} / {_s(c['p99'])} s · "
                    f"{_s(c['ttfa_p50'])} s{extra} (n={c['n']}{fails})")  # fmt: skip

        ratio = sv["throughput"] / up["throughput"] if up["throughput"] else math.nan
        swaps = f"; {up.get('swap_s', 0.0):.1f} s swapping ({up.get('swaps', 0)} swaps)"
        rows.append(f"| {voices} | {conc} | {fmt(sv)} | {fmt(up, swaps)} | **{ratio:.2f}×** | {_tail(res)}")
    return rows


def render_goals(res: Results) -> list[str]:
    rows = [
        "| goal | measured | verdict | base | command | machine | date |",
        "|---|---|---|---|---|---|---|",
    ]
    sv, up = _cell(res, 8, 8, "served"), _cell(res, 8, 8, "upstream")
    if sv and up and up["throughput"]:
        ratio = sv["throughput"] / up["throughput"]
        verdict = "met" if ratio >= 3 else f"**missed**: {ratio / 3:.0%} of the goal ({3 - ratio:.2f}× short)"
        rows.append(
            f"| served throughput ≥ 3× upstream-style at concurrency 8 over 8 voices | "
            f"{sv['throughput']:.2f} vs {up['throughput']:.2f} audio s per s: **{ratio:.2f}×** | {verdict} | {_tail(res)}"
        )
    for conc in sorted({c["concurrency"] for c in res.cells}):
        one, many = _cell(res, 1, conc, "served"), _cell(res, 64, conc, "served")
        if not one or not many:
            continue
        ratio = many["p99"] / one["p99"]
        verdict = "met" if ratio <= 1.25 else f"**missed** by {ratio - 1.25:.2f}× (goal ≤ 1.25×)"
        rows.append(
            f"| served p99 latency with 64 voices ≤ 1.25× the p99 with one voice, concurrency {conc} | "
            f"{many['p99']:.2f} s vs {one['p99']:.2f} s: **{ratio:.2f}×** | {verdict} | {_tail(res)}"
        )
    return rows


def render_memory(res: Results) -> list[str]:
    m = res.meta
    rows = [
        "| registered voices | served stack: RSS (PSS) of gateway + tritonserver + python stub | "
        "upstream-style, one model resident, swapped per voice (api_v2): RSS | "
        "upstream-style, every voice loaded at once as a full fine-tune (weights only): RSS | "
        "on disk: adapters vs full copies | "
        "base | command | machine | date |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ref_up = next((p for p in sorted(res.memory, key=lambda p: -p["voices"]) if "upstream_rss" in p), None)
    for p in sorted(res.memory, key=lambda p: p["voices"]):
        served = f"{_mb(p['served_rss'])} ({_mb(p['served_pss'])}), {p['served_processes']} processes"
        if "upstream_rss" in p:
            up = f"{_mb(p['upstream_rss'])} (after swapping through {p['upstream_voices_swapped']} voices)"
        elif ref_up is not None:
            up = (f"{_mb(ref_up['upstream_rss'])}: the {ref_up['voices']}-voice process (one model resident; "
                  "more voices change only the disk)")  # fmt: skip
        else:
            up = "–"
        hold = "–"
        if "hold_rss" in p:
            hold = _mb(p["hold_rss"]) + (
                "" if p.get("hold_measured") else " (projected: too big to hold here)"
            )
        disk = (f"{_mb(p['served_disk'])} ({_mb(m['adapter_bytes'])} per adapter) vs "
                f"{_mb(p['upstream_disk'])} ({_mb(m['voice_copy_bytes'])} per voice)")  # fmt: skip
        rows.append(f"| {p['voices']:,} | {served} | {up} | {hold} | {disk} | {_tail(res)}")
    return rows


RENDERERS = {"throughput": render_throughput, "goals": render_goals, "memory": render_memory}


def load_results(path: Path) -> Results:
    data = json.loads(path.read_text())
    return Results(data["meta"], data["cells"], data["memory"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_upstream",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--base", default="auto", help="auto (demo/base if present, else tiny) | tiny | DIR")
    parser.add_argument(
        "--quick", action="store_true", help="fewer requests per cell (about a third of the time)"
    )
    parser.add_argument("--voices", default="1,8,64", help="voice counts (default 1,8,64)")
    parser.add_argument("--concurrency", default="1,8,32", help="concurrencies (default 1,8,32)")
    parser.add_argument(
        "--requests", type=int, help="requests per cell, at least 2x concurrency (default 32; --quick 12)"
    )
    parser.add_argument("--memory-voices", default="1,64,1000", help="registered voices for the memory rows")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of both paths (default 1)")
    parser.add_argument(
        "--bank-slots", type=int, default=16, help="Triton's resident adapters (default 16, as make serve)"
    )
    parser.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent of voice popularity")
    parser.add_argument(
        "--max-new-tokens", type=int, default=250, help="cap per text segment (default 250 = 10 s)"
    )
    parser.add_argument("--text-median", type=float, default=90.0)
    parser.add_argument("--text-sigma", type=float, default=0.9)
    parser.add_argument("--text-max", type=int, default=400)
    parser.add_argument("--touch-concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--results", type=Path, help="save the measurements (JSON) here")
    parser.add_argument("--workdir", type=Path, help="keep the working files here (default: a temp dir)")
    parser.add_argument("--render", choices=sorted(RENDERERS), help="print one table from --results' FILE")
    parser.add_argument("file", nargs="?", type=Path, help="results JSON (with --render)")
    args = parser.parse_args(argv)

    if args.render:
        if args.file is None:
            parser.error("--render needs the results FILE")
        for line in RENDERERS[args.render](load_results(args.file)):
            print(line)
        return 0

    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x.strip()]

    settings = Settings(
        base=args.base,
        voices=ints(args.voices),
        concurrency=ints(args.concurrency),
        requests=args.requests or (12 if args.quick else 32),
        memory_voices=ints(args.memory_voices),
        threads=args.threads,
        bank_slots=args.bank_slots,
        zipf_s=args.zipf_s,
        max_new_tokens=args.max_new_tokens,
        text_median=args.text_median,
        text_sigma=args.text_sigma,
        text_max=args.text_max,
        touch_concurrency=args.touch_concurrency,
        seed=args.seed,
        quick=args.quick,
    )
    shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a]
    skip = {"--results", "--workdir"}
    cmd_args = [a for i, a in enumerate(shown) if a not in skip and (i == 0 or shown[i - 1] not in skip)]
    command = " ".join(["python -m loadtest.bench_upstream", *cmd_args])
    t0 = time.monotonic()
    res = run(settings, command, args.workdir)
    res.meta["runtime_s"] = round(time.monotonic() - t0)
    log(f"done in {res.meta['runtime_s']} s")
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(asdict(res), indent=1, default=float) + "\n")
    for line in render_throughput(res):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
