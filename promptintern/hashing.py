"""Content ids: a short, stable hash of a JSON-serialisable object (keys sorted), for unit ids and caches."""

from __future__ import annotations

import hashlib
import json


def content_id(obj) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
