"""The first process of every sample (shipped as text; stdlib only).

Runs first (as the evaluator's uid; in namespace/userns modes as root of the new namespaces, PID 1 there: when
it exits the kernel kills everything the program left behind). It joins the sample's cgroup, sets up the
private mounts (namespace modes), then starts the verifier (tests mode) and, once the verifier is
non-dumpable, the program's runner, each with only its own descriptors, its limits, its uid, and for the
program a seccomp filter (no AF_UNIX sockets, no io_uring) and no capabilities.
"""
if __name__ == "__main__":
    import ctypes, ctypes.util, os, sys, json, resource, signal, fcntl, struct
    cfg = json.loads(sys.argv[1])
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    def prctl(opt, a=0, b=0, c=0, d=0):
        return libc.prctl(ctypes.c_int(opt), ctypes.c_ulong(a), ctypes.c_ulong(b), ctypes.c_ulong(c), ctypes.c_ulong(d))
    prctl(4, 0)  # PR_SET_DUMPABLE 0
    payload = json.loads(sys.stdin.buffer.read())
    _dn = os.open(os.devnull, os.O_RDONLY); os.dup2(_dn, 0); os.close(_dn)
    for f in cfg["cgroup_procs"]:
        try:
            with open(f, "w") as fh:
                fh.write("0")
        except OSError as e:
            sys.stderr.write(f"sandbox bootstrap: cannot join the sample cgroup {f}: {e}\n"); os._exit(121)
    MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE, MS_BIND = 2, 4, 16384, 1 << 18, 4096
    def mount(src, target, fstype, flags, data):
        return libc.mount(src.encode(), target.encode(), fstype.encode() if fstype else None, flags, data.encode() if data else None) == 0
    ro = False
    if cfg["ns"]:
        mount("none", "/", None, MS_REC | MS_PRIVATE, None)
        # the interpreter's folders, held open (O_PATH) before the private mounts below may cover them (a clone under
        # /tmp, /run, /dev/shm, or under root's closed /root), so they can be bound back read-only whatever their path
        held = []
        for p in cfg["expose"]:
            try:
                held.append((p, os.open(p, os.O_PATH | os.O_CLOEXEC)))
            except OSError:
                pass
        class MountAttr(ctypes.Structure):
            _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]
        def read_only(path, recursive=True):
            # mount_setattr(AT_FDCWD, path, AT_RECURSIVE, &attr, sizeof attr); syscall 442 on x86_64 and aarch64
            try:
                attr = MountAttr(1, 0, 0, 0)  # MOUNT_ATTR_RDONLY
                return libc.syscall(442, -100, path.encode(), 0x8000 if recursive else 0, ctypes.byref(attr), ctypes.sizeof(attr)) == 0
            except Exception:
                return False
        ro = read_only("/")
        size = f"size={cfg['tmpfs_mb']}m"
        ok_tmp = mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, size + ",mode=1777")
        # /run holds the host's service sockets (dbus, systemd, docker...): a fresh tmpfs hides all of them
        for d in ("/var/tmp", "/dev/shm", "/run"):
            if os.path.isdir(d):
                mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, size + ",mode=1777" if d != "/run" else "size=1m,mode=755")
        if os.path.isdir("/run") and not os.path.exists("/run/lock"):
            try:
                os.mkdir("/run/lock"); os.chmod("/run/lock", 0o1777)
            except OSError:
                pass
        if not ok_tmp:
            sys.stderr.write("sandbox bootstrap: could not mount a private /tmp\n"); os._exit(121)
        writable = {os.stat(d).st_dev for d in ("/tmp", "/var/tmp", "/dev/shm", "/run") if os.path.isdir(d)}
        made, ours = [], set(writable)  # tmpfs mounts made for the interpreter's paths (read-only at the end)
        def own_tmpfs(d):
            if not mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755"):
                raise OSError(f"cannot mount a tmpfs on {d}: errno {ctypes.get_errno()}")
            made.append(d); ours.add(os.stat(d).st_dev)
        def expose(path, fd):
            # make `path` (held open as `fd`) visible at `path`, read-only, to the program's uid: folders a private
            # mount covered are recreated on a tmpfs of their own; an ancestor that uid cannot cross (e.g. /root,
            # 0700) is covered by an empty tmpfs (the rest of it stays hidden); then the held folder is bound there
            cur = ""
            for name in path.strip("/").split("/")[:-1]:
                cur += "/" + name
                try:
                    st = os.lstat(cur)
                except FileNotFoundError:
                    parent = os.stat(os.path.dirname(cur)).st_dev
                    if parent not in ours:
                        raise OSError(f"{cur} is missing outside the sandbox's own mounts") from None
                    os.mkdir(cur, 0o755)
                    if parent in writable:  # not in the program's writable /tmp: on a tmpfs made read-only below
                        own_tmpfs(cur)
                    continue
                if st.st_mode & 0o170000 == 0o120000:
                    return  # reached through a symlink: its target is exposed as its own entry
                if cfg["uid"] is not None and not st.st_mode & 0o001 and not any(cur.startswith(d + "/") for d in done):
                    own_tmpfs(cur)
            want = os.fstat(fd)
            try:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
                    return  # visible as it is
            except FileNotFoundError:
                if os.stat(os.path.dirname(path)).st_dev not in ours:
                    raise OSError(f"{path} is missing outside the sandbox's own mounts") from None
                if want.st_mode & 0o170000 == 0o040000:
                    os.mkdir(path, 0o755)
                else:
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o755))
            if not mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC, None):
                raise OSError(f"bind mount failed: errno {ctypes.get_errno()}")
            if not read_only(path):
                flags = os.statvfs(path).f_flag & 14  # keep nosuid, nodev, noexec (locked in a user namespace)
                if not mount("none", path, None, 32 | MS_BIND | 1 | flags, None):  # MS_REMOUNT | MS_BIND | MS_RDONLY
                    raise OSError("cannot make it read-only")
        old_mask, done = os.umask(0o022), []
        for p, fd in held:
            try:
                expose(p, fd)
                done.append(p)
            except OSError as e:
                sys.stderr.write(f"sandbox bootstrap: cannot make {p} visible in the sandbox: {e}\n")
            os.close(fd)
        os.umask(old_mask)
        for d in made:
            if not read_only(d):
                mount("none", d, None, 32 | 1 | MS_NOSUID | MS_NODEV, "size=1m,mode=755")  # MS_REMOUNT | MS_RDONLY
        work, vwork = "/tmp/work", "/tmp/verify"
        while os.path.lexists(work) or os.path.lexists(vwork):  # (an interpreter under /tmp/work)
            work, vwork = work + "_", vwork + "_"
        os.mkdir(work, 0o700)
        os.mkdir(vwork, 0o700)
    else:
        work, vwork = cfg["work"], cfg["vwork"]
    uid, vuid = cfg["uid"], cfg["vuid"]
    if uid is not None:
        os.chown(work, uid, uid)
    if vuid is not None:
        os.chown(vwork, vuid, vuid)
    
    def hi(fd):
        n = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)
        os.close(fd)
        return n
    def pipe():
        r, w = os.pipe()
        return hi(r), hi(w)
    def lim(res, soft, hard=None):
        try: resource.setrlimit(res, (soft, soft if hard is None else hard))
        except (ValueError, OSError): pass
    def count_uid_procs():
        n, me = 0, os.getuid()
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    if os.stat("/proc/" + p).st_uid == me: n += 1
                except OSError: pass
        return n
    def seccomp():
        # deny socket(AF_UNIX, ...) (host service sockets, abstract sockets), io_uring_setup (it would bypass the
        # filter), foreign syscall ABIs (x32, i386); allow everything else
        arch, nr_socket = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}.get(os.uname().machine, (None, None))
        if arch is None:
            return False
        err, allow = 0x00050000 | 13, 0x7FFF0000
        ins = [(0x20, 0, 0, 4), (0x15, 1, 0, arch), (0x06, 0, 0, err), (0x20, 0, 0, 0), (0x35, 5, 0, 0x40000000),
               (0x15, 4, 0, 425), (0x15, 0, 2, nr_socket), (0x20, 0, 0, 16), (0x15, 1, 0, 1), (0x06, 0, 0, allow),
               (0x06, 0, 0, err)]
        buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in ins))
        class FProg(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
        prog = FProg(len(ins), ctypes.addressof(buf))
        if prctl(38, 1) != 0:  # PR_SET_NO_NEW_PRIVS
            return False
        return libc.prctl(ctypes.c_int(22), ctypes.c_ulong(2), ctypes.byref(prog), ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0
    def child(fdmap, argv, env, cwd, uid, nproc, count_procs=False, filt=False, dropcaps=False):
        pid = os.fork()
        if pid:
            return pid
        try:
            for t, s in fdmap.items():
                os.dup2(s, t)
            os.closerange(max(fdmap) + 1, 1 << 16)
            lim(resource.RLIMIT_AS, cfg["as"]); lim(resource.RLIMIT_CPU, cfg["cpu"], cfg["cpu"] + 1)
            lim(resource.RLIMIT_FSIZE, cfg["fsize"]); lim(resource.RLIMIT_CORE, 0); lim(resource.RLIMIT_NOFILE, 256)
            if nproc is not None:
                lim(resource.RLIMIT_NPROC, nproc + (count_uid_procs() if count_procs else 0))
            if dropcaps:
                prctl(47, 4)  # PR_CAP_AMBIENT_CLEAR_ALL
                for cap in range(64):
                    if prctl(24, cap) != 0:  # PR_CAPBSET_DROP
                        break
            if uid is not None:
                os.setgroups([]); os.setgid(uid); os.setuid(uid)
            if filt and not seccomp():
                sys.stderr.write("sandbox bootstrap: seccomp filter unavailable\n")
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        except BaseException as e:
            sys.stderr.write(f"sandbox bootstrap: cannot start the program: {type(e).__name__}: {e}\n")
        finally:
            os._exit(122)
    def feed(fd, data):
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            pass
        finally:
            os.close(fd)
    def code_of(status):
        return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    
    env = dict(cfg["env"], HOME=work, TMPDIR=work, PROMPTINTERN_SANDBOX_RO=str(int(ro)))
    venv = dict(cfg["env"], HOME=vwork, TMPDIR=vwork)
    status = hi(cfg["status_fd"])
    try:
        program = payload["program"].encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        program = payload["program"].encode("utf-8", "surrogatepass")
    program = payload["nonce"].encode("ascii") + b"\n" + program
    prog_r, prog_w = pipe()
    prog_kw = dict(uid=uid, nproc=cfg["nproc"], count_procs=cfg["count_procs"], filt=cfg["seccomp"], dropcaps=cfg["dropcaps"])
    if payload.get("tests") is None:
        pc = child({0: prog_r, 1: 1, 2: 2, 3: status}, cfg["argv"], env, work, **prog_kw)
        os.close(prog_r); os.close(status)
        feed(prog_w, program)
        result = None
        while result is None:
            try:
                pid, st = os.waitpid(-1, 0)
            except ChildProcessError:
                os._exit(123)
            except InterruptedError:
                continue
            if pid == pc:
                result = code_of(st)
        os._exit(result)
    req_r, req_w = pipe(); rep_r, rep_w = pipe(); rdy_r, rdy_w = pipe(); t_r, t_w = pipe()
    pt = child({0: t_r, 1: 1, 2: 2, 3: req_w, 4: rep_r, 5: status, 6: rdy_w}, cfg["vargv"], venv, vwork, vuid, cfg["vnproc"])
    for fd in (t_r, req_w, rep_r, status, rdy_w):
        os.close(fd)
    feed(t_w, json.dumps(dict(payload["tests"], nonce=payload["nonce"])).encode("ascii"))
    try:
        os.read(rdy_r, 1)  # the verifier is non-dumpable before any code of the program exists
    except OSError:
        pass
    os.close(rdy_r)
    pc = child({0: prog_r, 1: 1, 2: 2, 3: req_r, 4: rep_w}, cfg["argv"], env, work, **prog_kw)
    for fd in (prog_r, req_r, rep_w):
        os.close(fd)
    feed(prog_w, program)
    c_code = t_code = None
    while t_code is None:
        try:
            pid, st = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == pc:
            c_code = code_of(st)
        elif pid == pt:
            t_code = code_of(st)
    if c_code is None:
        try:
            os.kill(pc, signal.SIGKILL)
        except OSError:
            pass
    os._exit(c_code if c_code is not None else (t_code or 0))
