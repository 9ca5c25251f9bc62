"""Artefact folders (a stage's adapter) written atomically, identified by their weights, checked before use.

- A unit writes its folder under a temporary name beside the final one (:func:`partial_dir`) and
  :func:`publish_dir` renames it into place when it is complete, so no reader ever sees half an adapter and an
  interrupted unit leaves only a partial folder that the next run of that unit removes.
- :func:`weights_sha256` hashes the tensors of the folder's ``*.safetensors`` files (names, dtypes, shapes and
  bytes; a folder with only PEFT's ``adapter_model.bin``: that file's bytes), not its other files: two identical adapters have one hash whatever their paths, timings, loss curves
  or README say.
- :func:`adapter_problem` says what is wrong with a folder before it is used: a missing file, a truncated or
  unparsable ``safetensors`` file, weights that differ from the hash its record stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
LEGACY_WEIGHTS = "adapter_model.bin"  # PEFT's pickle format: hashed by its bytes
PARTIAL = ".partial-"


def partial_dir(final: Path) -> Path:
    """A fresh temporary folder beside ``final`` (same file system, so the publishing rename is atomic)."""
    tmp = final.parent / f".{final.name}{PARTIAL}{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def remove_partials(final: Path) -> int:
    """Remove partial folders an interrupted unit left for ``final`` (call while holding the unit's claim)."""
    n = 0
    for p in final.parent.glob(f".{final.name}{PARTIAL}*") if final.parent.is_dir() else []:
        shutil.rmtree(p, ignore_errors=True)
        n += 1
    return n


def publish_dir(tmp: Path, final: Path) -> Path:
    """Move the complete folder ``tmp`` to ``final``, replacing an older one (never leaving ``final`` half
    written: the old folder is moved aside first, then the new one renamed in)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _safetensors_header(path: Path) -> tuple[dict, int]:
    """(header, data offset) of a safetensors file; ValueError when it is truncated or malformed."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("shorter than its 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ValueError(f"header of {n} bytes but the file has {size} bytes")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise ValueError(f"unreadable header ({e})") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a mapping")
    end = 0
    for name, t in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(t["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise ValueError(f"tensor {name!r} has no data offsets") from None
    if 8 + n + end != size:
        raise ValueError(f"{size} bytes, but its tensors need {8 + n + end} (truncated or padded)")
    return header, 8 + n


def weights_sha256(folder: str | Path | None) -> str | None:
    """sha256 of the tensors in the folder's ``*.safetensors`` files (relative file name, then per tensor in name
    order: name, dtype, shape, bytes); None without such files. ValueError for a malformed file."""
    if not folder:
        return None
    root = Path(folder)
    files = sorted(root.rglob("*.safetensors")) if root.is_dir() else []
    if not files:
        legacy = root / LEGACY_WEIGHTS
        return hashlib.sha256(legacy.read_bytes()).hexdigest() if legacy.is_file() else None
    h = hashlib.sha256()
    for p in files:
        header, offset = _safetensors_header(p)
        h.update(str(p.relative_to(root)).encode() + b"\0")
        with open(p, "rb") as f:
            for name in sorted(k for k in header if k != "__metadata__"):
                t = header[name]
                start, stop = (int(x) for x in t["data_offsets"])
                h.update(json.dumps([name, t.get("dtype"), t.get("shape")]).encode())
                f.seek(offset + start)
                left = stop - start
                while left:
                    chunk = f.read(min(left, 1 << 20))
                    if not chunk:
                        raise ValueError(f"{p.name}: tensor {name!r} is truncated")
                    h.update(chunk)
                    left -= len(chunk)
    return h.hexdigest()


_CHECKED: dict[tuple, str | None] = {}  # (path, size, mtime_ns, expected) -> problem; a folder is hashed once


def adapter_problem(folder: str | Path, expected_sha256: str | None = None,
                    files: tuple[str, ...] = ADAPTER_FILES) -> str | None:  # fmt: skip
    """What makes the adapter folder unusable (None: usable): a missing file, a malformed safetensors file, or
    weights whose hash is not ``expected_sha256`` (when given)."""
    root = Path(folder)
    if files == ADAPTER_FILES and not (root / files[1]).is_file() and (root / LEGACY_WEIGHTS).is_file():
        files = (files[0], LEGACY_WEIGHTS)  # a PEFT folder saved without safetensors
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        return f"{root.name}: missing {', '.join(missing)}"
    try:
        stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                      for p in sorted([*root.glob("*.safetensors"), *root.glob(LEGACY_WEIGHTS)]))
    except OSError as e:  # replaced while we looked (another run published it): look again next time
        return f"{root.name}: changed while being checked ({e.strerror})"
    key = (str(root.resolve()), stamp, expected_sha256)
    if key in _CHECKED:
        return _CHECKED[key]
    try:
        digest = weights_sha256(root)
        problem = None
        if expected_sha256 and digest != expected_sha256:
            problem = (f"{root.name}: weights sha256 {str(digest)[:12]}… differ from the recorded "
                       f"{expected_sha256[:12]}…")
    except (OSError, ValueError) as e:
        problem = f"{root.name}: corrupt safetensors file ({e})"
    _CHECKED[key] = problem
    return problem
