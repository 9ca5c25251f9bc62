"""Result store: one JSON per unit under <results>/<experiment>/runs/, written atomically.

A result is valid when it parses, names its unit id and has status "ok"; anything else — a truncated file, a
crashed write — is treated as absent, so the unit runs again. A stage's adapter folder is an artefact beside its
record: readers (aggregators, reports) need only the record, so results copied without their adapters (they are
not committed) still aggregate; the executor re-runs a stage whose adapter is missing only when a unit that
depends on it has to run (`read(..., require_artifacts=True)`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from promptintern.tasks.infra import unaccounted

from .artifacts import adapter_problem
from .records import READABLE_SCHEMAS, SCHEMA_VERSION

PLAN_FILE = "plan.json"  # every unit of the last plan run here (promptintern run writes it)


class ResultStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.adapters = self.root / "adapters"

    def path(self, unit_id: str) -> Path:
        return self.runs / f"{unit_id}.json"

    def adapter_dir(self, unit_id: str) -> Path:
        return self.adapters / unit_id

    def relative(self, path: str | Path | None) -> str | None:
        """``path`` relative to the experiment folder (records never store a machine's absolute paths)."""
        if path is None:
            return None
        p = Path(path).resolve()
        try:
            return str(p.relative_to(self.root.resolve()))
        except ValueError:
            return str(path)  # outside the results (a user's own adapter): kept as given

    def task_folders(self, include=None, allow_shadowing: bool = False) -> dict:
        """The experiment's task folders (``experiment.json``: task_paths, allow_task_shadowing) and ``include``, as
        keyword arguments of ``tasks.get_task``."""
        try:
            cfg = json.loads((self.root / "experiment.json").read_text())
        except (OSError, ValueError):
            cfg = {}
        own = [str((self.root / p).resolve()) for p in cfg.get("task_paths") or []]
        return {"include": list(dict.fromkeys([*own, *(include or [])])),
                "allow_shadowing": bool(cfg.get("allow_task_shadowing", False)) or bool(allow_shadowing)}

    def write(self, unit_id: str, record: dict) -> Path:
        record = {"schema_version": SCHEMA_VERSION, "unit_id": unit_id, **record}
        return atomic_write_json(self.path(unit_id), record)

    def read(self, unit_id: str, require_artifacts: bool = True) -> dict | None:
        """The unit's record if present and valid (with its adapter folder, for a stage, unless
        ``require_artifacts`` is false), else None."""
        return load_valid(self.path(unit_id), unit_id, require_artifacts)

    def done(self, unit_id: str) -> bool:
        return self.read(unit_id) is not None

    def planned_ids(self) -> set[str] | None:
        """Ids of the units of the last plan run into this folder (``plan.json``), or None when there is none."""
        try:
            return {u["id"] for u in json.loads((self.root / PLAN_FILE).read_text())["units"]}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def records(self, kind: str | None = None, current: bool = True) -> list[dict]:
        """Every valid record (adapters not required: readers need only the records). With ``current`` and a
        ``plan.json``, only the records of that plan: a result of an earlier plan (other data, scoring version,
        items or budget) is not averaged with the current one."""
        planned = self.planned_ids() if current else None
        out = []
        for p in sorted(self.runs.glob("*.json")) if self.runs.is_dir() else []:
            if planned is not None and p.stem not in planned:
                continue
            rec = load_valid(p, p.stem, require_artifacts=False)
            if rec is not None and (kind is None or rec.get("kind") == kind):
                out.append(rec)
        return out

    def stale_records(self) -> list[str]:
        """Ids of valid records that the current plan does not contain (kept on disk, left out of every table)."""
        planned = self.planned_ids()
        if planned is None:
            return []
        return [r["unit_id"] for r in self.records(current=False) if r["unit_id"] not in planned]


class MemoryStore:
    """Records held in memory, read as a :class:`ResultStore` is (``records``): the leaderboard rebuilds a
    submission's records and runs them through the same table code."""

    def __init__(self, records: list[dict]):
        self._records = list(records)
        self.root = Path("/nonexistent/promptintern-memory-store")  # no plan.json: no unfinished rows

    def records(self, kind: str | None = None, current: bool = True) -> list[dict]:
        return [r for r in self._records if kind is None or r.get("kind") == kind]


def atomic_write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_valid(path: Path, unit_id: str, require_artifacts: bool = True) -> dict | None:
    return diagnose(path, unit_id, require_artifacts)[0]


def diagnose(path: Path, unit_id: str, require_artifacts: bool = True) -> tuple[dict | None, str | None]:
    """(the valid record, None), or (None, why the file is not a valid result): absent, unreadable, truncated,
    another unit's, failed (with its error), an older schema, or (``require_artifacts``) a stage whose adapter
    is missing or corrupt."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, "absent"
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})"
    try:
        rec = json.loads(text)
    except ValueError as e:
        return None, f"not valid JSON ({e.msg} at line {e.lineno}; truncated write?)"
    if not isinstance(rec, dict):
        return None, "not a JSON object"
    if rec.get("unit_id") != unit_id:
        return None, f"names unit {rec.get('unit_id')!r}, not {unit_id!r}"
    if rec.get("status") != "ok":
        return None, f"status {rec.get('status')!r}" + (f": {rec['error']}" if rec.get("error") else "")
    if rec.get("schema_version") not in READABLE_SCHEMAS:
        return None, (f"schema_version {rec.get('schema_version')!r}, this code reads "
                      f"{', '.join(map(str, READABLE_SCHEMAS))}")

    problem = unaccounted(rec)  # infrastructure failures scored as wrong answers (a record of older code)
    if problem:
        return None, problem
    if require_artifacts and rec.get("kind") == "stage":
        adapter = path.parent.parent / rec.get("adapter_dir", "")  # relative to the experiment folder
        problem = adapter_problem(adapter, rec.get("adapter_sha256"))
        if problem:
            return None, f"adapter {problem}"
    return rec, None
