"""A folder version as one tar archive, streamed in constant memory with an exact length.

Tar, not zip: a tar stream needs no central directory at the end, so each file is read once, in
order, straight from the registry, and the archive's length is known before the first byte (the
headers are fixed-size blocks), so downloads carry Content-Length. POSIX (pax) headers keep long
and non-ASCII paths exact; `tar -xf` and Python's tarfile read it.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from typing import BinaryIO

from modelrepo.commands.versions import Manifest, ManifestEntry
from modelrepo.ports import iter_chunks

BLOCK = tarfile.BLOCKSIZE
END = b"\0" * (2 * BLOCK)

Opener = Callable[[ManifestEntry], AbstractContextManager[BinaryIO]]


def _header(entry: ManifestEntry, mtime: datetime) -> bytes:
    info = tarfile.TarInfo(entry.path)
    info.size = entry.size
    info.mode = 0o444
    info.mtime = int(mtime.timestamp())
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def length(manifest: Manifest, mtime: datetime) -> int:
    return sum(len(_header(e, mtime)) + e.size + len(_padding(e.size)) for e in manifest.files) + len(END)


def stream(manifest: Manifest, mtime: datetime, open_file: Opener) -> Iterator[bytes]:
    """The archive's bytes; each file's size is checked against its manifest as it streams."""
    for entry in manifest.files:
        yield _header(entry, mtime)
        sent = 0
        with open_file(entry) as source:
            for chunk in iter_chunks(source, 256 * 1024):
                sent += len(chunk)
                yield chunk
        if sent != entry.size:
            raise OSError(f"{entry.path} held {sent} bytes, its manifest says {entry.size}")
        yield _padding(entry.size)
    yield END
