"""`_Spool`: a subscriber assembles a publication's chunks on disk, hashing as they come."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


class _Spool:
    """The chunks of one publication received so far, written in place into a sparse file.

    In-order chunks also feed a running SHA-256, so a complete artifact is usually verified
    without reading it back. Chunk checksums are checked only when needed (a repeated chunk, or an
    artifact whose SHA-256 does not match, to name the corrupt chunks): hashing every chunk twice
    would double the subscriber's CPU per byte."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.extents: dict[int, tuple[int, int]] = {}  # index -> (offset, length)
        self.checksums: dict[int, str] = {}  # index -> the chunk's SHA-256 (hex) from its header
        self.hasher = hashlib.sha256()
        self.hashed = 0  # bytes [0, hashed) are in `hasher`
        self.pending: dict[int, int] = {}  # offset -> length, written beyond `hashed`

    def write(self, index: int, offset: int, data: memoryview, checksum: str) -> bool:
        """Writes chunk ``index``; False for a duplicate (the first good copy wins)."""
        if index in self.extents:
            if self.chunk_ok(index) or hashlib.sha256(data).hexdigest() != checksum:
                return False
            # The first copy was corrupt and this one is good: it replaces it, and the running
            # hash, which may hold the bad copy, is recomputed from the file.
            self.extents[index] = (offset, len(data))
            self.checksums[index] = checksum
            os.pwrite(self.fd, data, offset)
            self.hasher, self.hashed = hashlib.sha256(), 0
            self.pending = dict(self.extents.values())
            self._catch_up()
            return False
        self.extents[index] = (offset, len(data))
        self.checksums[index] = checksum
        os.pwrite(self.fd, data, offset)
        if offset == self.hashed:
            self.hasher.update(data)
            self.hashed += len(data)
            self._catch_up()
        elif offset > self.hashed:
            self.pending[offset] = len(data)
        return True

    def chunk_ok(self, index: int) -> bool:
        offset, length = self.extents[index]
        return hashlib.sha256(os.pread(self.fd, length, offset)).hexdigest() == self.checksums[index]

    def corrupt_chunks(self) -> list[int]:
        """The chunks whose bytes do not match their own checksum."""
        return [i for i in sorted(self.extents) if not self.chunk_ok(i)]

    def _catch_up(self) -> None:
        while self.hashed in self.pending:
            length = self.pending.pop(self.hashed)
            self.hasher.update(os.pread(self.fd, length, self.hashed))
            self.hashed += length

    def problem(self, size: int, chunks: int) -> str | None:
        """Why the received chunks do not make up the artifact, or None if they do."""
        missing = [i for i in range(chunks) if i not in self.extents]
        if missing:
            return f"chunks missing: {missing[:10]}{' ...' if len(missing) > 10 else ''}"
        position = 0
        for i in range(chunks):
            offset, length = self.extents[i]
            if offset != position:
                return f"chunk {i} starts at byte {offset}, expected {position}"
            position += length
        if position != size:
            return f"chunks hold {position} bytes, the manifest says {size}"
        return None

    def sha256(self, size: int) -> str:
        # Out-of-order chunks beyond the running hash are read back from disk in bounded steps.
        step = 8 << 20
        while self.hashed < size:
            data = os.pread(self.fd, min(step, size - self.hashed), self.hashed)
            if not data:
                break
            self.hasher.update(data)
            self.hashed += len(data)
        return self.hasher.copy().hexdigest()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
