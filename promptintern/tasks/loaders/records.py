"""The generic loader of YAML-only tasks: records from local JSONL, JSON, CSV or Parquet files, or a Hugging Face
dataset (with internet access), mapped to ``Example(id, query, reference, meta)`` by the YAML's ``fields``.

.. code-block:: yaml

    loader:
      name: records
      args:
        file: data/tickets.jsonl            # one file split by seeded fractions ...
        fractions: {train: 0.8, test: 0.2}
        seed: 0
        # files: {train: data/train.csv, test: data/test.csv}     # ... or one file per split
        # hub: {path: org/dataset, name: null, splits: {train: train, test: validation}}
        format: null                        # jsonl | json | csv | parquet; default: from the file name
        fields:
          query: "Channel: {channel}\\nMessage: {message}"   # "{column}" format string, Jinja "{{ column }}",
          reference: route                                  # or a bare column name
          id: ticket_id                                     # default: <task>/<file name>:<line>
          meta: {tests: test_list}                          # default: every column of the record, as read

Paths are relative to the task YAML's folder, else to the data directory. A record without a mapped field fails
with the file and line (record number for JSON arrays and Parquet rows). Fractions are cut from one seeded
shuffle, in the order given; they may sum to less than 1 (the rest is unused), never more.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

from promptintern.errors import ConfigError, DataFormatError, DatasetNotFoundError
from promptintern.paths import hub_offline

from ...task_types import Example
from ..registry import register_loader
from .common import note_read, read_csv, read_json, read_jsonl

FORMATS = ("jsonl", "json", "csv", "parquet")
ARGS = {"file", "files", "fractions", "seed", "hub", "format", "fields"}
FIELD_KEYS = {"query", "reference", "id", "meta"}


# -- field mapping --------------------------------------------------------------------------------------------
def _kind(spec: str) -> str:
    if "{{" in spec or "{%" in spec:
        return "jinja"
    return "format" if "{" in spec else "column"


def columns_of(spec: str) -> list[str]:
    """The record columns a field spec reads (for checks; Jinja templates report their undeclared variables)."""
    kind = _kind(spec)
    if kind == "column":
        return [spec]
    if kind == "format":
        return sorted({f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(spec) if f})
    import jinja2
    from jinja2 import meta

    return sorted(meta.find_undeclared_variables(jinja2.Environment().parse(spec)))


def _check_spec(spec, key: str, source: str) -> None:
    if not isinstance(spec, str) or not spec:
        raise ConfigError(key, "should be a non-empty string: a column name, \"{column}\" text or Jinja "
                          "\"{{ column }}\"", source)
    kind = _kind(spec)
    try:
        if kind == "format":
            list(string.Formatter().parse(spec))
            if not columns_of(spec):
                raise ValueError("no {column} placeholder")
        elif kind == "jinja":
            import jinja2

            jinja2.Environment().parse(spec)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's to fix
        raise ConfigError(key, f"invalid {'Jinja template' if kind == 'jinja' else 'format string'} ({exc})",
                          source) from None


class _Mapper:
    def __init__(self, fields: dict):
        import jinja2

        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        self.fields = fields
        self.jinja = {k: env.from_string(v) for k, v in self._specs() if _kind(v) == "jinja"}

    def _specs(self):
        for k in ("query", "reference", "id"):
            if k in self.fields:
                yield k, self.fields[k]
        for k, v in (self.fields.get("meta") or {}).items():
            yield f"meta.{k}", v

    def value(self, key: str, spec: str, rec: dict, src, line: int, *, raw: bool = False):
        kind = _kind(spec)
        missing = [c for c in columns_of(spec) if c not in rec] if kind != "jinja" else []
        if missing:
            raise DataFormatError(src, line, f"missing field {missing[0]!r} (loader.args.fields.{key}: {spec!r}); "
                                  f"the record has {sorted(rec)}")
        if kind == "column":
            v = rec[spec]
            if raw:
                return v
            if v is None:
                raise DataFormatError(src, line, f"field {spec!r} is null (loader.args.fields.{key})")
            return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) \
                else str(v)
        if kind == "format":
            try:
                return spec.format_map(rec)
            except (KeyError, IndexError, AttributeError) as exc:
                raise DataFormatError(src, line, f"loader.args.fields.{key}: {spec!r}: {exc!r}") from None
        import jinja2

        try:
            return self.jinja[key].render(**rec)
        except jinja2.UndefinedError as exc:
            raise DataFormatError(src, line, f"missing field ({exc.message}) in loader.args.fields.{key}: "
                                  f"{spec!r}; the record has {sorted(rec)}") from None

    def example(self, task: str, rec: dict, src, line: int, label: str) -> Example:
        query = self.value("query", self.fields["query"], rec, src, line)
        reference = self.value("reference", self.fields["reference"], rec, src, line)
        ex_id = self.value("id", self.fields["id"], rec, src, line) if "id" in self.fields else f"{label}:{line}"
        meta_spec = self.fields.get("meta")
        if meta_spec is None:
            meta = dict(rec)
        else:
            meta = {k: self.value(f"meta.{k}", v, rec, src, line, raw=True) for k, v in meta_spec.items()}
        return Example(f"{task}/{ex_id}", query, reference, meta)


# -- reading --------------------------------------------------------------------------------------------------
def _format(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    name = path.name.lower().removesuffix(".gz")
    for f in FORMATS:
        if name.endswith("." + f):
            return f
    raise ConfigError("loader.args.format", f"cannot tell the format of {path.name}; name it *.jsonl, *.json, "
                      "*.csv or *.parquet, or set format:")


def read_records(path: Path, fmt: str | None = None) -> list[tuple[int, dict]]:
    """(line or record number, record) for every record of a local file."""
    fmt = _format(path, fmt)
    note_read(path)
    if fmt == "jsonl":
        return list(read_jsonl(path))
    if fmt == "csv":
        return list(read_csv(path, []))
    if fmt == "json":
        data = read_json(path)
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DataFormatError(path, 1, "expected a JSON array of objects (or {\"data\": [...]})")
        out = []
        for i, rec in enumerate(data, 1):
            if not isinstance(rec, dict):
                raise DataFormatError(path, None, f"record {i}: expected an object, got {type(rec).__name__}")
            out.append((i, rec))
        return out
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds
        raise DataFormatError(path, None, f"not a readable Parquet file ({exc})") from None
    return [(i, {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in rec.items()})
            for i, rec in enumerate(frame.to_dict(orient="records"), 1)]


def resolve_path(rel: str, task_dir: Path | None, data_dir: Path | None, key: str, task: str) -> Path:
    p = Path(rel).expanduser()
    tried = []
    if p.is_absolute():
        candidates = [p]
    else:
        candidates = [d / p for d in (task_dir, data_dir) if d is not None]
    for c in candidates:
        if c.is_file():
            return c.resolve()
        tried.append(str(c))
    raise DatasetNotFoundError(task, " and ".join(tried) or rel,
                               f"loader.args.{key}: paths are relative to the task's folder, else to the data dir")


def _hub_split(task: str, hub: dict, split: str) -> list[tuple[int, dict]]:
    where = f"hub dataset {hub['path']!r}" + (f" ({hub['name']})" if hub.get("name") else "")
    if hub_offline():
        raise DatasetNotFoundError(task, where + " (HF_HUB_OFFLINE is set)",
                                   "with internet access unset HF_HUB_OFFLINE, or give loader.args.file(s)")
    import datasets

    hub_split = (hub.get("splits") or {}).get(split, split)
    try:
        ds = datasets.load_dataset(hub["path"], hub.get("name"), split=hub_split)
    except Exception as exc:  # noqa: BLE001 - network errors, missing dataset or split...
        raise DatasetNotFoundError(task, where, f"download failed ({exc}); supply the file locally") from exc
    note_read(f"hub:{hub['path']}" + (f"/{hub['name']}" if hub.get("name") else "") + f"/{hub_split}")
    return [(i, dict(r)) for i, r in enumerate(ds, 1)]


def split_by_fraction(n: int, fractions: dict, seed: int) -> dict[str, list[int]]:
    """Record indices per split: one ``random.Random(seed)`` shuffle cut in the order of ``fractions``."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    out, start, cum = {}, 0, 0.0
    for name, f in fractions.items():
        cum += float(f)
        end = n if abs(cum - 1.0) < 1e-9 else min(n, round(cum * n))
        out[name] = sorted(order[start:end])
        start = end
    return out


# -- the loader -----------------------------------------------------------------------------------------------
def check_args(args: dict, source: str, splits: list[str]) -> None:
    """Validate ``loader.args`` before anything is read; errors name the key."""
    for k in args:
        if k not in ARGS:
            raise ConfigError(f"loader.args.{k}", f"unknown key; allowed: {', '.join(sorted(ARGS))}",
                              source)
    given = [k for k in ("file", "files", "hub") if args.get(k) is not None]
    if len(given) != 1:
        raise ConfigError("loader.args", "give exactly one of file (with fractions), files (one per split) or hub",
                          source)
    if args.get("format") is not None and args["format"] not in FORMATS:
        raise ConfigError("loader.args.format", f"must be one of {', '.join(FORMATS)}", source)
    if "file" in given:
        if not isinstance(args["file"], str):
            raise ConfigError("loader.args.file", "should be a path", source)
        fr = args.get("fractions")
        if not isinstance(fr, dict) or not fr:
            raise ConfigError("loader.args.fractions", "a single file needs fractions per split, e.g. "
                              "{train: 0.8, test: 0.2}", source)
        for name, f in fr.items():
            if name not in splits:
                raise ConfigError(f"loader.args.fractions.{name}", f"not one of splits {splits}", source)
            if not isinstance(f, int | float) or isinstance(f, bool) or not 0 < f <= 1:
                raise ConfigError(f"loader.args.fractions.{name}", f"should be a fraction in (0, 1], got {f!r}",
                                  source)
        if sum(fr.values()) > 1 + 1e-9:
            raise ConfigError("loader.args.fractions", f"sum to {sum(fr.values()):g} > 1", source)
        missing = [s for s in splits if s not in fr]
        if missing:
            raise ConfigError("loader.args.fractions", f"no fraction for split(s) {missing}", source)
        seed = args.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError("loader.args.seed", "should be an integer", source)
    elif "files" in given:
        files = args["files"]
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise ConfigError("loader.args.files", "should map split names to paths", source)
        for s in splits:
            if s not in files:
                raise ConfigError("loader.args.files", f"no file for split {s!r}", source)
    else:
        hub = args["hub"]
        if not isinstance(hub, dict) or not isinstance(hub.get("path"), str):
            raise ConfigError("loader.args.hub.path", "a hub dataset needs path (e.g. org/name)", source)
        extra = set(hub) - {"path", "name", "splits"}
        if extra:
            raise ConfigError(f"loader.args.hub.{sorted(extra)[0]}", "unknown key; allowed: path, name, splits",
                              source)
    fields = args.get("fields")
    if not isinstance(fields, dict):
        raise ConfigError("loader.args.fields", "map at least query and reference to the record's columns", source)
    for k in fields:
        if k not in FIELD_KEYS:
            raise ConfigError(f"loader.args.fields.{k}", f"unknown key; allowed: {', '.join(sorted(FIELD_KEYS))}",
                              source)
    for k in ("query", "reference"):
        if k not in fields:
            raise ConfigError(f"loader.args.fields.{k}", "missing required key", source)
    for k in ("query", "reference", "id"):
        if k in fields:
            _check_spec(fields[k], f"loader.args.fields.{k}", source)
    meta = fields.get("meta")
    if meta is not None:
        if not isinstance(meta, dict):
            raise ConfigError("loader.args.fields.meta", "should map names to columns (or leave it out: every "
                              "column is kept)", source)
        for k, v in meta.items():
            _check_spec(v, f"loader.args.fields.meta.{k}", source)


def mapped_columns(fields: dict) -> dict[str, list[str]]:
    """field key -> the columns it reads (what ``tasks --check`` reports)."""
    out = {k: columns_of(fields[k]) for k in ("query", "reference", "id") if k in fields}
    out.update({f"meta.{k}": columns_of(v) for k, v in (fields.get("meta") or {}).items()})
    return out


@register_loader("records")
def load_records(data_dir: Path | None, split: str, *, task_dir: Path | None = None, task: str = "records",
                 file: str | None = None, files: dict | None = None, fractions: dict | None = None, seed: int = 0,
                 hub: dict | None = None, format: str | None = None,
                 fields: dict | None = None) -> list[Example]:  # fmt: skip
    """One split's examples (``task_dir`` and ``task`` are passed by :class:`promptintern.tasks.yaml_task.YamlTask`)."""
    mapper = _Mapper(fields or {})
    if hub is not None:
        label = f"hub:{hub['path']}/{split}"
        return [mapper.example(task, rec, label, line, split) for line, rec in _hub_split(task, hub, split)]
    if files is not None:
        path = resolve_path(files[split], task_dir, data_dir, f"files.{split}", task)
        return [mapper.example(task, rec, path, line, path.name) for line, rec in read_records(path, format)]
    path = resolve_path(file, task_dir, data_dir, "file", task)
    records = read_records(path, format)
    keep = split_by_fraction(len(records), fractions, seed)[split]
    # every record is mapped, whichever split is asked for: a bad record fails every split's load alike
    mapped = [mapper.example(task, rec, path, line, path.name) for line, rec in records]
    return [mapped[i] for i in keep]


load_records.check_args = check_args
