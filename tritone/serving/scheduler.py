"""The in-flight batching loop: every stage of every request, batched across requests.

One background thread owns the runtime (no other thread calls it) and repeats:

1. **admit**: new requests join; the adapter bank installs voices whose background load finished;
   zero-shot references get their semantic codes and reference embedding (batched); requests
   whose voice is ready get KV-cache rows for their next text segments (all segments at once
   offline, one at a time in order when streaming) and one batched **prefill** writes them;
2. **decode**: one token for every row in the batch: per-row sampling (`tritone.models.sampling`:
   each row its own parameters and seeded generator, so a row's tokens never depend on its batch
   neighbours), then one `gpt_decode` over the rows that go on, each with its own adapter slot.
   Rows that stop (EOS or max_new_tokens) leave at once and free their cache row;
3. **acoustics**: the rows that finished, and the streaming rows with a chunk due
   (`tritone.serving.streaming.ChunkPlanner`, the `SegmentStreamer` schedule), go through one
   batched `sovits` call (padded, per-row lengths, per-row latent noise from the segment seed)
   and one batched `vocoder` call over the windows to vocode; chunks are crossfaded and sent.

Requests join and leave between any two steps. A request cancelled by its client leaves at the
next check (its rows and voice pin are freed). An error inside one stage fails the requests of
that batch with a message and the loop goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from adapters.names import VoiceId
from tritone.config import SAMPLE_RATE
from tritone.models.base import BaseModelConfig
from tritone.models.gpt import GenerationRequest, collate
from tritone.models.sampling import sample_next
from tritone.models.vocoders import vocoder_receptive_field
from tritone.pipeline import latent_frames, latent_noise, segment_seed
from tritone.serving.bank import AdapterBank
from tritone.serving.errors import ServeError, from_exception, invalid
from tritone.serving.request import Job, SegmentRow
from tritone.serving.runtime import Runtime
from tritone.serving.streaming import ChunkPlan, ChunkPlanner, Window, clip_audio
from tritone.serving.voices import reference_prompt

log = logging.getLogger(__name__)

NOISE_SEED_SALT = 0x5EED  # as `Pipeline._latent`: the latent noise seed is the segment seed ^ salt


@dataclass
class SchedulerConfig:
    max_rows: int = 32  # GPT batch capacity: KV-cache rows (one per decoding text segment)
    max_context: int = 2048  # cache positions per row: phones + reference prompt + new tokens
    max_queue: int = 256  # requests waiting or running before new ones are refused (UNAVAILABLE)
    max_active: int = 0  # requests decoding at once (0: no limit; 1: one request at a time)
    acoustic_batch: int = 16  # rows per SoVITS / vocoder call
    cancel_check_s: float = 0.05  # how often a request's cancellation is checked

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_context < 2 or self.acoustic_batch < 1 or self.max_queue < 1:
            raise ValueError(f"bad scheduler config {self}")


@dataclass
class SchedulerStats:
    submitted: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    rejected: int = 0
    steps: int = 0
    tokens: int = 0
    prefills: int = 0
    sovits_calls: int = 0
    vocoder_calls: int = 0
    max_rows_seen: int = 0
    decode_s: float = 0.0
    prefill_s: float = 0.0
    acoustic_s: float = 0.0


@dataclass(eq=False)
class _Acoustic:
    """One unit of acoustic work: decode `n_tokens` of a row and vocode a window of it."""

    row: SegmentRow
    n_tokens: int
    final: bool
    plan: ChunkPlan | None  # streaming chunk; None: the whole segment offline


@dataclass(eq=False)
class _Command:
    fn: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


_WAKE = object()


class Scheduler:
    """The serving loop (see the module docstring). `submit` and `call` are thread-safe."""

    def __init__(
        self,
        runtime: Runtime,
        bank: AdapterBank,
        model_config: BaseModelConfig,
        config: SchedulerConfig | None = None,
    ) -> None:
        self.runtime = runtime
        self.bank = bank
        self.config = config or SchedulerConfig()
        self.model_config = model_config
        self.eos = model_config.gpt.eos
        self.vocab = model_config.gpt.vocab_size
        self.hop = model_config.vocoder.hop_length
        self.receptive = vocoder_receptive_field(model_config.vocoder)
        self.inter = model_config.sovits.inter_channels
        self.stats = SchedulerStats()
        cap = self.config.max_rows
        self.rows: list[SegmentRow | None] = [None] * cap
        self.logits = torch.zeros(cap, self.vocab)
        self.seen = torch.zeros(cap, self.vocab, dtype=torch.bool)
        self.jobs: list[Job] = []  # FIFO: waiting and running
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._pending = 0  # jobs submitted and not closed (guarded by _count_lock)
        self._count_lock = threading.Lock()
        self._last_cancel_check: dict[int, float] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        bank.on_load_done(lambda: self._inbox.put(_WAKE))

    # -- public (any thread) ---------------------------------------------------------------------

    def start(self) -> Scheduler:
        self.runtime.allocate_kv(self.config.max_rows, self.config.max_context)
        self._thread = threading.Thread(target=self._loop, name="tritone-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._inbox.put(_WAKE)
        if self._thread is not None:
            self._thread.join(timeout)
        self.bank.close()

    def submit(self, job: Job) -> None:
        """Queue a request; refused at once (UNAVAILABLE) when the queue is full or stopping."""
        with self._count_lock:
            full = self._pending >= self.config.max_queue
            if not full and not self._stop.is_set():
                self._pending += 1
                self.stats.submitted += 1
        if self._stop.is_set():
            self.stats.rejected += 1
            job.sink.fail(ServeError("UNAVAILABLE", "unavailable: the tts model is shutting down"))
            return
        if full:
            self.stats.rejected += 1
            job.sink.fail(
                ServeError(
                    "UNAVAILABLE",
                    f"unavailable: server busy ({self.config.max_queue} requests queued); retry later",
                )
            )
            return
        self._inbox.put(job)

    def call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run `fn` on the scheduler thread between steps and return its result."""
        cmd = _Command(fn)
        self._inbox.put(cmd)
        if not cmd.done.wait(timeout):
            raise TimeoutError("the scheduler did not run the command in time")
        if cmd.error is not None:
            raise cmd.error
        return cmd.result

    def snapshot(self) -> dict[str, Any]:
        """Counters and gauges for metrics (approximate when read from another thread)."""
        bank = self.bank.stats
        return {
            **self.stats.__dict__,
            "active_rows": sum(r is not None for r in self.rows),
            "jobs": len(self.jobs),
            "waiting": sum(1 for j in self.jobs if j.live == 0 and not j.closed),
            "bank_resident": len(self.bank.resident),
            "bank_loading": self.bank.loading,
            "bank_capacity": self.bank.capacity,
            "bank_loads": bank.loads,
            "bank_load_failures": bank.load_failures,
            "bank_hits": bank.hits,
            "bank_evictions": bank.evictions,
            "bank_revocations": bank.revocations,
        }

    # -- loop --------------------------------------------------------------------------------------

    def _busy(self) -> bool:
        return (
            any(r is not None for r in self.rows)
            or any(j.ready and j.wants_rows() for j in self.jobs)
            or self.bank.waiting_for_slot > 0
        )

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._drain(block=not self._busy())
                if self._stop.is_set():
                    break
                self._iteration()
            except Exception as exc:  # never let the loop die: fail what was in flight, go on
                log.exception("scheduler iteration failed")
                for job in list(self.jobs):
                    self._close(job, from_exception(exc, "synthesis failed"))
        for job in list(self.jobs):
            self._close(job, ServeError("UNAVAILABLE", "unavailable: the tts model is shutting down"))

    def _drain(self, block: bool) -> None:
        timeout = 0.5 if block else 0.0
        try:
            item = self._inbox.get(timeout=timeout) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            self._take(item)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _take(self, item: Any) -> None:
        if isinstance(item, Job):
            self.jobs.append(item)
        elif isinstance(item, _Command):
            try:
                item.result = item.fn()
            except BaseException as exc:
                item.error = exc
            item.done.set()

    def _iteration(self) -> None:
        self.bank.poll()
        self._check_cancelled()
        self._resolve_voices()
        self._prepare_references()
        self._admit()
        work = self._step()
        if work:
            self._acoustics(work)

    # -- job lifecycle -----------------------------------------------------------------------------

    def _close(self, job: Job, error: ServeError | None = None) -> None:
        if job.closed:
            return
        job.closed = True
        for i, row in enumerate(self.rows):
            if row is not None and row.job is job:
                self.rows[i] = None
        if job.voice is not None:
            self.bank.release(job.voice)
            job.voice = None
        elif job.ticket is not None:
            self.bank.cancel(job.ticket)
        if job in self.jobs:
            self.jobs.remove(job)
        self._last_cancel_check.pop(id(job), None)
        with self._count_lock:
            self._pending -= 1
        if error is None:
            self.stats.completed += 1
            return
        if error.code == "CANCELLED":
            self.stats.cancelled += 1
        else:
            self.stats.failed += 1
        try:
            job.sink.fail(error)
        except Exception:  # the client may be gone already
            log.debug("could not deliver the error of %s", job.request.request_id, exc_info=True)

    def _check_cancelled(self) -> None:
        now = time.monotonic()
        for job in list(self.jobs):
            last = self._last_cancel_check.get(id(job), 0.0)
            if now - last < self.config.cancel_check_s:
                continue
            self._last_cancel_check[id(job)] = now
            try:
                gone = job.sink.cancelled()
            except Exception:
                gone = True
            if gone:
                log.info("request %s cancelled by the client", job.request.request_id)
                self._close(job, ServeError("CANCELLED", "request cancelled by the client"))

    def evict(self, voice: VoiceId, *, revoked: bool) -> int:
        """Drop a voice from the bank (scheduler thread; use `call`). Requests speaking a revoked
        voice are ended with an error. Returns how many requests were ended."""
        in_use = self.bank.evict(voice, revoked=revoked)
        ended = 0
        if revoked:
            for job in list(self.jobs):
                if job.voice is not None and job.voice in in_use:
                    self._close(job, ServeError("NOT_FOUND", f"voice {voice} was revoked; synthesis stopped"))
                    ended += 1
        return ended

    # -- voices ------------------------------------------------------------------------------------

    def _resolve_voices(self) -> None:
        for job in list(self.jobs):
            if job.ready or job.request.voice is None:
                continue
            if job.ticket is None:
                job.ticket = self.bank.acquire(job.request.voice)
            ticket = job.ticket
            if ticket.error is not None:
                self._close(job, from_exception(ticket.error, f"voice {job.request.voice}"))
            elif ticket.voice is not None:
                job.voice = ticket.voice
                job.prompt, job.ge, job.slot = ticket.voice.prompt, ticket.voice.ge, ticket.voice.slot

    def _prepare_references(self) -> None:
        todo = [j for j in self.jobs if j.reference is not None and not j.ready]
        if not todo:
            return
        # SSL features and the reference encoder normalise over time: one call per length.
        by_len: dict[int, list[Job]] = {}
        for job in todo:
            assert job.reference is not None
            by_len.setdefault(job.reference.wav16k.size, []).append(job)
        for n, group in by_len.items():
            try:
                wavs = np.stack([j.reference.wav16k for j in group if j.reference is not None])
                codes, lens = self.runtime.semantic_codes(wavs, np.full(len(group), n, np.int64))
                for job, c, m in zip(group, codes, lens):
                    assert job.reference is not None
                    job.prompt = reference_prompt(job.reference, c[: int(m)])
            except Exception as exc:
                log.exception("zero-shot reference failed")
                for job in group:
                    self._close(job, from_exception(exc, "zero-shot reference"))
        by_frames: dict[int, list[Job]] = {}
        for job in todo:
            if not job.closed and job.reference is not None:
                by_frames.setdefault(job.reference.refer_spec.shape[1], []).append(job)
        for frames, group in by_frames.items():
            try:
                specs = np.stack([j.reference.refer_spec for j in group if j.reference is not None])
                ge = self.runtime.ref_embedding(
                    specs, np.full(len(group), frames, np.int64), np.zeros(len(group), np.int64)
                )
                for job, g in zip(group, ge):
                    job.ge, job.slot = g, 0
            except Exception as exc:
                log.exception("zero-shot reference embedding failed")
                for job in group:
                    self._close(job, from_exception(exc, "zero-shot reference"))

    # -- admission and prefill ------------------------------------------------------------------

    def _admit(self) -> None:
        free = [i for i, r in enumerate(self.rows) if r is None]
        if not free:
            return
        running = sum(1 for j in self.jobs if j.next_segment > 0)
        new: list[SegmentRow] = []
        for job in list(self.jobs):
            if not free:
                break
            if not job.ready or job.closed or not job.wants_rows():
                continue
            if job.next_segment == 0:
                if self.config.max_active and running >= self.config.max_active:
                    continue
                running += 1
            try:
                while free and job.wants_rows():
                    new.append(self._make_row(job, free.pop(0)))
            except ServeError as exc:
                for row in [r for r in new if r.job is job]:
                    free.insert(0, row.cache_row)
                new = [r for r in new if r.job is not job]
                self._close(job, exc)
        if new:
            self._prefill(new)

    def _make_row(self, job: Job, cache_row: int) -> SegmentRow:
        assert job.prompt is not None
        params = job.request.params
        index = job.next_segment
        seg = job.segments[index]
        prompt_len = int(job.prompt.semantic.shape[0])
        text_len = int(job.prompt.phone_ids.shape[0]) + len(seg.ids)
        need = text_len + prompt_len + params.max_new_tokens - 1
        if need > self.config.max_context:
            raise invalid(
                f"segment {index + 1} needs {need} positions (phones + reference prompt + max_new_tokens "
                f"{params.max_new_tokens}); this server holds {self.config.max_context}: lower max_new_tokens "
                "or split the text",
            )
        sampling = params.sampling(segment_seed(job.request.seed, index))
        planner = (
            ChunkPlanner(job.request.stream_config, params.speed, self.hop, self.receptive)
            if job.request.stream
            else None
        )
        row = SegmentRow(
            job=job,
            index=index,
            phone_ids=list(seg.ids),
            sampling=sampling,
            generator=sampling.make_generator("cpu"),
            text_len=text_len,
            prompt_len=prompt_len,
            cache_row=cache_row,
            planner=planner,
        )
        job.next_segment += 1
        job.live += 1
        return row

    def _prefill(self, new: list[SegmentRow]) -> None:
        t0 = time.perf_counter()
        requests = []
        for row in new:
            job, prompt = row.job, row.job.prompt
            assert prompt is not None
            seg = job.segments[row.index]
            requests.append(
                GenerationRequest(
                    phones=torch.cat([prompt.phone_ids, torch.tensor(seg.ids, dtype=torch.long)]),
                    bert=torch.cat([prompt.bert, torch.from_numpy(seg.bert)], dim=1),
                    prompt=prompt.semantic,
                    params=row.sampling,
                )
            )
        try:
            phones, phone_lens, bert, prompt_t, prompt_lens = collate(
                requests, self.model_config.gpt, torch.device("cpu")
            )
            logits, lengths = self.runtime.gpt_prefill(
                phones.numpy(),
                phone_lens.numpy(),
                bert.numpy(),
                prompt_t.numpy(),
                prompt_lens.numpy(),
                np.array([r.job.slot for r in new], np.int64),
                np.array([r.cache_row for r in new], np.int64),
            )
        except Exception as exc:
            log.exception("prefill failed")
            for job in {id(r.job): r.job for r in new}.values():
                self._close(job, from_exception(exc, "prefill"))
            return
        index = torch.tensor([r.cache_row for r in new])
        self.logits[index] = torch.from_numpy(np.asarray(logits, np.float32))
        self.seen[index] = False
        for row, req, n in zip(new, requests, lengths.tolist()):
            row.length = int(n)
            self.seen[row.cache_row, req.prompt.long()] = True
            self.rows[row.cache_row] = row
        self.stats.prefills += 1
        self.stats.prefill_s += time.perf_counter() - t0

    # -- decode ------------------------------------------------------------------------------------

    def _step(self) -> list[_Acoustic]:
        active = [r for r in self.rows if r is not None and not r.finished]
        if not active:
            return []
        t0 = time.perf_counter()
        self.stats.max_rows_seen = max(self.stats.max_rows_seen, len(active))
        index = torch.tensor([r.cache_row for r in active])
        blocked = torch.tensor([len(r.tokens) < r.sampling.min_new_tokens for r in active])
        tokens, stop = sample_next(
            self.logits[index],
            self.seen[index],
            [r.sampling for r in active],
            [r.generator for r in active],
            blocked,
            self.eos,
        )
        emitted = ~stop
        self.seen[index[emitted], tokens[emitted]] = True
        work: list[_Acoustic] = []
        going: list[SegmentRow] = []
        for row, tok, st in zip(active, tokens.tolist(), stop.tolist()):
            if st:
                self._finish_row(row, work)
                continue
            row.tokens.append(int(tok))
            self.stats.tokens += 1
            if row.planner is not None:
                upto = row.planner.due(len(row.tokens))
                if upto is not None:
                    plan = row.planner.plan(len(row.tokens), upto)
                    if plan is not None:
                        work.append(_Acoustic(row, len(row.tokens), False, plan))
            if len(row.tokens) >= row.sampling.max_new_tokens:
                self._finish_row(row, work)
            else:
                going.append(row)
        if going:
            try:
                logits = self.runtime.gpt_decode(
                    np.array([r.tokens[-1] for r in going], np.int64),
                    np.array([r.prompt_len + len(r.tokens) - 1 for r in going], np.int64),
                    np.array([r.length for r in going], np.int64),
                    np.array([r.cache_row for r in going], np.int64),
                    np.array([r.job.slot for r in going], np.int64),
                )
            except Exception as exc:
                log.exception("decode step failed")
                for job in {id(r.job): r.job for r in going}.values():
                    self._close(job, from_exception(exc, "decode"))
                return [w for w in work if not w.row.job.closed]
            index = torch.tensor([r.cache_row for r in going])
            self.logits[index] = torch.from_numpy(np.asarray(logits, np.float32))
            for row in going:
                row.length += 1
        self.stats.steps += 1
        self.stats.decode_s += time.perf_counter() - t0
        return work

    def _finish_row(self, row: SegmentRow, work: list[_Acoustic]) -> None:
        row.finished = True
        self.rows[row.cache_row] = None  # the cache row is free; the tokens live on in `row`
        n = len(row.tokens)
        if row.planner is None:
            total = latent_frames(n, row.job.request.params.speed) if n else 0
            work.append(_Acoustic(row, n, True, ChunkPlan(Window(0, total, 0, total), total * self.hop, n)))
            return
        work.append(_Acoustic(row, n, True, row.planner.plan(n, None)))

    # -- acoustics ---------------------------------------------------------------------------------

    def _acoustics(self, work: list[_Acoustic]) -> None:
        t0 = time.perf_counter()
        batch = self.config.acoustic_batch
        latents: dict[tuple[int, int], np.ndarray] = {}  # (id(row), n_tokens) -> z [inter, frames]
        needed: dict[tuple[int, int], _Acoustic] = {}
        for w in work:
            if w.plan is not None and w.plan.window.end > w.plan.window.start and not w.row.job.closed:
                needed.setdefault((id(w.row), w.n_tokens), w)
        keys = list(needed)
        for start in range(0, len(keys), batch):
            group = [needed[k] for k in keys[start : start + batch]]
            try:
                for w, z in zip(group, self._sovits(group)):
                    latents[(id(w.row), w.n_tokens)] = z
            except Exception as exc:
                log.exception("SoVITS failed")
                for job in {id(w.row.job): w.row.job for w in group}.values():
                    self._close(job, from_exception(exc, "SoVITS"))
        windows = [
            w
            for w in work
            if w.plan is not None and (id(w.row), w.n_tokens) in latents and not w.row.job.closed
        ]
        audio: dict[int, np.ndarray] = {}
        for start in range(0, len(windows), batch):
            group = windows[start : start + batch]
            try:
                for w, a in zip(group, self._vocode(group, latents)):
                    audio[id(w)] = a
            except Exception as exc:
                log.exception("vocoder failed")
                for job in {id(w.row.job): w.row.job for w in group}.values():
                    self._close(job, from_exception(exc, "vocoder"))
        for w in work:  # in order: per row, chunks are applied as they were planned
            if w.row.job.closed:
                continue
            self._deliver(w, audio.get(id(w), np.zeros(0, np.float32)))
        self.stats.acoustic_s += time.perf_counter() - t0

    def _sovits(self, group: list[_Acoustic]) -> list[np.ndarray]:
        B = len(group)
        n_tok = [w.n_tokens for w in group]
        n_ph = [len(w.row.phone_ids) for w in group]
        speed = np.array([w.row.job.request.params.speed for w in group], np.float64)
        frames = [latent_frames(n, float(s)) for n, s in zip(n_tok, speed)]
        codes = np.zeros((B, max(n_tok)), np.int64)
        phones = np.zeros((B, max(n_ph)), np.int64)
        noise = np.zeros((B, self.inter, max(frames)), np.float32)
        ge = np.stack([w.row.job.ge for w in group if w.row.job.ge is not None])
        for b, w in enumerate(group):
            codes[b, : n_tok[b]] = w.row.tokens[: n_tok[b]]
            phones[b, : n_ph[b]] = w.row.phone_ids
            noise[b, :, : frames[b]] = latent_noise(
                w.row.seed ^ NOISE_SEED_SALT, self.inter, frames[b]
            ).numpy()
        z, out_frames = self.runtime.sovits(
            codes,
            np.array(n_tok, np.int64),
            phones,
            np.array(n_ph, np.int64),
            ge,
            noise,
            np.array([w.row.job.request.params.noise_scale for w in group], np.float32),
            speed,
            np.array([w.row.job.slot for w in group], np.int64),
        )
        self.stats.sovits_calls += 1
        out = []
        for b in range(B):
            if int(out_frames[b]) != frames[b]:
                raise RuntimeError(
                    f"SoVITS made {int(out_frames[b])} frames for a row that needs {frames[b]}"
                )
            out.append(np.asarray(z[b, :, : frames[b]], np.float32))
        return out

    def _vocode(self, group: list[_Acoustic], latents: dict[tuple[int, int], np.ndarray]) -> list[np.ndarray]:
        windows = [w.plan.window for w in group if w.plan is not None]
        widths = np.array([win.width for win in windows], np.int64)
        z = np.zeros((len(group), self.inter, int(widths.max())), np.float32)
        for b, (w, win) in enumerate(zip(group, windows)):
            z[b, :, : win.width] = latents[(id(w.row), w.n_tokens)][:, win.lo : win.hi]
        ge = np.stack([w.row.job.ge for w in group if w.row.job.ge is not None])
        slots = np.array([w.row.job.slot for w in group], np.int64)
        uniform = bool((widths == widths[0]).all())
        audio = self.runtime.vocoder(z, ge, slots, None if uniform else widths)
        self.stats.vocoder_calls += 1
        return [win.cut(audio[b, : win.width * self.hop], self.hop) for b, win in enumerate(windows)]

    def _deliver(self, w: _Acoustic, audio: np.ndarray) -> None:
        row, job = w.row, w.row.job
        params = job.request.params
        last_segment = row.index == len(job.segments) - 1
        silence = np.zeros(int(params.fragment_interval * SAMPLE_RATE), np.float32)
        if row.planner is not None:  # streaming
            chunk = row.planner.apply(w.plan, audio) if w.plan is not None else np.zeros(0, np.float32)
            if w.final and not last_segment:
                chunk = np.concatenate([chunk, silence])
            if chunk.size or (w.final and last_segment):
                self._send(job, chunk, final=w.final and last_segment)
        else:
            job.pieces[row.index] = audio
        if not w.final:
            return
        job.live -= 1
        job.done_segments += 1
        if job.done_segments < len(job.segments):
            return
        if not job.request.stream:
            parts: list[np.ndarray] = []
            for i in range(len(job.segments)):
                if i:
                    parts.append(silence)
                parts.append(job.pieces[i])
            self._send(job, clip_audio(np.concatenate(parts)), final=True)
        self._close(job)

    def _send(self, job: Job, audio: np.ndarray, final: bool) -> None:
        if job.first_audio is None:
            job.first_audio = time.monotonic()
        try:
            job.sink.send(audio, final)
        except Exception as exc:  # the client went away mid-stream
            log.info("request %s: sending failed (%s); ending it", job.request.request_id, exc)
            self._close(job, ServeError("CANCELLED", f"response could not be delivered: {exc}"))
