"""Framing and value encoding of the sandbox's runner and verifier (shipped as text, stdlib only).

Framing and value encoding shared by the runner (the program's interpreter) and the verifier (the tests'
interpreter). Values cross the channel as JSON; every JSON list is a tagged container, so plain data (None,
bool, int, float, str, list, tuple, dict, set, frozenset, bytes, bytearray, complex, range, OrderedDict,
Counter, deque, Fraction, Decimal) is rebuilt as genuine objects of those types on the other side; anything
else stays in the program's interpreter and is handled through a reference ("R").
"""
import os as _os, json as _json, struct as _struct, collections as _coll, builtins as _bi
_MAX_FRAME = 32 << 20
_MAX_DEPTH = 200
def _send(fd, obj):
    data = _json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    if len(data) > _MAX_FRAME:
        raise ValueError("message too large for the sandbox channel")
    view = memoryview(_struct.pack(">I", len(data)) + data)
    while view:
        view = view[_os.write(fd, view):]
def _read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = _os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("sandbox channel closed")
        buf += chunk
    return bytes(buf)
def _recv(fd):
    (n,) = _struct.unpack(">I", _read_exact(fd, 4))
    if n > _MAX_FRAME:
        raise ValueError("message too large for the sandbox channel")
    return _json.loads(_read_exact(fd, n))
def _enc(v, ref, d=0):
    if d > _MAX_DEPTH:
        raise ValueError("value nested too deeply for the sandbox channel")
    t = type(v)
    if v is None or t is bool or t is int or t is str or t is float:
        return v
    e = lambda x: _enc(x, ref, d + 1)
    if t is _coll.OrderedDict:
        return ["OD", [[e(k), e(x)] for k, x in v.items()]]
    if t is _coll.Counter:
        return ["CT", [[e(k), e(x)] for k, x in v.items()]]
    if t is _coll.deque:
        return ["DQ", v.maxlen, [e(x) for x in v]]
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, complex):
        return ["C", complex(v).real, complex(v).imag]
    if isinstance(v, bytearray):
        return ["BA", bytes(v).hex()]
    if isinstance(v, bytes):
        return ["B", bytes(v).hex()]
    if isinstance(v, dict):
        return ["D", [[e(k), e(x)] for k, x in dict.items(v)]]
    if isinstance(v, tuple):
        return ["T", [e(x) for x in tuple.__iter__(v)]]
    if isinstance(v, list):
        return ["L", [e(x) for x in list.__iter__(v)]]
    if isinstance(v, frozenset):
        return ["F", [e(x) for x in frozenset.__iter__(v)]]
    if isinstance(v, set):
        return ["S", [e(x) for x in set.__iter__(v)]]
    if t is range:
        return ["RG", v.start, v.stop, v.step]
    name = t.__module__ + "." + t.__qualname__
    if name == "fractions.Fraction":
        return ["FR", str(int(v.numerator)), str(int(v.denominator))]
    if name == "decimal.Decimal":
        return ["DE", str(v)]
    if t is type and v.__module__ == "builtins" and getattr(_bi, v.__name__, None) is v:
        return ["TY", v.__name__]
    return ref(v)
def _dec(x, unref, d=0):
    if d > _MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if x is None or type(x) in (bool, int, float, str):
        return x
    if type(x) is not list or not x or type(x[0]) is not str:
        raise ValueError("malformed value")
    tag = x[0]
    def items(i=1):
        if len(x) <= i or type(x[i]) is not list:
            raise ValueError("malformed value")
        return [_dec(y, unref, d + 1) for y in x[i]]
    def pairs():
        if len(x) != 2 or type(x[1]) is not list:
            raise ValueError("malformed value")
        out = []
        for p in x[1]:
            if type(p) is not list or len(p) != 2:
                raise ValueError("malformed value")
            out.append((_dec(p[0], unref, d + 1), _dec(p[1], unref, d + 1)))
        return out
    if tag == "L":
        return items()
    if tag == "T":
        return tuple(items())
    if tag == "S":
        return set(items())
    if tag == "F":
        return frozenset(items())
    if tag == "D":
        return dict(pairs())
    if tag == "OD":
        return _coll.OrderedDict(pairs())
    if tag == "CT":
        return _coll.Counter(dict(pairs()))
    if tag == "DQ":
        if len(x) != 3 or not (x[1] is None or type(x[1]) is int):
            raise ValueError("malformed value")
        return _coll.deque(items(2), x[1])
    if tag in ("B", "BA") and len(x) == 2 and type(x[1]) is str:
        b = bytes.fromhex(x[1])
        return bytearray(b) if tag == "BA" else b
    if tag == "C" and len(x) == 3 and all(type(y) in (int, float) for y in x[1:]):
        return complex(x[1], x[2])
    if tag == "RG" and len(x) == 4 and all(type(y) is int for y in x[1:]):
        return range(x[1], x[2], x[3])
    if tag == "FR" and len(x) == 3 and all(type(y) is str for y in x[1:]):
        from fractions import Fraction
        return Fraction(int(x[1]), int(x[2]))
    if tag == "DE" and len(x) == 2 and type(x[1]) is str:
        from decimal import Decimal
        return Decimal(x[1])
    if tag == "TY" and len(x) == 2 and type(x[1]) is str:
        t = getattr(_bi, x[1], None)
        if isinstance(t, type):
            return t
    if tag in ("R", "M"):
        return unref(x)
    raise ValueError("malformed value")
