"""Field rules of the settings dataclasses: a :class:`Spec` says what a value must be, for the check and for
the error message (``must be an integer >= 1, got 0``)."""

from __future__ import annotations

import dataclasses

from promptintern.errors import ConfigError


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v  # not NaN


def got(v) -> str:
    text = repr(v)
    text = text if len(text) <= 60 else text[:57] + "..."
    kind = {bool: "a boolean", str: "a string", list: "a list", dict: "a mapping", type(None): "null"}.get(type(v))
    return f"got {text}" + (f" ({kind})" if kind and not isinstance(v, type(None)) else "")


class Spec:
    """One field's rule: ``test(value) -> bool`` and what it must be, for the message."""

    def __init__(self, what: str, test):
        self.what, self.test = what, test

    def check(self, value, field: str, source: str) -> None:
        if not self.test(value):
            raise ConfigError(field, f"must be {self.what}, {got(value)}", source)


def _range(lo, hi, lo_open, hi_open) -> tuple[str, object]:
    def ok(v):
        return ((lo is None or (v > lo if lo_open else v >= lo)) and
                (hi is None or (v < hi if hi_open else v <= hi)))
    if lo is not None and hi is not None:
        text = f" in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        text = f" {'>' if lo_open else '>='} {lo:g}"
    elif hi is not None:
        text = f" {'<' if hi_open else '<='} {hi:g}"
    else:
        text = ""
    return text, ok


def integer(lo=None, hi=None, *, null: bool = False) -> Spec:
    text, ok = _range(lo, hi, False, False)
    return Spec(f"an integer{text}" + (" or null" if null else ""),
                lambda v: (null and v is None) or (is_int(v) and ok(v)))


def number(lo=None, hi=None, *, lo_open=False, hi_open=False, null: bool = False, whole_above_1=False) -> Spec:
    text, ok = _range(lo, hi, lo_open, hi_open)
    extra = " (fractions only below 1, as Ray requires)" if whole_above_1 else ""
    return Spec(f"a number{text}" + (" or null" if null else "") + extra,
                lambda v: (null and v is None) or (_is_num(v) and ok(v) and
                                                   (not whole_above_1 or v <= 1 or float(v).is_integer())))


def boolean() -> Spec:
    return Spec("true or false", lambda v: isinstance(v, bool))


def text(choices=None, *, null: bool = False) -> Spec:
    if choices is not None:
        choices = tuple(choices)
        return Spec(f"one of {', '.join(map(str, choices))}" + (" or null" if null else ""),
                    lambda v: (null and v is None) or (isinstance(v, str) and v in choices))
    return Spec("a non-empty string" + (" or null" if null else ""),
                lambda v: (null and v is None) or (isinstance(v, str) and bool(v.strip())))


def list_of(item: Spec, *, nonempty: bool = True, what: str | None = None) -> Spec:
    return Spec(what or f"a {'non-empty ' if nonempty else ''}list, each item {item.what} (write [x] for one)",
                lambda v: isinstance(v, list) and (bool(v) or not nonempty) and all(item.test(x) for x in v))


def one_of(*specs: Spec) -> Spec:
    return Spec(" or ".join(s.what for s in specs), lambda v: any(s.test(v) for s in specs))


def setting(default=dataclasses.MISSING, *, spec: Spec | None = None, factory=None, keys: dict | None = None):
    """A settings dataclass field with its default and its rule (what the value must be, checked when an
    experiment is loaded, and the error message) in one place; ``keys``: the rules of a mapping's keys."""
    meta = {k: v for k, v in (("spec", spec), ("keys", keys)) if v}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def rules(cls, prefix: str = "") -> dict[str, Spec]:
    """Dotted field -> rule, for a settings dataclass and the settings dataclasses nested in it."""
    out: dict[str, Spec] = {}
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        if f.metadata.get("spec"):
            out[name] = f.metadata["spec"]
        for key, spec in (f.metadata.get("keys") or {}).items():
            out[f"{name}.{key}"] = spec
        if dataclasses.is_dataclass(f.default_factory):
            out.update(rules(f.default_factory, name + "."))
    return out


def check_fields(obj, prefix: str = "", source: str | None = None) -> None:
    """Every field of a settings dataclass instance against its rule; the first that breaks it is a ConfigError
    naming ``prefix + field``."""
    for f in dataclasses.fields(obj):
        spec = f.metadata.get("spec")
        if spec is not None:
            spec.check(getattr(obj, f.name), prefix + f.name, source)
