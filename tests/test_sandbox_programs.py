"""The programs the sandbox ships to a sample's interpreters are real modules: importable, linted, tested here
in-process (the adversarial tests run them for real, in tests/test_sandbox_adversarial.py)."""

from __future__ import annotations

import collections
import decimal
import fractions
import os

import pytest

from promptintern.tasks.sandbox import codec, host


def _roundtrip(value):
    refs = []
    return codec._dec(codec._enc(value, lambda v: refs.append(v) or ["R", len(refs) - 1]), lambda x: refs[x[1]])


@pytest.mark.parametrize("value", [
    None, True, 3, 2.5, "s", [1, (2, 3)], {"a": {1, 2}}, frozenset({4}), b"\x00b", bytearray(b"x"), 1 + 2j,
    range(1, 9, 2), collections.OrderedDict(a=1), collections.Counter("aab"), collections.deque([1], maxlen=3),
    fractions.Fraction(1, 3), decimal.Decimal("0.1"),
])
def test_plain_values_cross_the_channel_as_themselves(value):
    got = _roundtrip(value)
    assert got == value and type(got) is type(value)


def test_other_objects_stay_behind_a_reference():
    obj = object()
    assert _roundtrip([obj])[0] is obj


def test_the_channel_frames_messages_and_refuses_oversized_ones(monkeypatch):
    r, w = os.pipe()
    try:
        codec._send(w, {"x": [1, 2]})
        assert codec._recv(r) == {"x": [1, 2]}
        monkeypatch.setattr(codec, "_MAX_FRAME", 8)
        with pytest.raises(ValueError, match="too large"):
            codec._send(w, "a long message")
    finally:
        os.close(r)
        os.close(w)


def test_too_deep_values_are_refused():
    deep: list = []
    for _ in range(codec._MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(ValueError, match="nested too deeply"):
        codec._enc(deep, lambda v: None)


def test_importing_the_programs_runs_nothing_and_the_shipped_text_carries_the_codec():
    from promptintern.tasks.sandbox import bootstrap, runner, verifier  # noqa: F401  (no side effect on import)

    for text in (host.RUNNER, host.VERIFIER):
        assert "from .codec import" not in text and "def _send(fd, obj):" in text
        compile(text, "<shipped>", "exec")
    assert "from .codec import" not in host.BOOTSTRAP
    compile(host.BOOTSTRAP, "<shipped>", "exec")
