"""The package's shape: layers without cycles, modules a reader can hold, one definition of each default."""

from __future__ import annotations

import ast
import dataclasses
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "promptintern"
# Lower layers never import higher ones. The core is the package's own modules (prompts, training, generation,
# methods, registries); compressors and MetaTuner build on it; the library API and the tasks on those; the harness
# runs grids of all of it; the command line drives the harness.
LAYERS = {"core": 0, "compressors": 1, "metatuner": 1, "api": 2, "tasks": 2, "harness": 3, "cli": 4}
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _group(module: str, packages: set[str]) -> str:
    parts = module.split(".")
    if len(parts) > 1 and f"promptintern.{parts[1]}" in packages:
        return parts[1]
    return "api" if module == "promptintern.api" else "core"


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Every project module each module imports (at module level or inside a function)."""
    packages = {m for m, p in mods.items() if p.name == "__init__.py"}
    edges: dict[str, set[str]] = defaultdict(set)
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = mod.split(".") if mod in packages else mod.split(".")[:-1]
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    edges[mod].add(t)
    return edges


def test_layers_import_only_downward_and_subpackages_have_no_cycle():
    mods = _modules()
    packages = {m for m, p in mods.items() if p.name == "__init__.py"}
    groups = {_group(m, packages) for m in mods}
    assert groups <= set(LAYERS), f"a subpackage without a layer: {groups - set(LAYERS)}"
    upward, graph = [], defaultdict(set)
    for mod, targets in _imports(mods).items():
        for t in targets:
            a, b = _group(mod, packages), _group(t, packages)
            if a != b:
                graph[a].add(b)
                if LAYERS[b] > LAYERS[a]:
                    upward.append(f"{mod} ({a}) imports {t} ({b})")
    assert not upward, "imports of a higher layer:\n" + "\n".join(sorted(upward))
    # no cycle between subpackages (also between those of one layer)
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, f"import cycle between subpackages: {' -> '.join([*path, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for g in sorted(graph):
        if g not in state:
            visit(g, [g])


def test_the_graph_walk_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    """The walk above can fail: a lazy, relative import of an upper layer is an edge it reports."""
    edges = _imports({"promptintern.methods": PKG / "methods.py", "promptintern.metatuner.method":
                      PKG / "metatuner" / "method.py", "promptintern.metatuner": PKG / "metatuner" / "__init__.py"})
    assert "promptintern.methods" in edges["promptintern.metatuner.method"]
    mods = {"promptintern.core_mod": tmp_path / "core_mod.py", "promptintern.harness": tmp_path / "__init__.py"}
    mods["promptintern.core_mod"].write_text("def f():\n    from .harness import x\n")
    mods["promptintern.harness"].write_text("")
    assert _imports(mods)["promptintern.core_mod"] == {"promptintern.harness"}


def test_no_source_module_is_longer_than_600_lines():
    long = []
    for folder in ("promptintern", "benchmarks", "scripts", "examples"):
        for p in (ROOT / folder).rglob("*.py"):
            n = len(p.read_text().splitlines())
            if n > MAX_LINES:
                long.append(f"{p.relative_to(ROOT)}: {n} lines")
    assert not long, "modules over 600 lines:\n" + "\n".join(long)


def test_the_library_api_and_the_harness_train_with_the_same_config():
    """One definition of each default: a stage unit of the default experiment trains with the TrainConfig the
    library API builds (the per-stage fields, seed, step budget and progress bar, aside)."""
    from promptintern import api
    from promptintern.harness.config import load_experiment
    from promptintern.harness.stage_unit import stage_train_config

    cfg = load_experiment(None, ["methods=[{name: promptintern, schedules: [linear], stages: 3}]"])
    unit_cfg = {"train": cfg["train"], "seed": 0, "stage": 0}
    harness = stage_train_config(unit_cfg)
    library = api.train_config()
    same = {"seed": 0, "progress": False, "max_steps": None}
    assert dataclasses.replace(harness, **same) == dataclasses.replace(library, **same)
    assert harness.lr == library.lr and harness.lora == library.lora
    # and the prompt: the API's defaults are the harness's prompt section
    import inspect

    params = inspect.signature(api.internalize).parameters
    assert params["k_examples"].default == cfg["prompt"]["k_examples"]
    assert params["retriever"].default == cfg["prompt"]["retriever"]
    assert params["compressor"].default == cfg["prompt"]["compressor"]["name"]


def test_the_experiment_defaults_are_the_section_dataclasses():
    from promptintern.harness.config import DEFAULTS
    from promptintern.harness.settings import PER_STAGE_TRAIN_FIELDS, TimingSettings
    from promptintern.prompt_builder import PromptSettings
    from promptintern.trainer import TrainConfig

    train = {f.name for f in dataclasses.fields(TrainConfig)} - set(PER_STAGE_TRAIN_FIELDS)
    assert set(DEFAULTS["train"]) == train
    assert DEFAULTS["prompt"] == dataclasses.asdict(PromptSettings())
    assert DEFAULTS["timing"] == TimingSettings().to_dict()


def test_every_method_is_registered_once_with_its_facts():
    from promptintern.methods import METHODS, MethodInfo

    assert "metatuner" in METHODS  # registered by its own package, loaded on first use
    for name, info in METHODS.items():
        assert isinstance(info, MethodInfo) and info.name == name
    orders = [m.order for m in METHODS.values() if m.order != MethodInfo.order]
    assert len(orders) == len(set(orders))
