"""One registry mechanism for every named, pluggable thing: methods, tasks' loaders, metrics and extractors,
compressors, retrievers, schedules.

A :class:`Registry` is a ``name -> entry`` mapping (a ``dict``, so ``name in REG``, ``REG[name]`` and
``sorted(REG)`` work as usual) that

- refuses a second, different entry under a name (``ValueError`` naming the kind and the name);
- resolves aliases and case in :meth:`Registry.lookup`, and answers an unknown name with a
  :class:`~promptintern.errors.ConfigError` naming the config field and the allowed names;
- imports its ``plugins`` (modules that register entries when imported) on first use, so a layer below can
  hold a registry that a layer above fills (the MetaTuner method lives in ``promptintern.metatuner``,
  the built-in metrics in ``promptintern.tasks.metrics``) without importing it.

    SCHEDULES = Registry("schedule", aliases={"exp": "exponential"})

    @SCHEDULES.register("linear")
    class Linear: ...

    SCHEDULES.lookup("Linear")      # -> Linear; SCHEDULES.lookup("nope") -> ConfigError("schedule", ...)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(dict, Generic[T]):
    def __init__(self, kind: str, *, field: str | None = None, aliases: dict[str, str] | None = None,
                 plugins: Iterable[str] = (), same: Callable[[T, T], bool] | None = None):  # fmt: skip
        super().__init__()
        self.kind = kind
        self.field = field or kind  # the config field an unknown name is reported against
        self.aliases = dict(aliases or {})
        self.plugins = tuple(plugins)
        self._same = same or (lambda a, b: a is b)
        self._loaded = not self.plugins

    # -- filling ----------------------------------------------------------------------------------------------
    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; the same entry again is a no-op, another one an error."""
        if dict.__contains__(self, name) and not self._same(dict.__getitem__(self, name), entry):
            raise ValueError(f"{self.kind} {name!r} registered twice")
        dict.__setitem__(self, name, entry)
        return entry

    def register(self, name: str, wrap: Callable | None = None):
        """Decorator: ``@REG.register("name")`` registers the function or class (``wrap(obj)`` when given, e.g. a
        spec dataclass around the function) and returns it unchanged."""

        def deco(obj):
            self.add(name, wrap(obj) if wrap else obj)
            return obj

        return deco

    def load_plugins(self) -> None:
        """Import the plugin modules once (each registers its entries on import)."""
        if self._loaded:
            return
        self._loaded = True
        for mod in self.plugins:
            importlib.import_module(mod)

    # -- lookup -----------------------------------------------------------------------------------------------
    def canonical(self, name) -> str:
        """The registered name ``name`` (any case, an alias) stands for; :class:`ConfigError` if none."""
        self.load_plugins()
        key = str(name).strip()
        for cand in (key, key.lower(), key.lower().replace(" ", "_")):
            cand = self.aliases.get(cand, cand)
            if dict.__contains__(self, cand):
                return cand
        raise ConfigError(self.field, f"unknown {self.kind} {name!r}; choose one of {sorted(self)}")

    def lookup(self, name) -> T:
        return dict.__getitem__(self, self.canonical(name))

    # -- the dict view, plugins included ------------------------------------------------------------------------
    def __contains__(self, name) -> bool:
        self.load_plugins()
        return dict.__contains__(self, name)

    def __getitem__(self, name) -> T:
        self.load_plugins()
        return dict.__getitem__(self, name)

    def __iter__(self):
        self.load_plugins()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self.load_plugins()
        return dict.__len__(self)

    def get(self, name, default=None):
        self.load_plugins()
        return dict.get(self, name, default)

    def keys(self):
        self.load_plugins()
        return dict.keys(self)

    def values(self):
        self.load_plugins()
        return dict.values(self)

    def items(self):
        self.load_plugins()
        return dict.items(self)
