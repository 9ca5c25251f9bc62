"""Helpers shared by the loaders: locating a data file, reading JSON/JSONL/CSV with line-precise errors,
and the optional hub fallback (``datasets.load_dataset``) for users with internet access."""

from __future__ import annotations

import contextlib
import contextvars
import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from promptintern.errors import DataFormatError, DatasetNotFoundError
from promptintern.paths import DATA_DIR_ENV, hub_offline


def _hint(rel: str, hub: dict | None) -> str:
    msg = (
        f"Put the authors' file at <data dir>/{rel} and point ${DATA_DIR_ENV} (or --data-dir / the "
        "task's data_dir argument) at <data dir>."
    )
    if hub:
        msg += f" With internet access, unset HF_HUB_OFFLINE to download {hub['path']!r} from the Hugging Face hub."
    return msg


_READS: contextvars.ContextVar[list | None] = contextvars.ContextVar("promptintern_data_reads", default=None)


@contextlib.contextmanager
def recording_reads():
    """Collect the sources the loaders read inside the block: local file paths (``Path``) and hub datasets
    (``"hub:<path>"``). ``promptintern.tasks.yaml_task`` uses it to fingerprint the data a unit depends on."""
    reads: list = []
    token = _READS.set(reads)
    try:
        yield reads
    finally:
        _READS.reset(token)


def note_read(source) -> None:
    """Record a data source read by a loader (every loader's file goes through find_file or calls this)."""
    reads = _READS.get()
    if reads is not None and source not in reads:
        reads.append(source)


def find_file(data_dir: Path | None, rel: str, dataset: str, hub: dict | None = None) -> Path | None:
    """The local file ``data_dir/rel`` if it exists. Otherwise None when a hub download is possible
    (``hub`` given and HF_HUB_OFFLINE not set), else DatasetNotFoundError naming what was tried."""
    if data_dir is not None:
        path = Path(data_dir) / rel
        if path.is_file():
            note_read(path)
            return path
        tried = str(path)
    else:
        tried = f"<no data dir: ${DATA_DIR_ENV} is not set>/{rel}"
    if hub and not hub_offline():
        note_read(f"hub:{hub['path']}" + (f"/{hub['name']}" if hub.get("name") else ""))
        return None
    if hub and hub_offline():
        tried += f" (hub download of {hub['path']!r} skipped: HF_HUB_OFFLINE is set)"
    raise DatasetNotFoundError(dataset, tried, _hint(rel, hub))


def hub_records(dataset: str, hub: dict) -> dict[str, list[dict]]:
    """All splits of a hub dataset as plain dict records: {split: [record, ...]}."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise DatasetNotFoundError(dataset, hub["path"], "install the `datasets` package") from exc
    try:
        ds = datasets.load_dataset(hub["path"], hub.get("name"))
    except Exception as exc:  # network errors, missing dataset...
        raise DatasetNotFoundError(
            dataset, f"hub dataset {hub['path']!r}", f"download failed ({exc}); supply the file locally"
        ) from exc
    return {split: [dict(r) for r in ds[split]] for split in ds}


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each non-blank line (gzip when the name ends in .gz); a malformed line raises
    DataFormatError."""
    opener = gzip.open if Path(path).suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(path, lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(rec, dict):
                raise DataFormatError(path, lineno, f"expected a JSON object, got {type(rec).__name__}")
            yield lineno, rec


def read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, exc.lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from None


def read_csv(path: Path, required: list[str]) -> Iterator[tuple[int, dict]]:
    """(record number, row) with the header checked; a short/long row raises DataFormatError (line = file line)."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DataFormatError(path, 1, f"missing column(s) {missing} in header {reader.fieldnames}")
        for row in reader:
            if None in row or any(row.get(c) is None for c in required):
                raise DataFormatError(path, reader.line_num, "wrong number of fields")
            yield reader.line_num, row


def require(rec: dict, fields: dict[str, type | tuple], path, lineno) -> None:
    """Check that ``rec`` has each field with the given type; DataFormatError names the file, line and field."""
    for field, typ in fields.items():
        if field not in rec:
            raise DataFormatError(path, lineno, f"missing field {field!r}")
        if not isinstance(rec[field], typ):
            names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
            raise DataFormatError(path, lineno, f"field {field!r} should be {names}, got {type(rec[field]).__name__}")
