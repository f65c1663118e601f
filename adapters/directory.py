"""Voices served from a folder of adapter directories, without a registry.

For a fixed set of voices baked into an image, an air-gapped machine, or a benchmark: set
`TRITONE_VOICES_DIR` (the `tts` model's `voices_dir`) to a folder laid out as

    <voices_dir>/<tenant>.<name>/      an adapter directory (manifest.json + its files)

Each voice has exactly one version, 1, which every alias names (`acme.alice`,
`acme.alice@production` and `acme.alice/1` are the same adapter); another version number is
unknown. Nothing here talks to MLflow: promotion, rollback and the change feed do not exist for
such voices. A revocation (the `tts` model's `revoke` control) holds until the process ends;
delete the folder to make it permanent.

`resolve` answers with what `AdapterRegistry.resolve` answers (the voice, its version, the
directory and the manifest's content address), so the serving stack treats both alike. The
voice reference is validated by `parse_voice_ref` before it names a path, so no request can
reach outside the folder.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from adapters.errors import VoiceNotFound, VoiceRevoked
from adapters.format import MANIFEST_FILE, read_manifest
from adapters.names import DEFAULT_TENANT, VoiceId, VoiceRef, parse_voice_id, parse_voice_ref

DIRECTORY_VERSION = 1


@dataclass(frozen=True)
class DirectoryVoice:
    """One voice of the folder: the fields the serving stack reads from a resolution."""

    voice: VoiceId
    version: int
    path: Path
    content_sha256: str


class VoiceDirectory:
    """Resolves `[tenant.]name[@alias|/1]` to `<root>/<tenant>.<name>/` (see the module docstring)."""

    def __init__(self, root: str | Path, default_tenant: str = DEFAULT_TENANT) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"voices directory {self.root} does not exist")
        self.default_tenant = default_tenant
        self._revoked: set[VoiceId] = set()
        self._lock = threading.Lock()

    def voices(self) -> list[VoiceId]:
        """Every voice in the folder (sub-folders whose name is a valid `tenant.name`)."""
        found = []
        for child in sorted(self.root.iterdir()):
            try:
                vid = parse_voice_id(child.name, self.default_tenant)
            except ValueError:
                continue
            if str(vid) == child.name and (child / MANIFEST_FILE).is_file():
                found.append(vid)
        return found

    def resolve(self, ref: str | VoiceRef) -> DirectoryVoice:
        parsed = ref if isinstance(ref, VoiceRef) else parse_voice_ref(ref, self.default_tenant)
        vid = parsed.voice
        with self._lock:
            if vid in self._revoked:
                raise VoiceRevoked(f"voice {vid} is revoked; it can no longer be served")
        if parsed.version is not None and parsed.version != DIRECTORY_VERSION:
            raise VoiceNotFound(
                f"{vid}/{parsed.version}: a voices directory holds version {DIRECTORY_VERSION} only"
            )
        path = self.root / str(vid)  # tenant and name are checked names: no separators, no dots
        if not (path / MANIFEST_FILE).is_file():
            raise VoiceNotFound(f"voice {vid} is not in the voices directory {self.root}")
        _, content_sha256 = read_manifest(path)
        return DirectoryVoice(vid, DIRECTORY_VERSION, path, content_sha256)

    def forget(self, voice: str | VoiceId) -> int:
        """Refuse the voice from now on (a revocation, for the life of this process)."""
        vid = voice if isinstance(voice, VoiceId) else parse_voice_id(voice, self.default_tenant)
        with self._lock:
            self._revoked.add(vid)
        return 0

    def invalidate(self, voice: str | VoiceId | None = None) -> None:
        """Nothing is cached: every resolve reads the folder."""
        return None
