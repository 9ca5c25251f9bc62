"""The tests' interpreter runs this (shipped as text after codec.py's).

Trusted code of the tests' interpreter (separate process, and in namespace/setuid modes a separate uid): it
makes itself non-dumpable (no ptrace, no /proc/<pid>/mem or fd access by the program's processes), reads the
tests from its stdin (a pipe only the bootstrap holds), binds the program's globals as proxies, runs the
(trusted) context and tests, and alone writes the status record on fd 5. Fds: 3 requests to the program,
4 replies from it, 6 "ready" to the bootstrap.
"""
from .codec import _dec, _enc, _json, _recv, _send  # shipped: the sandbox sends codec.py's text in place of this line
def _pi_verifier():
    import sys, os, builtins, errno, importlib, linecache
    try:
        import ctypes
        ctypes.CDLL(None).prctl(ctypes.c_int(4), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    except Exception:
        pass
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)
    payload = _json.loads(sys.stdin.buffer.read())
    _devnull = os.open(os.devnull, os.O_RDONLY); os.dup2(_devnull, 0); os.close(_devnull)
    try:
        os.write(6, b"r")
        os.close(6)
    except OSError:
        pass
    nonce = payload["nonce"].encode("ascii")
    STATUSES = {"syntax_error", "assertion_error", "exception", "memory_error", "network_blocked", "write_blocked",
                "permission_denied", "exit_called"}

    def report(status, detail=""):
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except Exception:
                pass
        d = str(detail)[:800].encode("utf-8", "replace").replace(b"\n", b" ")
        os.write(5, b"PI1 " + nonce + b" " + status.encode("ascii") + b" " + d)
        os._exit(0)

    class ProgramError(Exception):
        """An exception of the program under test of a type the tests' interpreter does not have."""
    class _Fatal(BaseException):
        """The program died, exited or broke the protocol: not catchable by ``except Exception`` in tests."""
    fatal = []
    def die(status, detail):
        if not fatal:
            fatal.append((status, detail))
        raise _Fatal(detail)

    remotes = {}
    def unref(x):
        if len(x) < 2 or type(x[-1]) is not int:
            raise ValueError("malformed reference")
        if x[0] == "M" and len(x) == 3 and type(x[1]) is str:
            top = x[1].split(".")[0]
            if x[1] in sys.modules or (top in sys.stdlib_module_names and not top.startswith("_")
                                       and top not in ("antigravity", "this", "idlelib", "turtledemo", "tkinter", "turtle")):
                try:
                    return importlib.import_module(x[1])
                except Exception:
                    pass
        r = remotes.get(x[-1])
        if r is None:
            r = remotes[x[-1]] = Remote(x[-1])
        return r
    def ref(v):
        if type(v) is Remote:
            return ["R", object.__getattribute__(v, "_pi_id")]
        raise TypeError(f"a {type(v).__name__} cannot be passed to the program under test")

    def raise_remote(e):
        if type(e) is not list or len(e) != 3 or type(e[0]) is not str or type(e[1]) is not str or not (e[2] is None or type(e[2]) is int):
            die("exception", "the program broke the test protocol (malformed exception)")
        name, msg, en = e
        if name == "SystemExit":
            die("exit_called", f"the program called exit({msg}) before its tests finished")
        cls = getattr(builtins, name, None)
        exc = None
        if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == "builtins":
            try:
                exc = cls(en, msg) if en is not None and issubclass(cls, OSError) else cls(msg)
            except Exception:
                exc = None
        if exc is None:
            exc = ProgramError(f"{name}: {msg}")
        exc._pi_remote = (name, msg, en)
        raise exc

    def rpc(op, *args, _kw=None):
        if fatal:
            raise _Fatal(fatal[0][1])
        msg = {"op": op, "a": [_enc(a, ref) for a in args]}
        if _kw:
            msg["k"] = {k: _enc(v, ref) for k, v in _kw.items()}
        try:
            _send(3, msg)
            rep = _recv(4)
        except (EOFError, OSError):
            die("program_died", "the program ended before its tests finished")
        except BaseException as e:
            die("exception", f"the program broke the test protocol ({type(e).__name__})")
        if type(rep) is not dict:
            die("exception", "the program broke the test protocol (malformed reply)")
        if "e" in rep:
            raise_remote(rep["e"])
        try:
            value = _dec(rep["v"], unref)
            if op == "call":
                for i, new in rep.get("b", ()):
                    target, new = args[1 + i], _dec(new, unref)
                    if type(target) is not type(new) or i < 0:
                        continue
                    if type(target) in (list, bytearray):
                        target[:] = new
                    elif type(target) in (dict, set):
                        target.clear()
                        target.update(new)
        except BaseException as e:
            die("exception", f"the program broke the test protocol ({type(e).__name__})")
        return value

    class Remote:
        """An object that lives in the program's interpreter; operations on it are run there. Comparisons
        with plain data are not forwarded (a program object is never equal to a test's value)."""
        __slots__ = ("_pi_id",)
        def __init__(self, rid):
            object.__setattr__(self, "_pi_id", rid)
        def __getattr__(self, name):
            if name.startswith("_pi_"):
                raise AttributeError(name)
            return rpc("getattr", self, name)
        def __setattr__(self, name, value):
            rpc("setattr", self, name, value)
        def __delattr__(self, name):
            rpc("delattr", self, name)
        def __call__(self, *a, **k):
            return rpc("call", self, *a, _kw=k)
        def __instancecheck__(self, inst):
            return rpc("isinstance", inst, self)
        def __subclasscheck__(self, sub):
            return rpc("issubclass", sub, self)
        def __format__(self, spec):
            return rpc("format", self, spec)
        def __round__(self, *a):
            return rpc("round", self, *a)
    def unary(op):
        return lambda self: rpc(op, self)
    def binary(op):
        return lambda self, other: rpc(op, self, other)
    def reflected(op):
        return lambda self, other: rpc(op, other, self)
    def compare(op):
        return lambda self, other: rpc(op, self, other) if type(other) is Remote else NotImplemented
    for dunder, op in (("repr", "repr"), ("str", "str"), ("bool", "bool"), ("len", "len"), ("iter", "iter"),
                       ("next", "next"), ("hash", "hash"), ("int", "int"), ("float", "float"), ("complex", "complex"),
                       ("index", "index"), ("neg", "neg"), ("pos", "pos"), ("abs", "abs"), ("invert", "invert"),
                       ("reversed", "reversed")):
        setattr(Remote, f"__{dunder}__", unary(op))
    for dunder, op in (("getitem", "getitem"), ("delitem", "delitem"), ("contains", "contains"), ("divmod", "divmod")):
        setattr(Remote, f"__{dunder}__", binary(op))
    Remote.__setitem__ = lambda self, k, v: rpc("setitem", self, k, v)
    for name in ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "pow", "lshift", "rshift", "and", "or", "xor"):
        op = name + "_" if name in ("and", "or") else name
        setattr(Remote, f"__{name}__", binary(op))
        setattr(Remote, f"__r{name}__", reflected(op))
    for name in ("eq", "ne", "lt", "le", "gt", "ge"):
        setattr(Remote, f"__{name}__", compare(name))

    NET = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ECONNREFUSED, errno.EADDRNOTAVAIL}
    def verdict(e):
        if isinstance(e, _Fatal) or fatal:
            return fatal[0] if fatal else ("exception", str(e))
        remote = getattr(e, "_pi_remote", None)
        name, msg, en = remote if remote else (type(e).__name__, str(e), getattr(e, "errno", None))
        if isinstance(e, AssertionError):
            import traceback
            line = ""
            for fr in traceback.extract_tb(e.__traceback__):
                if fr.filename in ("<tests>", "<context>"):
                    line = fr.line or line
            return "assertion_error", f"AssertionError: {line or msg}"
        if isinstance(e, MemoryError):
            return "memory_error", "MemoryError: the program exceeded its memory limit"
        if name == "SandboxNetworkError":
            return "network_blocked", f"network access blocked: {msg}"
        if name == "SandboxWriteError":
            return "write_blocked", f"write outside the working directory blocked: {msg}"
        if en in NET:
            return "network_blocked", f"network unreachable in the sandbox: {name}: {msg}"
        if name == "PermissionError" or en in (errno.EROFS, errno.EACCES, errno.EPERM):
            return "permission_denied", f"{name}: {msg}"
        return "exception", f"{name}: {msg}"

    try:
        first = _recv(4)
    except (EOFError, OSError):
        report("program_died", "the program ended before its definitions were complete")
    except BaseException as e:
        report("exception", f"the program broke the test protocol ({type(e).__name__})")
    if type(first) is not dict or not ("failed" in first or "ready" in first):
        report("exception", "the program broke the test protocol (malformed first message)")
    if "failed" in first:
        f = first["failed"]
        if type(f) is list and len(f) == 2 and f[0] in STATUSES and type(f[1]) is str:
            report(f[0], f[1])
        report("exception", "the program broke the test protocol (malformed failure)")
    defs = first["ready"]
    if type(defs) is not dict:
        report("exception", "the program broke the test protocol (malformed definitions)")
    ns = {"__name__": "__main__", "__builtins__": builtins}
    try:
        decoded = {k: _dec(v, unref) for k, v in defs.items() if type(k) is str and k.isidentifier()}
    except BaseException as e:
        report("exception", f"the program broke the test protocol ({type(e).__name__})")
    ns.update(decoded)
    try:
        context = payload.get("context")
        if context:
            linecache.cache["<context>"] = (len(context), None, context.splitlines(True), "<context>")
            exec(compile(context, "<context>", "exec"), ns)
            for n in payload.get("entry_points") or ():
                if n in decoded:
                    ns[n] = decoded[n]
        tests = payload.get("tests") or ""
        linecache.cache["<tests>"] = (len(tests), None, tests.splitlines(True), "<tests>")
        exec(compile(tests, "<tests>", "exec"), ns)
    except BaseException as e:
        report(*verdict(e))
    if fatal:
        report(*fatal[0])
    report("passed")
if __name__ == "__main__":
    _pi_verifier()
