"""The program's interpreter runs this first (shipped as text after codec.py's).

Trusted code that runs first in the program's interpreter: Python-level guards, then compile + exec of the
program read from stdin. Without separate tests (legacy single-string programs) it then writes one status
record on fd 3; with separate tests it sends its definitions to the verifier (fd 4) and serves the
verifier's requests (fd 3) until the verifier is done. Everything is local to a function (nothing in
``__main__``), the functions it needs are bound before the program runs, and tracing is refused.
"""
from .codec import _dec, _enc, _json, _recv, _send  # shipped: the sandbox sends codec.py's text in place of this line
def _pi_runner():
    import sys, os, builtins, io, errno, types, operator
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)
    cfg = _json.loads(sys.argv[1])
    raw = sys.stdin.buffer.read()
    nonce, _, src = raw.partition(b"\n")
    src = src.decode("utf-8", "surrogateescape")
    _devnull = os.open(os.devnull, os.O_RDONLY); os.dup2(_devnull, 0); os.close(_devnull)
    tests_mode = bool(cfg.get("tests"))
    _write, _exit, _send_, _recv_, _enc_, _dec_ = os.write, os._exit, _send, _recv, _enc, _dec
    _isinstance, _type, _str, _getattr, _BaseException = isinstance, type, str, getattr, BaseException

    class SandboxNetworkError(PermissionError):
        """Network access is disabled in the sandbox."""
    class SandboxWriteError(PermissionError):
        """Writing outside the sandbox working directory is not allowed."""
    class SandboxKillError(PermissionError):
        """Signalling processes outside the sandbox is not allowed."""
    builtins.SandboxNetworkError = SandboxNetworkError
    builtins.SandboxWriteError = SandboxWriteError

    import socket as _socket
    _AF_BLOCKED = {getattr(_socket, n) for n in ("AF_INET", "AF_INET6", "AF_PACKET") if hasattr(_socket, n)}
    _RealSocket = _socket.socket
    class _GuardedSocket(_RealSocket):
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            fam = _socket.AF_INET if family == -1 else family
            if fileno is None and fam in _AF_BLOCKED:
                raise SandboxNetworkError(errno.EACCES, "network access is disabled in the sandbox")
            super().__init__(family, type, proto, fileno)
    def _no_net(*a, **k):
        raise SandboxNetworkError(errno.EACCES, "network access is disabled in the sandbox")
    _socket.socket = _GuardedSocket
    _socket.SocketType = _GuardedSocket
    _socket.create_connection = _no_net
    _socket.getaddrinfo = _no_net
    _socket.gethostbyname = _no_net
    _socket.create_server = _no_net

    _CWD = os.path.realpath(os.getcwd())
    _ALLOWED = (_CWD + os.sep,)
    def _inside(path):
        try:
            p = os.fspath(path)
        except TypeError:
            return True  # file descriptors
        if isinstance(p, bytes):
            p = os.fsdecode(p)
        if p in (os.devnull, "/dev/stdout", "/dev/stderr"):
            return True
        r = os.path.realpath(os.path.join(_CWD, p))
        return r == _CWD or r.startswith(_ALLOWED)
    def _check(path):
        if not _inside(path):
            raise SandboxWriteError(errno.EACCES, "writing outside the sandbox working directory is not allowed", os.fspath(path) if not isinstance(path, int) else path)
    _real_open = builtins.open
    def _open(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+"):
            _check(file)
        return _real_open(file, mode, *a, **k)
    builtins.open = _open
    io.open = _open
    _real_os_open = os.open
    _WFLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    def _os_open(path, flags, *a, **k):
        if flags & _WFLAGS:
            _check(path)
        return _real_os_open(path, flags, *a, **k)
    os.open = _os_open
    def _guard1(fn):
        def g(path, *a, **k):
            _check(path); return fn(path, *a, **k)
        return g
    def _guard2(fn):
        def g(src, dst, *a, **k):
            _check(src); _check(dst); return fn(src, dst, *a, **k)
        return g
    for _n in ("remove", "unlink", "rmdir", "mkdir", "makedirs", "chmod", "chown", "lchown", "truncate", "mkfifo", "utime", "removedirs"):
        if hasattr(os, _n): setattr(os, _n, _guard1(getattr(os, _n)))
    for _n in ("rename", "replace", "link", "symlink"):
        if hasattr(os, _n): setattr(os, _n, _guard2(getattr(os, _n)))
    _PGID = os.getpgid(0)
    _real_kill, _real_killpg = os.kill, os.killpg
    def _kill(pid, sig):
        try:
            mine = pid == os.getpid() or (pid > 0 and os.getpgid(pid) == _PGID) or (pid < -1 and -pid == _PGID) or pid == 0
        except OSError:
            mine = False
        if not mine:
            raise SandboxKillError(errno.EPERM, "signalling processes outside the sandbox is not allowed")
        return _real_kill(pid, sig)
    def _killpg(pg, sig):
        if pg not in (0, _PGID):
            raise SandboxKillError(errno.EPERM, "signalling processes outside the sandbox is not allowed")
        return _real_killpg(pg, sig)
    os.kill, os.killpg = _kill, _killpg

    def _audit(event, args):
        if event in ("sys.settrace", "sys.setprofile"):
            raise RuntimeError("tracing and profiling hooks are disabled in the sandbox")
    sys.addaudithook(_audit)

    def _safe_str(x):
        try:
            return _str(x)
        except _BaseException:
            return "<unprintable>"
    _NET_ERRNO = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ECONNREFUSED, errno.EADDRNOTAVAIL}
    def _classify(e):
        name = _safe_str(_getattr(_type(e), "__name__", "Exception"))
        if _isinstance(e, SystemExit):
            return "exit_called", f"the program called exit({_safe_str(e.code)}) before its tests finished"
        if _isinstance(e, AssertionError):
            try:
                import traceback
                tb = traceback.extract_tb(e.__traceback__)
                line = tb[-1].line if tb else ""
            except _BaseException:
                line = ""
            return "assertion_error", f"AssertionError: {line or _safe_str(e)}"
        if _isinstance(e, MemoryError):
            return "memory_error", "MemoryError: the program exceeded its memory limit"
        if _isinstance(e, SandboxNetworkError):
            return "network_blocked", f"network access blocked: {_safe_str(e)}"
        if _isinstance(e, SandboxWriteError):
            return "write_blocked", f"write outside the working directory blocked: {_safe_str(e)}"
        if _isinstance(e, OSError):
            if e.errno in _NET_ERRNO:
                return "network_blocked", f"network unreachable in the sandbox: {name}: {_safe_str(e)}"
            if _isinstance(e, PermissionError) or e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                return "permission_denied", f"{name}: {_safe_str(e)}"
        return "exception", f"{name}: {_safe_str(e)}"

    def _flush():
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except _BaseException:
                pass

    def _report(status, detail=""):  # legacy mode only
        _flush()
        d = detail[:800].encode("utf-8", "replace").replace(b"\n", b" ")
        try:
            _write(3, b"PI1 " + nonce + b" " + status.encode("ascii") + b" " + d)
        except OSError:
            pass
        _exit(0)

    def _fail(status, detail):  # tests mode: tell the verifier why the program never got ready
        _flush()
        try:
            _send_(4, {"failed": [status, detail[:800]]})
        except _BaseException:
            pass
        _exit(0)
    done = _fail if tests_mode else _report

    try:
        code = compile(src, "<program>", "exec")
    except (SyntaxError, ValueError) as e:
        done("syntax_error", f"{type(e).__name__}: {e}")
    import linecache
    linecache.cache["<program>"] = (len(src), None, src.splitlines(True), "<program>")
    del src, raw
    main = types.ModuleType("__main__")
    g = main.__dict__
    g["__builtins__"] = builtins
    sys.modules["__main__"] = main
    try:
        exec(code, g)
    except _BaseException as e:
        done(*_classify(e))
    if not tests_mode:
        _report("passed")

    objs = {}
    def ref(v):
        objs[id(v)] = v
        if _type(v) is types.ModuleType:
            return ["M", _safe_str(_getattr(v, "__name__", "")), id(v)]
        return ["R", id(v)]
    def unref(x):
        if len(x) < 2 or _type(x[-1]) is not int or x[-1] not in objs:
            raise ValueError("unknown reference")
        return objs[x[-1]]
    names = {}
    for k, v in list(g.items()):
        if _type(k) is not str or k.startswith("__"):
            continue
        try:
            names[k] = _enc_(v, ref)
        except _BaseException:
            names[k] = ref(v)
    _flush()
    try:
        _send_(4, {"ready": names})
    except _BaseException:
        _exit(0)
    ops = {"call": lambda f, *a, **k: f(*a, **k), "getattr": getattr, "setattr": setattr, "delattr": delattr,
           "len": len, "bool": bool, "iter": iter, "next": next, "repr": repr, "str": str, "hash": hash, "int": int,
           "float": float, "complex": complex, "format": format, "isinstance": isinstance,
           "issubclass": issubclass, "dir": dir, "round": round, "reversed": reversed, "divmod": divmod}
    for n in ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "pow", "lshift", "rshift", "and_", "or_",
              "xor", "neg", "pos", "abs", "invert", "index", "getitem", "setitem", "delitem", "contains", "eq", "ne",
              "lt", "le", "gt", "ge"):
        ops[n] = getattr(operator, n)
    MUTABLE = (list, dict, set, bytearray)
    while True:
        try:
            msg = _recv_(3)
        except _BaseException:
            _flush()
            _exit(0)
        try:
            op = msg["op"]
            args = [_dec_(a, unref) for a in msg.get("a", [])]
            kw = {k: _dec_(a, unref) for k, a in msg.get("k", {}).items()}
            out = {"v": _enc_(ops[op](*args, **kw), ref)}
            if op == "call":
                back = [[i, _enc_(a, ref)] for i, a in enumerate(args[1:]) if _type(a) in MUTABLE]
                if back:
                    out["b"] = back
        except _BaseException as e:
            en = _getattr(e, "errno", None)
            detail = _safe_str(e.code) if _isinstance(e, SystemExit) else _safe_str(e)
            out = {"e": [_safe_str(_getattr(_type(e), "__name__", "Exception")), detail[:2000],
                         en if _type(en) is int else None]}
        _flush()
        try:
            _send_(4, out)
        except _BaseException as e:
            try:
                _send_(4, {"e": ["ValueError", f"the result could not be sent to the tests: {_safe_str(e)}"[:2000], None]})
            except _BaseException:
                _exit(0)
if __name__ == "__main__":
    _pi_runner()
