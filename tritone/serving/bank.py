"""The resident adapter bank: which voice sits in which LoRA slot of the runtime.

An LRU slot manager with pinning, in the manner of vLLM's `LRUCacheWorkerLoRAManager`:

- Slot 0 is the base voice and is never assigned; slots 1..S-1 hold voices.
- `acquire(key)` returns a `Ticket`. A resident voice completes it at once (pinned). A missing
  one is loaded on a worker thread (registry resolve, download into the local store, hash and
  base-pin verification, tensor reads: everything slow), while the scheduler keeps decoding;
  `poll()` (scheduler thread, between steps) installs finished loads into a free slot or the
  least recently used unpinned one, computes the voice's reference embedding once, and
  completes the waiting tickets. A failed load fails its tickets only.
- A pinned voice (some request is using it) is never evicted; a voice no free or unpinned slot
  can take waits in `ready` until one is released.
- `evict(voice, revoked=True)` drops every version of a revoked voice: unpinned slots are
  cleared at once, pinned ones when released (the scheduler ends their requests), loads in
  flight are discarded, and later requests are refused.

Everything except the loader runs on the scheduler thread, which is also the only thread that
calls the runtime, so slot writes never race a forward pass.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from adapters.errors import VoiceRevoked
from adapters.names import VoiceId
from tritone.serving.request import VoiceKey

if TYPE_CHECKING:
    from adapters.format import Adapter
    from tritone.voice import VoicePrompt

log = logging.getLogger(__name__)


class BankRuntime(Protocol):
    """What the bank needs from a `tritone.serving.runtime.Runtime`."""

    bank_size: int

    def load_adapter(self, slot: int, adapter: Adapter) -> None: ...

    def clear_slot(self, slot: int) -> None: ...

    def ref_embedding(
        self, refer_spec: np.ndarray, spec_lens: np.ndarray, slots: np.ndarray
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class LoadedVoice:
    """A verified adapter read from the store, ready to install (`key.version` is concrete)."""

    key: VoiceKey
    adapter: Adapter


Loader = Callable[[VoiceKey], LoadedVoice]


@dataclass(eq=False)
class ResidentVoice:
    key: VoiceKey
    slot: int
    prompt: VoicePrompt
    ge: np.ndarray  # [gin, 1]: the voice's reference embedding, computed with its own slot
    content_sha256: str
    pins: int = 0
    doomed: bool = False  # evict when the last pin is released


@dataclass(eq=False)
class Ticket:
    """A request's claim on a voice: completed with a pinned `voice` or with an `error`."""

    key: VoiceKey
    voice: ResidentVoice | None = None
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.voice is not None or self.error is not None


@dataclass
class BankStats:
    loads: int = 0
    load_failures: int = 0
    hits: int = 0
    evictions: int = 0
    revocations: int = 0


@dataclass(eq=False)
class _Load:
    key: VoiceKey
    future: Future[LoadedVoice]
    tickets: list[Ticket] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


class AdapterBank:
    """LRU adapter slots with pinning and background loading (see the module docstring)."""

    def __init__(self, runtime: BankRuntime, loader: Loader, *, workers: int = 2) -> None:
        if runtime.bank_size < 2:
            raise ValueError("the runtime's bank needs at least 2 slots (slot 0 is the base voice)")
        self.runtime = runtime
        self.loader = loader
        self.capacity = runtime.bank_size - 1
        self._free: list[int] = list(range(runtime.bank_size - 1, 0, -1))  # pop() gives slot 1 first
        self._resident: OrderedDict[VoiceKey, ResidentVoice] = OrderedDict()  # LRU first
        self._loads: dict[VoiceKey, _Load] = {}  # requested key (version may be None) -> load
        self._ready: list[tuple[LoadedVoice, list[Ticket]]] = []  # loaded, waiting for a slot
        self._revoked: set[VoiceId] = set()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tritone-adapter-load")
        self._wake: Callable[[], None] = lambda: None
        self.stats = BankStats()

    # -- queries -------------------------------------------------------------------------------

    def on_load_done(self, wake: Callable[[], None]) -> None:
        """Call `wake()` (from the loader thread) whenever a load finishes."""
        self._wake = wake

    @property
    def resident(self) -> list[ResidentVoice]:
        return list(self._resident.values())

    @property
    def loading(self) -> int:
        return len(self._loads) + len(self._ready)

    @property
    def waiting_for_slot(self) -> int:
        """Loaded voices waiting for a slot to be released."""
        return len(self._ready)

    def slot_of(self, key: VoiceKey) -> int | None:
        voice = self._resident.get(key)
        return voice.slot if voice is not None else None

    def is_revoked(self, voice: VoiceId) -> bool:
        return voice in self._revoked

    # -- acquire / release -----------------------------------------------------------------------

    def acquire(self, key: VoiceKey) -> Ticket:
        """Claim `key` (scheduler thread). The ticket completes now or in a later `poll()`."""
        ticket = Ticket(key)
        if key.voice in self._revoked:
            ticket.error = VoiceRevoked(f"voice {key.voice} is revoked; it can no longer be served")
            return ticket
        if key.version is not None:
            resident = self._resident.get(key)
            if resident is not None and not resident.doomed:
                self._pin(ticket, resident)
                self.stats.hits += 1
                return ticket
        load = self._loads.get(key)
        if load is None:
            load = _Load(key, self._pool.submit(self.loader, key))
            load.future.add_done_callback(lambda _f: self._wake())
            self._loads[key] = load
        load.tickets.append(ticket)
        return ticket

    def release(self, voice: ResidentVoice) -> None:
        """Drop one pin; a doomed voice is cleared from its slot when the last pin goes."""
        voice.pins -= 1
        if voice.pins < 0:
            raise RuntimeError(f"voice {voice.key} released more often than acquired")
        if voice.pins == 0 and voice.doomed:
            self._drop(voice)

    def cancel(self, ticket: Ticket) -> None:
        """Forget a pending ticket (its request went away); a completed one is released."""
        if ticket.voice is not None:
            self.release(ticket.voice)
            ticket.voice = None
            return
        for load in self._loads.values():
            if ticket in load.tickets:
                load.tickets.remove(ticket)
        for _, tickets in self._ready:
            if ticket in tickets:
                tickets.remove(ticket)

    def _pin(self, ticket: Ticket, voice: ResidentVoice) -> None:
        voice.pins += 1
        self._resident.move_to_end(voice.key)
        ticket.voice = voice

    # -- loading -------------------------------------------------------------------------------

    def poll(self) -> bool:
        """Install finished loads and complete tickets (scheduler thread). True if anything changed."""
        changed = False
        for key, load in list(self._loads.items()):
            if not load.future.done():
                continue
            del self._loads[key]
            changed = True
            try:
                loaded = load.future.result()
            except Exception as exc:
                self.stats.load_failures += 1
                log.warning("loading voice %s failed: %s", key, exc)
                for ticket in load.tickets:
                    ticket.error = exc
                continue
            self.stats.loads += 1
            if loaded.key.voice in self._revoked:
                for ticket in load.tickets:
                    ticket.error = VoiceRevoked(
                        f"voice {loaded.key.voice} is revoked; it can no longer be served"
                    )
                continue
            self._ready.append((loaded, load.tickets))
        still: list[tuple[LoadedVoice, list[Ticket]]] = []
        for loaded, tickets in self._ready:
            tickets = [t for t in tickets if not t.done]
            if not tickets:
                changed = True
                continue
            resident = self._resident.get(loaded.key)
            if resident is not None and not resident.doomed:
                for ticket in tickets:
                    self._pin(ticket, resident)
                changed = True
                continue
            try:
                resident = self._install(loaded)
            except Exception as exc:
                self.stats.load_failures += 1
                log.warning("installing voice %s failed: %s", loaded.key, exc)
                for ticket in tickets:
                    ticket.error = exc
                changed = True
                continue
            if resident is None:  # every slot is pinned: wait for a release
                still.append((loaded, tickets))
                continue
            for ticket in tickets:
                self._pin(ticket, resident)
            changed = True
        self._ready = still
        return changed

    def _take_slot(self) -> int | None:
        if self._free:
            return self._free.pop()
        for voice in self._resident.values():  # least recently used first
            if voice.pins == 0:
                self.stats.evictions += 1
                log.info("evicting voice %s from slot %d (LRU)", voice.key, voice.slot)
                del self._resident[voice.key]
                return voice.slot
        return None

    def _install(self, loaded: LoadedVoice) -> ResidentVoice | None:
        slot = self._take_slot()
        if slot is None:
            return None
        adapter = loaded.adapter
        try:
            self.runtime.load_adapter(slot, adapter)  # refuses (slot untouched) on pin/target mismatch
            spec = adapter.prompt.refer_spec.float().numpy()[None]
            ge = self.runtime.ref_embedding(
                spec, np.array([spec.shape[2]], np.int64), np.array([slot], np.int64)
            )
        except BaseException:
            self.runtime.clear_slot(slot)
            self._free.append(slot)
            raise
        voice = ResidentVoice(loaded.key, slot, adapter.prompt, ge[0], adapter.content_sha256)
        self._resident[loaded.key] = voice
        log.info("voice %s resident in slot %d", loaded.key, slot)
        return voice

    # -- eviction --------------------------------------------------------------------------------

    def evict(self, voice: VoiceId, *, revoked: bool) -> list[ResidentVoice]:
        """Drop every resident version of `voice`; returns the pinned ones (still in use, doomed).

        `revoked=True` also refuses the voice from now on and discards its loads in flight.
        """
        if revoked:
            self._revoked.add(voice)
            self.stats.revocations += 1
            for load in self._loads.values():
                if load.key.voice == voice:
                    for ticket in load.tickets:
                        ticket.error = VoiceRevoked(f"voice {voice} is revoked; it can no longer be served")
                    load.tickets.clear()
            for loaded, tickets in self._ready:
                if loaded.key.voice == voice:
                    for ticket in tickets:
                        ticket.error = VoiceRevoked(f"voice {voice} is revoked; it can no longer be served")
        in_use: list[ResidentVoice] = []
        for resident in [r for r in self._resident.values() if r.key.voice == voice]:
            resident.doomed = True
            if resident.pins:
                in_use.append(resident)
            else:
                self._drop(resident)
        return in_use

    def _drop(self, voice: ResidentVoice) -> None:
        if self._resident.get(voice.key) is voice:
            del self._resident[voice.key]
        self.runtime.clear_slot(voice.slot)
        self._free.append(voice.slot)
        self.stats.evictions += 1
        log.info("voice %s cleared from slot %d", voice.key, voice.slot)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
