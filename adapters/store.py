"""The local content-addressed adapter store: ``<root>/sha256/<manifest sha256>/``.

A directory is only ever visible complete and verified: fetches go to a private temporary
directory on the same filesystem, are verified against the expected content hash, and are
renamed into place under a per-content file lock. Two processes asking for the same
adapter at once therefore download it once (the second waits on the lock, then finds it)
and neither can observe a half-written copy. Removal renames the directory away first, so
readers see it either whole or gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from adapters.errors import AdapterFormatError
from adapters.format import DATA_FILES, MANIFEST_FILE, verify_adapter_dir
from adapters.names import check_sha256
from tritone.config import data_dir

Fetch = Callable[[Path], None]


def default_store_root() -> Path:
    return data_dir() / "adapters" / "store"


class AdapterStore:
    """Verified adapter directories on local disk, keyed by content hash."""

    def __init__(self, root: str | Path | None = None, lock_timeout_s: float = 600.0) -> None:
        self.root = Path(root) if root is not None else default_store_root()
        self.lock_timeout_s = lock_timeout_s
        for sub in ("sha256", "locks", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def path_for(self, content_sha256: str) -> Path:
        return self.root / "sha256" / check_sha256(content_sha256, "content sha256")

    def _lock(self, content_sha256: str) -> FileLock:
        return FileLock(str(self.root / "locks" / f"{content_sha256}.lock"), timeout=self.lock_timeout_s)

    def _tmpdir(self) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=self.root / "tmp"))

    def contains(self, content_sha256: str) -> bool:
        return self.path_for(content_sha256).is_dir()

    def verify(self, content_sha256: str) -> bool:
        """Whether the stored copy is present and still matches its hashes."""
        path = self.path_for(content_sha256)
        if not path.is_dir():
            return False
        try:
            verify_adapter_dir(path, expect_content_sha256=content_sha256)
        except AdapterFormatError:
            return False
        return True

    def ensure(self, content_sha256: str, fetch: Fetch, *, verify_existing: bool = True) -> Path:
        """The local path of ``content_sha256``, fetching it with ``fetch(tmp_dir)`` if absent.

        ``fetch`` fills an empty directory; the result must verify against the content hash
        (IntegrityError / AdapterFormatError otherwise, and nothing is stored). A present copy
        that fails verification (disk corruption, tampering) is discarded and fetched again.
        """
        final = self.path_for(content_sha256)
        if final.is_dir() and (not verify_existing or self.verify(content_sha256)):
            return final
        with self._lock(content_sha256):
            if final.is_dir():
                if not verify_existing or self.verify(content_sha256):
                    return final  # another process finished it while we waited
                self._discard(final)
            tmp = self._tmpdir()
            try:
                fetch(tmp)
                verify_adapter_dir(tmp, expect_content_sha256=content_sha256)
                os.rename(tmp, final)  # atomic: same filesystem, destination absent
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def put(self, source_dir: str | Path) -> tuple[str, Path]:
        """Copy a local adapter directory into the store; returns (content sha256, stored path)."""
        _, content = verify_adapter_dir(source_dir)

        def copy(dst: Path) -> None:
            for name in (*DATA_FILES, MANIFEST_FILE):  # only what the manifest covers
                shutil.copy2(Path(source_dir) / name, dst / name)

        return content, self.ensure(content, copy)

    def _discard(self, path: Path) -> None:
        trash = self._tmpdir()
        os.rename(path, trash / "old")  # disappears atomically for readers, then is deleted
        shutil.rmtree(trash, ignore_errors=True)

    def remove(self, content_sha256: str) -> bool:
        """Delete a stored adapter; returns whether it was there."""
        final = self.path_for(content_sha256)
        with self._lock(content_sha256):
            if not final.is_dir():
                return False
            self._discard(final)
        return True

    def list(self) -> list[str]:
        return sorted(p.name for p in (self.root / "sha256").iterdir() if p.is_dir())
