"""Atomic file writes: a reader, or a process killed at any instant, sees the old file or the new one, never a torn one.

Each write goes to a unique temporary file in the same directory, is flushed and fsync-ed, then renamed over the
target with ``os.replace`` (atomic on POSIX file systems).
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FILE_MODE = 0o644  # what a plain open() gives under the usual umask; mkstemp alone would make the file private


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, creating its directory if needed."""
    write_chunks_atomic(path, (data,))


def write_chunks_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    """Replace ``path`` atomically with the concatenated ``chunks`` (e.g. a download, streamed), creating its
    directory if needed; if the iteration raises, ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(descriptor, FILE_MODE)
        with os.fdopen(descriptor, "wb") as tmp:
            for chunk in chunks:
                tmp.write(chunk)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with UTF-8 ``text`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, obj: Any, indent: int | None = None) -> None:
    """Replace ``path`` with ``obj`` as JSON atomically: compact (byte-stable) by default, indented on request."""
    separators = (",", ":") if indent is None else (",", ": ")
    write_text_atomic(path, json.dumps(obj, indent=indent, separators=separators))
