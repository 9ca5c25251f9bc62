"""Content ids: a short, stable hash of a JSON-serialisable object (keys sorted), for unit ids and caches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def content_id(obj) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


_FILE_HASHES: dict[tuple, str] = {}


def file_sha256(path) -> str:
    """sha256 of a file's bytes, memoised per (path, size, modification time) within the process."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]
