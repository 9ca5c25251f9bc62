"""Where data, caches and results live. Nothing here hard-codes a machine's layout."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "PROMPTINTERN_DATA_DIR"
CACHE_DIR_ENV = "PROMPTINTERN_CACHE_DIR"


def data_dir(override: str | os.PathLike | None = None) -> Path | None:
    """The data directory: an explicit value (CLI flag or config key), else $PROMPTINTERN_DATA_DIR.

    Returns None when neither is set; loaders then fall back to a hub download where allowed.
    """
    value = override if override not in (None, "") else os.environ.get(DATA_DIR_ENV) or None
    return Path(value).expanduser().resolve() if value else None


def cache_dir() -> Path:
    """Cache for exported models and other derived artefacts ($PROMPTINTERN_CACHE_DIR)."""
    base = os.environ.get(CACHE_DIR_ENV)
    if base:
        path = Path(base).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(xdg) / "promptintern"
    path.mkdir(parents=True, exist_ok=True)
    return path


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
