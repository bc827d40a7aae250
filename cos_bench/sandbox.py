"""Run model-written programs in a sandbox: a security boundary, not a convenience.

Every program is untrusted. Each one runs in its own subprocess through a small
launcher (this very file, run as a script) that:

- starts it in a new session and process group (no controlling terminal), in a fresh
  working directory, with a scrubbed environment and resource limits (CPU seconds,
  address space, file size, open files, process count; no core files);
- as root, runs it as a fresh unprivileged uid/gid from a range that nothing else
  uses, with no supplementary groups and no_new_privs, so that RLIMIT_NPROC binds, it
  cannot signal or read our processes, and afterwards every process of that uid can
  be killed without hitting anyone else's; where a cgroup v1 memory controller is
  writable, all its processes together also share one memory cap;
- where the kernel allows (root, or an unprivileged user namespace), gives it new
  network, PID, IPC and mount namespaces: no network at all (not even loopback); no
  view of other processes, under a small init that exits with the program, whereupon
  the kernel kills every process the program left behind; the whole filesystem
  read-only, with fresh size-capped tmpfs mounts on /tmp (which holds the working
  directory), /var/tmp and /dev/shm, and empty ones on /run (service sockets) and
  /dev/pts (terminals); all of it vanishes with the namespace;
- kills the program's whole process group at the wall-clock timeout;
- dies with its caller: the launcher watches a pipe that only the caller holds open
  (`caller_fd`), and when the caller dies, even by SIGKILL, it kills the program and
  removes the program's folder and cgroup itself; the namespace's init and the program
  have PR_SET_PDEATHSIG, so a killed launcher takes them with it (in a PID namespace, with
  everything the program started). Whatever a killed launcher still left (folders `cos-bench-sandbox-OWNER-*`, cgroups `cos-bench-OWNER-*`, where OWNER is
  the benchmark's `pid-starttime`) is removed by the next benchmark to start here, once
  that owner is dead: two benchmarks may run at once.

With `must_finish`, a program passes only if it also proves that its last statement
returned, not merely that it exited with status 0: see `_FINISH_HARNESS`.

Which of these layers this machine allows is probed once (`sandbox_isolation`)
and reported: `Verdict.isolated_network` says whether a result ran without a
network. As root without a working uid drop it refuses to run anything.
Running programs is refused unless the user opts in (`allow=True`, which the CLI
sets from --allow-code-eval, or COS_BENCH_ALLOW_CODE_EVAL=1).

Linux only. The launcher half (`_launcher_main` and below) runs as
`python -I -S sandbox.py SPEC`, so this module imports nothing but the standard
library at the top.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import resource
import select
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

CODE_EVAL_ENV = "COS_BENCH_ALLOW_CODE_EVAL"

# Fresh uids come from this range: above systemd's container range (0x00080000-0x6FFFFFFF)
# and below its "foreign" range (0x7FFE0000), where no distribution allocates users.
_UID_RANGE = (0x70000000, 0x7F000000)
_SANDBOX_DIR = "/tmp/sandbox"  # the program's cwd inside the namespaces (on the private /tmp)
_PROGRAM_FILE = "program.py"
_LAUNCHER_GRACE_S = 10.0  # the launcher enforces the timeout; this backstop catches a stuck launcher
_STDERR_TAIL_BYTES = 4096


@dataclass(frozen=True)
class Verdict:
    """How one program ended. status: "passed" | "failed" | "timed out" | "crashed"."""

    status: str
    reason: str
    isolated_network: bool
    duration_s: float


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits; cpu_s=None means the wall-clock timeout, rounded up, plus one."""

    cpu_s: int | None = None
    memory_bytes: int = 1 << 30  # address space: a memory hog gets MemoryError, not the OOM killer
    file_bytes: int = 16 << 20  # largest file it may write (SIGXFSZ beyond)
    processes: int = 64  # RLIMIT_NPROC for its uid: bounds a fork bomb
    open_files: int = 256
    tmpfs_bytes: int = 64 << 20  # size of the private /tmp (and its working directory)
    # All its processes together, tmpfs files included, where a memory cgroup can be made:
    # without one, a fork bomb of memory hogs could take processes x memory_bytes.
    total_memory_bytes: int = 2 << 30


@dataclass(frozen=True)
class Isolation:
    """What this machine allows: see the module docstring. note says what is missing and why."""

    drop_privileges: bool  # runs as a fresh unprivileged uid (only possible as root)
    namespaces: bool  # own network (none), PID, IPC and mount namespaces; read-only filesystem
    note: str
    memory_cgroup: bool = False  # programs get a memory cgroup capped at Limits.total_memory_bytes

    @property
    def mode(self) -> str:
        if self.namespaces:
            return "root-ns" if self.drop_privileges else "user-ns"
        return "plain"


def _error(message: str) -> Exception:
    # Imported here, not at the top: the launcher runs this file with no package on sys.path.
    from cos_bench.errors import CosBenchError

    return CosBenchError(message)


def code_eval_allowed(allow: bool = False) -> bool:
    """True when the user opted in to running generated code, by flag or environment."""
    return allow or os.environ.get(CODE_EVAL_ENV) == "1"


def require_code_eval_opt_in(allow: bool = False) -> None:
    if not code_eval_allowed(allow):
        raise _error(
            "running model-written code is disabled: pass --allow-code-eval or set "
            f"{CODE_EVAL_ENV}=1 to run it in the sandbox on this machine"
        )


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed (Chen et al. 2021): 1 - C(n-c, k)/C(n, k)."""
    if n < 1 or not 0 <= c <= n or k < 1:
        raise ValueError(f"pass_at_k needs n >= 1, 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if k > n:
        raise _error(f"pass@{k} needs at least {k} samples per problem, got {n}: sample more or lower k")
    if n - c < k:
        return 1.0
    # The product form avoids huge binomials: C(n-c, k)/C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i).
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def run_programs(
    programs: Sequence[str],
    timeout_s: float = 10.0,
    workers: int | None = None,
    allow: bool = False,
    limits: Limits | None = None,
    must_finish: bool = False,
) -> list[Verdict]:
    """Run each program (Python source) in its own sandbox, in parallel; one Verdict each, in order.

    must_finish: "passed" also needs proof that the program's top level ran to its end (its tests
    ran): an exit with status 0 before that (sys.exit(0), os._exit(0), an exit hook) is "failed".
    """
    from concurrent.futures import ThreadPoolExecutor

    require_code_eval_opt_in(allow)
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    isolation = sandbox_isolation()
    limits = limits or Limits()
    workers = workers or len(os.sched_getaffinity(0))
    # Threads only wait on subprocesses, so they parallelise across cores despite the GIL.
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cos-bench-sandbox") as pool:
        return list(pool.map(lambda program: _run_one(program, timeout_s, limits, isolation, must_finish), programs))


_isolation_cache: list[Isolation] = []
_isolation_lock = threading.Lock()


def sandbox_isolation() -> Isolation:
    """Probe once per process which isolation layers work here (runs two or three tiny programs).

    First it removes what sandboxes of dead benchmarks left behind.
    """
    with _isolation_lock:
        if not _isolation_cache:
            _remove_stale_sandboxes()
            _isolation_cache.append(_probe_isolation())
        return _isolation_cache[0]


def _probe_isolation() -> Isolation:
    if not sys.platform.startswith("linux"):
        raise _error("the code sandbox needs Linux: run the code-execution tasks on a Linux machine")
    root = os.geteuid() == 0
    if root:
        candidates = [
            Isolation(True, True, ""),
            Isolation(True, False, "no namespaces, so programs may use the network and write to /tmp"),
        ]
    else:
        candidates = [
            Isolation(False, True, "not root, so programs run as your user (inside namespaces)"),
            Isolation(
                False,
                False,
                "no namespaces, so programs run as your user with the network and may write wherever you can: only resource limits apply",
            ),
        ]
    problems = []
    for candidate in candidates:
        verdict = _run_one("", 30.0, Limits(), candidate, must_finish=False)
        if verdict.status == "passed":
            cgroup = candidate.drop_privileges and _memory_cgroup_works()
            if not cgroup:
                problems.append("no memory cgroup, so memory is capped per process only")
            note = "; ".join([*problems, candidate.note] if candidate.note else problems)
            return Isolation(candidate.drop_privileges, candidate.namespaces, note, cgroup)
        problems.append(f"{candidate.mode} sandbox unavailable ({verdict.reason})")
    if root:
        raise _error(
            "cannot run generated code safely as root: "
            + "; ".join(problems)
            + ": run cos-bench as an unprivileged user, or where namespaces and setuid work"
        )
    raise _error("cannot start sandboxed programs: " + "; ".join(problems) + ": check that Python runs here")


# ---------------------------------------------------------------------------------------------
# Parent side: one program.


def _run_one(program: str, timeout_s: float, limits: Limits, isolation: Isolation, must_finish: bool) -> Verdict:
    import secrets
    import tempfile
    import time

    start = time.monotonic()
    owner = _owner()
    uid = _claim_uid() if isolation.drop_privileges else None
    cgroup = None
    if isolation.memory_cgroup:
        cgroup = _make_memory_cgroup(f"cos-bench-{owner}-{uid}", limits.total_memory_bytes)
    host_dir = tempfile.mkdtemp(prefix=f"cos-bench-sandbox-{owner}-")
    token = secrets.token_hex(16) if must_finish else None
    try:
        program_path = os.path.join(host_dir, _PROGRAM_FILE)
        with open(program_path, "w", encoding="utf-8") as f:
            f.write(program)
        if uid is not None and not isolation.namespaces:
            os.chown(host_dir, uid, uid)  # it runs in place, as that uid
            os.chown(program_path, uid, uid)
        spec = _launch_spec(timeout_s, limits, isolation, uid, cgroup)
        spec["host_dir"] = host_dir  # for the launcher to remove should we die first
        report, stderr_tail, proof = _launch(host_dir, spec, timeout_s, token)
    finally:
        leftovers = _kill_uid(uid) if uid is not None else 0
        _release_uid(uid)
        _remove_tree(host_dir)
        oom_kills = _remove_cgroup(cgroup) if cgroup else 0
    finished = token is None or token.encode() in proof
    status, reason = _verdict(report, stderr_tail, timeout_s, limits, finished)
    if leftovers:
        reason += f"; killed {leftovers} leftover process(es)"
    if oom_kills and status != "passed":
        reason += f"; the kernel killed {oom_kills} process(es) at the total memory limit of "
        reason += f"{limits.total_memory_bytes >> 20} MiB"
    return Verdict(status, reason, isolation.namespaces, time.monotonic() - start)


def _launch_spec(timeout_s: float, limits: Limits, isolation: Isolation, uid: int | None, cgroup: str | None) -> dict:
    workdir = _SANDBOX_DIR if isolation.namespaces else None
    return {
        "mode": isolation.mode,
        "uid": uid,
        "timeout_s": timeout_s,
        "python": _program_interpreter(isolation),
        # Running in place as another uid, the host directory's ancestors may be closed to it
        # (a private TMPDIR): the magic link reaches the file through the open cwd instead.
        "script": "/proc/self/cwd/" + _PROGRAM_FILE if uid is not None and not workdir else _PROGRAM_FILE,
        "expose": _interpreter_paths(),
        "cgroup": cgroup,
        "env": {  # scrubbed: nothing of ours (tokens, keys) reaches the program
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": workdir or ".",
            "TMPDIR": "/tmp" if workdir else ".",
            "LANG": "C.UTF-8",
        },
        "limits": {
            "cpu_s": limits.cpu_s or math.ceil(timeout_s) + 1,
            "memory_bytes": limits.memory_bytes,
            "file_bytes": limits.file_bytes,
            "processes": limits.processes,
            "open_files": limits.open_files,
            "tmpfs_bytes": limits.tmpfs_bytes,
        },
    }


def _program_interpreter(isolation: Isolation) -> str:
    """Our interpreter, unless the unprivileged uid cannot reach it and no namespace can expose it."""
    import shutil

    if not isolation.drop_privileges or isolation.namespaces:
        return sys.executable
    if not _blocked_ancestor(os.path.realpath(sys.executable)):
        return sys.executable
    # E.g. a pyenv Python under /root: take the system's python3 (the programs need only the stdlib).
    system_python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    return system_python or sys.executable


def _interpreter_paths() -> list[str]:
    """Directories the interpreter needs; the launcher re-exposes any hidden behind a private one (/root)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    return sorted(os.path.realpath(p) for p in paths)


def _launch(host_dir: str, spec: dict, timeout_s: float, token: str | None) -> tuple[dict, str, bytes]:
    """Start the launcher, wait for it; return its report, the tail of stderr and what came on the proof pipe."""
    import subprocess
    import tempfile

    ours, theirs = _open_channels(token)
    spec.update(theirs)
    try:
        with tempfile.TemporaryFile() as stderr_file:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-B", os.path.abspath(__file__), json.dumps(spec)],
                    cwd=host_dir,
                    env={"PATH": "/usr/bin:/bin"},
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,  # unbounded output must not fill our memory
                    stderr=stderr_file,  # a file, bounded by the program's RLIMIT_FSIZE
                    pass_fds=tuple(theirs.values()),
                    start_new_session=True,  # own process group, and no controlling terminal to type into
                )
            finally:
                _close_all(theirs.values())  # the launcher holds them now: EOF once it and the program are gone
            try:
                proc.wait(timeout=timeout_s + _LAUNCHER_GRACE_S)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)  # the launcher is not reaped yet, so its group id is still ours
                proc.wait()
            report = _parse_report(_read_available(ours["report"]))
            if not report:
                report = {"launcher_error": f"the sandbox launcher ended without a report (exit {proc.returncode})"}
            proof = _read_available(ours["proof"]) if "proof" in ours else b""
            return report, _tail(stderr_file), proof
    finally:
        _close_all(ours.values())  # the lifeline too: the launcher is gone


def _open_channels(token: str | None) -> tuple[dict[str, int], dict[str, int]]:
    """Pipes to the launcher: our ends by name, and its ends by spec key.

    caller_fd is the launcher's lifeline: we never write to it, so it reads EOF exactly when
    every holder of our end is gone — when this process dies, however it dies. (Not
    PR_SET_PDEATHSIG: that fires when the forking thread, here a pool worker, exits, and it would
    kill the launcher, which must live on to clean up.) With a token,
    token_fd holds it (read once, by the program's harness) and proof_fd is where the harness
    writes it back once the program's top level has returned.
    """
    ours, theirs = {}, {}
    ours["report"], theirs["report_fd"] = os.pipe()
    theirs["caller_fd"], ours["lifeline"] = os.pipe()
    if token is not None:
        theirs["token_fd"], token_write = os.pipe()
        os.write(token_write, token.encode())  # 32 bytes: a pipe holds far more, so this never blocks
        os.close(token_write)
        ours["proof"], theirs["proof_fd"] = os.pipe()
    return ours, theirs


def _close_all(fds) -> None:
    for fd in fds:
        os.close(fd)


def _read_available(read_fd: int) -> bytes:
    """What is in the pipe now (at most its 64 KiB): every writer is gone, but never wait on a stray copy."""
    os.set_blocking(read_fd, False)
    chunks = []
    try:
        while chunk := os.read(read_fd, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


def _parse_report(data: bytes) -> dict:
    report: dict = {}
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            report.update(json.loads(line))
        except ValueError:
            continue
    return report


def _tail(stderr_file) -> str:
    stderr_file.seek(0, os.SEEK_END)
    size = stderr_file.tell()
    stderr_file.seek(max(0, size - _STDERR_TAIL_BYTES))
    return stderr_file.read().decode("utf-8", "replace")


def _verdict(report: dict, stderr_tail: str, timeout_s: float, limits: Limits, finished: bool) -> tuple[str, str]:
    """finished: the program proved that its top level returned, or no proof was asked for."""
    if "setup_error" in report:
        return "crashed", f"sandbox setup failed: {report['setup_error']}"
    if "launcher_error" in report:
        return "crashed", f"{report['launcher_error']}: {_last_line(stderr_tail)}"
    if report.get("timed_out"):
        return "timed out", f"wall-clock limit of {timeout_s:g}s exceeded"
    # In namespaces the child is the namespace's init, which passes on the program's status.
    code = os.waitstatus_to_exitcode(report.get("program_status", report["child_status"]))
    if code == 0:
        return ("passed", "exit status 0") if finished else _unfinished_verdict(stderr_tail, limits)
    if code < 0:
        return _signal_verdict(-code, limits, timeout_s)
    return _error_verdict(code, stderr_tail, limits)


def _unfinished_verdict(stderr_tail: str, limits: Limits) -> tuple[str, str]:
    """Exit status 0 with no proof that the last statement returned: an early exit, or a failure an
    exit hook (atexit, sys.excepthook) turned into status 0; its traceback, if any, says which."""
    reason = "exit status 0 before its last statement returned"
    if _last_line(stderr_tail):
        reason += f" ({_error_verdict(0, stderr_tail, limits)[1]})"
    return "failed", reason


def _signal_verdict(signum: int, limits: Limits, timeout_s: float) -> tuple[str, str]:
    if signum == signal.SIGXCPU:
        cpu_s = limits.cpu_s or math.ceil(timeout_s) + 1
        return "timed out", f"CPU time limit of {cpu_s}s exceeded (SIGXCPU)"
    if signum == signal.SIGXFSZ:
        return "crashed", f"file size limit of {limits.file_bytes >> 20} MiB exceeded (SIGXFSZ)"
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    return "crashed", f"killed by {name}"


def _error_verdict(code: int, stderr_tail: str, limits: Limits) -> tuple[str, str]:
    lines = _meaningful_lines(stderr_tail)
    last = lines[-1] if lines else ""
    if "MemoryError" in last:
        return "crashed", f"memory limit of {limits.memory_bytes >> 20} MiB exceeded ({last})"
    if "[Errno 27]" in last:  # Python ignores SIGXFSZ, so the write fails with EFBIG instead
        return "crashed", f"file size limit of {limits.file_bytes >> 20} MiB exceeded ({last})"
    if "[Errno 28]" in last:
        return "crashed", f"disk space limit exceeded ({last})"
    if "Fatal Python error" in stderr_tail:
        return "crashed", last or f"exit status {code}"
    if last == "AssertionError" and len(lines) >= 2 and not lines[-2].startswith("File "):
        # A bare `assert` says nothing: name the failing line of the test instead.
        return "failed", f"AssertionError at: {lines[-2]}"[:300]
    if last:
        return "failed", last[:300]
    return "failed", f"exit status {code}"


def _meaningful_lines(text: str) -> list[str]:
    # Python 3.11 underlines the failing expression with ^ and ~: not worth reporting.
    return [line.strip() for line in text.splitlines() if line.strip() and not set(line.strip()) <= set("^~ ")]


def _last_line(text: str) -> str:
    lines = _meaningful_lines(text)
    return lines[-1] if lines else ""


_claimed_uids: set[int] = set()
_claim_lock = threading.Lock()


def _claim_uid() -> int:
    """A uid no process uses now and no other worker of ours holds."""
    import random

    with _claim_lock:
        in_use = _uids_in_use()
        while True:
            uid = random.randrange(*_UID_RANGE)
            if uid not in _claimed_uids and uid not in in_use:
                _claimed_uids.add(uid)
                return uid


def _release_uid(uid: int | None) -> None:
    with _claim_lock:
        _claimed_uids.discard(uid)


def _proc_entries() -> list[tuple[int, set[int], str]]:
    """(pid, its real/effective/saved/fs uids, state letter) for every live process."""
    entries = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", encoding="utf-8", errors="replace") as f:
                status = f.read()
        except OSError:  # it exited meanwhile
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        uids = {int(u) for u in fields.get("Uid", "").split()}
        entries.append((int(name), uids, fields.get("State", "?")[:1]))
    return entries


def _uids_in_use() -> set[int]:
    return {uid for _, uids, _ in _proc_entries() for uid in uids}


def _live_pids_of_uid(uid: int) -> list[int]:
    # Zombies are dead already and are not ours to reap: ignore them.
    return [pid for pid, uids, state in _proc_entries() if uid in uids and state != "Z"]


def _kill_uid(uid: int) -> int:
    """Kill every process running as this sandbox uid; return how many were found.

    A shell running as that uid calls kill(-1, SIGKILL), which the kernel delivers to all of
    the uid's processes at once, so a fork bomb cannot outrun it (and, unlike a pid-by-pid
    kill, it cannot hit a recycled pid). The shell, not our interpreter: that may live where
    the unprivileged uid cannot reach it (under /root).
    """
    import subprocess
    import time

    found = 0
    for _ in range(50):
        live = len(_live_pids_of_uid(uid))
        if not live:
            return found
        found = found or live
        subprocess.run(
            ["/bin/sh", "-c", "kill -9 -1"],
            user=uid,
            group=uid,
            extra_groups=[],
            env={},
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        time.sleep(0.02)
    raise RuntimeError(f"processes of sandbox uid {uid} survived 50 kill rounds")


def _memory_cgroup_base() -> str | None:
    """Our own cgroup v1 memory directory (hybrid hierarchies, as on many servers), if any."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            base = "/sys/fs/cgroup/memory" + path.rstrip("/")
            return base if os.path.isdir(base) else None
    return None  # pure cgroup v2: a leaf cgroup cannot delegate its memory controller to children


def _make_memory_cgroup(name: str, limit_bytes: int) -> str | None:
    base = _memory_cgroup_base()
    if base is None:
        return None
    directory = os.path.join(base, name)
    try:
        os.mkdir(directory)
    except OSError:
        return None
    try:
        with open(os.path.join(directory, "memory.limit_in_bytes"), "w") as f:
            f.write(str(limit_bytes))
    except OSError:
        os.rmdir(directory)
        return None
    return directory


def _memory_cgroup_works() -> bool:
    import random

    directory = _make_memory_cgroup(f"cos-bench-{_owner()}-probe{random.randrange(1 << 30)}", 64 << 20)
    if directory:
        os.rmdir(directory)
    return directory is not None


def _remove_cgroup(directory: str) -> int:
    """Remove an emptied cgroup; return how many processes the kernel OOM-killed in it."""
    import time

    oom_kills = 0
    try:
        with open(os.path.join(directory, "memory.oom_control"), encoding="utf-8") as f:
            fields = dict(line.split() for line in f if line.strip())
        oom_kills = int(fields.get("oom_kill", 0))
    except (OSError, ValueError):
        pass
    for _ in range(100):  # its last processes may still be exiting
        try:
            os.rmdir(directory)
            break
        except FileNotFoundError:
            break
        except OSError:
            time.sleep(0.01)
    return oom_kills


def _kill_members(directory: str) -> None:
    """SIGKILL every process in a cgroup, round after round, until it is empty (or we give up)."""
    import time

    for _ in range(50):
        try:
            with open(os.path.join(directory, "cgroup.procs"), encoding="utf-8") as f:
                pids = [int(line) for line in f if line.strip()]
        except (OSError, ValueError):
            return
        if not pids:
            return
        for pid in pids:
            _kill_pid(pid)
        time.sleep(0.02)


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _owner() -> str:
    """'pid-starttime' of this process. It names our sandbox folders and cgroups: a later benchmark
    removes them once their owner is dead, and a recycled pid has another start time."""
    return f"{os.getpid()}-{_start_time(os.getpid())}"


def _start_time(pid: int) -> str | None:
    """Clock ticks from boot to the process's start (field 22 of /proc/PID/stat), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]  # after the name, which may hold spaces and ')'
    except (OSError, IndexError):
        return None


def _remove_stale_sandboxes() -> None:
    """Remove the folders and memory cgroups (and what still runs in them) of dead benchmarks.

    Normally the launcher removes them when its caller dies; this catches what a killed launcher
    left. Only names with a dead owner go: another benchmark may be running here now.
    """
    import tempfile

    temp_dir = tempfile.gettempdir()
    for name in _stale_names(temp_dir, "cos-bench-sandbox-"):
        try:
            _remove_tree(os.path.join(temp_dir, name))
        except OSError:  # another benchmark starting at the same time may be removing it too
            pass
    base = _memory_cgroup_base()
    for name in _stale_names(base, "cos-bench-") if base else []:
        _kill_members(os.path.join(base, name))
        _remove_cgroup(os.path.join(base, name))


def _stale_names(directory: str, prefix: str) -> list[str]:
    import re

    owned = re.compile(rf"{re.escape(prefix)}(\d+)-(\d+)-")
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [name for name in names if (m := owned.match(name)) and _start_time(int(m[1])) != m[2]]


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _remove_tree(path: str) -> None:
    import shutil
    import stat

    def make_writable_and_retry(function, failed_path, _exc_info):
        # A program may leave read-only directories behind (only possible when not root).
        os.chmod(os.path.dirname(failed_path), stat.S_IRWXU)
        if os.path.isdir(failed_path) and not os.path.islink(failed_path):
            os.chmod(failed_path, stat.S_IRWXU)
        function(failed_path)

    shutil.rmtree(path, onerror=make_writable_and_retry)


# ---------------------------------------------------------------------------------------------
# Launcher side: runs as `python -I -S sandbox.py SPEC` in the fresh working directory. It unshares
# the PID namespace (the init below it makes the others: the launcher itself stays in the host's
# mounts, to clean up should its caller die), forks the program's process, enforces the timeout,
# and writes one JSON report line to report_fd, which the program never holds (it is close-on-exec
# in the program).

_CLONE_NEWNS = 0x00020000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_SYNCHRONOUS = 1, 2, 4, 8, 16
_MS_REMOUNT, _MS_MANDLOCK, _MS_NOATIME, _MS_NODIRATIME, _MS_BIND = 32, 64, 1024, 2048, 4096
_MS_REC, _MS_RELATIME, _MS_PRIVATE, _MS_STRICTATIME = 16384, 1 << 21, 1 << 18, 1 << 24
# A bind remount must repeat these (statvfs reports them with the same bit values).
_KEPT_MOUNT_FLAGS = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC | _MS_SYNCHRONOUS | _MS_MANDLOCK | _MS_NOATIME | _MS_NODIRATIME
_ST_RELATIME = 4096  # statvfs's bit for relatime differs from the mount flag's
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
# Fresh tmpfs mounts in the namespace: (path, size in bytes or None for the limit, mode). The
# writable scratch places become private; /run (service sockets: docker, dbus) and /dev/pts
# (terminals a same-uid program could type into) become empty.
_PRIVATE_MOUNTS = (
    ("/tmp", None, "1777"),
    ("/var/tmp", 16 << 20, "1777"),
    ("/dev/shm", 16 << 20, "1777"),
    ("/run", 1 << 20, "755"),
    ("/dev/pts", 1 << 20, "755"),
)

# With must_finish the interpreter runs this, not the program file: `python -I -B -c HARNESS
# program.py TOKEN_FD PROOF_FD`. Exit status 0 proves nothing, since the program can end the
# process with it whenever it likes (sys.exit(0), os._exit(0), an atexit or excepthook that calls
# os._exit(0) after a failed assert, exec of /bin/true). So the caller also wants back a fresh
# random token, which this harness writes to PROOF_FD only once the program's top level (for
# HumanEval: solution, tests, and the closing check(...)) has returned without raising.
#
# The harness reads the token from TOKEN_FD and closes it before the first line of the program
# runs; the caller wrote it there and closed the write end, so the pipe is then empty for good.
# Hence the token is in nothing the program can read: not its file, argv, environment, /proc or
# any open fd, nor in the launcher or init (other uid, or not dumpable), and guessing 128 bits is
# hopeless. Writing junk to PROOF_FD (its number is public) proves nothing, and anything that ends
# the process before the top level returns leaves no token behind.
#
# Not defended: the program runs in this very interpreter, so code that deliberately digs the
# token out of the harness's own frame or objects (sys._getframe, gc, ctypes) and writes it
# early can forge a pass. That is in-process tampering, like monkeypatching builtins or the
# test's asserts; no harness that runs the tests in the program's process (the reference
# openai/human-eval one included) can stop it; such code is plain to see in the stored completion.
_FINISH_HARNESS = """\
import builtins, os, sys, types
def run(path, token_fd, proof_fd):
    token = os.read(token_fd, 64)
    os.close(token_fd)
    with open(path, encoding="utf-8") as f:
        code = compile(f.read(), path, "exec")
    module = types.ModuleType("__main__")
    module.__file__, module.__builtins__ = path, builtins
    sys.modules["__main__"], sys.argv[:] = module, [path]
    exec(code, module.__dict__)
    os.write(proof_fd, token)
run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
"""


def _launcher_main(spec: dict) -> None:
    report_fd = spec["report_fd"]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        _enter_pid_namespace(spec["mode"])
        # Not dumpable (only now: writing the uid map needs our /proc files to be ours): a program
        # running as our own uid (no root) cannot ptrace us, or the init below, to forge a report.
        _libc("prctl", _PR_SET_DUMPABLE, 0, 0, 0, 0)
    except OSError as exc:
        _report(report_fd, {"setup_error": str(exc)})
        return
    lifeline, our_end = os.pipe()  # see _die_with_parent
    child = os.fork()
    if child == 0:
        os.close(our_end)
        try:
            _become_program(spec, lifeline)
        except BaseException as exc:  # noqa: BLE001 - any failure before exec is a setup failure
            _report(report_fd, {"setup_error": f"{type(exc).__name__}: {exc}"})
        finally:
            os._exit(121)
    _close_all([lifeline, *_program_fds(spec)])  # the program's pipes are its alone now
    outcome = _wait_for(child, spec["timeout_s"], spec["caller_fd"])
    wait_status = _end(child, kill=outcome != "exited")
    if outcome == "caller died":
        _clean_up_for_caller(spec)
    else:
        _report(report_fd, {"timed_out": outcome == "timed out", "child_status": wait_status})


def _enter_pid_namespace(mode: str) -> None:
    """Unshare the PID namespace, which takes effect for our next child; as non-root, in a user namespace."""
    if mode == "plain":
        return
    if mode == "user-ns":
        uid, gid = os.getuid(), os.getgid()
        _libc("unshare", _CLONE_NEWUSER | _CLONE_NEWPID)
        # Map our own ids to themselves, so files keep their owner; setgroups must be denied first.
        for name, content in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(content)
    else:
        _libc("unshare", _CLONE_NEWPID)


def _program_fds(spec: dict) -> list[int]:
    return [spec[key] for key in ("token_fd", "proof_fd") if key in spec]


def _become_program(spec: dict, lifeline: int) -> None:
    """In the forked child: finish isolating, drop privileges, exec the interpreter on the program."""
    os.setpgid(0, 0)  # its own group, so the launcher can kill everything that stays in it
    if spec["mode"] != "plain":  # this process is PID 1 of the new PID namespace: the program's init
        _die_with_parent(lifeline)
        _join_cgroup(spec["cgroup"])
        program = _enter_namespaces()
        _isolate_filesystem(program, spec["expose"], spec["limits"]["tmpfs_bytes"], spec["uid"])
        program_pid = os.fork()
        if program_pid:
            _close_all(_program_fds(spec))
            _serve_as_init(program_pid, spec["report_fd"])
    else:
        _join_cgroup(spec["cgroup"])
    _set_limits(spec["limits"], spec["uid"])
    if spec["uid"] is not None:
        uid = spec["uid"]
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if os.geteuid() == 0 or os.getegid() == 0:
            raise OSError("privileges were not dropped")
    _libc("prctl", _PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # no setuid binary can give privileges back
    _die_with_parent(lifeline)  # only now: setuid clears the parent-death signal
    os.set_inheritable(spec["report_fd"], False)
    os.set_inheritable(spec["caller_fd"], False)
    os.execve(spec["python"], _program_argv(spec), spec["env"])


def _die_with_parent(lifeline: int) -> None:
    """Be SIGKILLed when our parent dies; exit now if the launcher already has.

    PR_SET_PDEATHSIG holds only from the moment it is set (and setuid clears it), so the parent
    may have died just before. getppid() cannot tell here: to PID 1 of a new PID namespace its
    parent, outside, reads as 0. The lifeline can: a pipe whose write end only the launcher
    holds, readable (EOF) once it is gone. (The program's parent is the init when there is
    one; should the init die first, the kernel kills its whole namespace anyway.)
    """
    _libc("prctl", _PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if _readable([lifeline], 0):
        os._exit(1)


def _join_cgroup(cgroup: str | None) -> None:
    if cgroup:  # before anything of the program starts, so all of it counts against the cap
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write("0")  # this process, whatever its pid in a new PID namespace


def _enter_namespaces() -> bytes:
    """In the init: new mount, network and IPC namespaces. Returns the program text."""
    _libc("unshare", _CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWIPC)
    with open(_PROGRAM_FILE, "rb") as f:
        return f.read()  # read now: the host directory is hidden once /tmp is replaced


def _program_argv(spec: dict) -> list[str]:
    python = spec["python"]
    if "token_fd" not in spec:
        return [python, "-I", "-B", spec["script"]]
    fds = [str(spec["token_fd"]), str(spec["proof_fd"])]
    return [python, "-I", "-B", "-c", _FINISH_HARNESS, spec["script"], *fds]


def _clean_up_for_caller(spec: dict) -> None:
    """Our caller died: remove what it would have. The program is dead and reaped by now."""
    try:
        if spec["mode"] == "plain" and spec["uid"] is not None:
            _kill_uid(spec["uid"])  # without a PID namespace its background processes live on
    finally:
        if spec["cgroup"]:
            _remove_cgroup(spec["cgroup"])
        _remove_tree(spec["host_dir"])


def _serve_as_init(program_pid: int, report_fd: int) -> None:
    """PID 1 of the namespace: reap orphans until the program exits, pass on its status, exit.

    The program is not PID 1 itself because the kernel spares PID 1 from signals it has no
    handler for (SIGXCPU, SIGXFSZ, even its own SIGTERM): it would behave unlike a normal
    process. When this process exits, the kernel kills whatever the program left behind.
    """
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == program_pid:
            _report(report_fd, {"program_status": status})
            os._exit(0)


def _isolate_filesystem(program: bytes, expose: list[str], tmpfs_bytes: int, uid: int | None) -> None:
    _libc("mount", None, b"/", None, _MS_REC | _MS_PRIVATE, None)  # nothing below propagates to the host
    # Paths the interpreter needs that the steps below would hide: open them now, bind them back after.
    # Blocking ancestors are found now: once /tmp is replaced, a virtualenv's path under it no longer exists.
    hidden = [(path, os.open(path, os.O_PATH), ancestor) for path in expose if (ancestor := _blocked_ancestor(path)) or _privatized(path)]
    _remount_all_read_only()
    for path, size, mode in _PRIVATE_MOUNTS:
        if os.path.isdir(path) and not os.path.islink(path):
            options = f"size={size or tmpfs_bytes},mode={mode}".encode()
            _libc("mount", b"tmpfs", path.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options)
    _expose_paths(hidden)
    # A fresh /proc shows only this PID namespace: no other process's environment or command line.
    _libc("mount", b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None)
    os.mkdir(_SANDBOX_DIR, 0o700)
    program_path = os.path.join(_SANDBOX_DIR, _PROGRAM_FILE)
    with open(program_path, "wb") as f:
        f.write(program)
    if uid is not None:
        os.chown(_SANDBOX_DIR, uid, uid)
        os.chown(program_path, uid, uid)
    os.chdir(_SANDBOX_DIR)


def _privatized(path: str) -> bool:
    """Whether path lies under one of the fresh mounts (e.g. a virtualenv in /tmp)."""
    return any(path == mount or path.startswith(mount + "/") for mount, _, _ in _PRIVATE_MOUNTS)


def _blocked_ancestor(path: str) -> str | None:
    """The first directory above path that others may not enter (e.g. /root, mode 0700), if any."""
    parts = path.strip("/").split("/")
    for depth in range(1, len(parts)):
        ancestor = "/" + "/".join(parts[:depth])
        if not os.stat(ancestor).st_mode & 0o001:
            return ancestor
    return None


def _expose_paths(hidden: list[tuple[str, int, str | None]]) -> None:
    """Bind each needed path back: under a fresh private mount, or under an empty enterable tmpfs
    laid over its blocking ancestor.

    An interpreter installed under /root is then reachable by the unprivileged uid, while the
    rest of /root stays invisible; a virtualenv in /tmp survives the private /tmp.
    """
    covered: set[str] = set()
    for path, fd, ancestor in hidden:
        if ancestor and ancestor not in covered:
            os.makedirs(ancestor, 0o755, exist_ok=True)  # it may lie under a fresh private mount
            _libc("mount", b"tmpfs", ancestor.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"size=1m,mode=755")
            covered.add(ancestor)
        os.makedirs(path, 0o755, exist_ok=True)
        _libc("mount", f"/proc/self/fd/{fd}".encode(), path.encode(), None, _MS_BIND | _MS_REC, None)
        _libc("mount", None, path.encode(), None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _mount_flags(path), None)
        os.close(fd)
    for ancestor in covered:  # the covering tmpfs need not stay writable
        _libc("mount", None, ancestor.encode(), None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, None)


def _remount_all_read_only() -> None:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [_unescape(line.split()[4]) for line in f]
    for point in points:
        try:
            flags = _mount_flags(point)
            _libc("mount", None, point.encode(), None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | flags, None)
        except OSError:
            if point == "/":
                raise  # the root must be read-only; an odd submount (hidden, special) may not be
            continue


def _mount_flags(path: str) -> int:
    """The flags a bind remount must keep (the kernel refuses to drop locked ones)."""
    statvfs_flags = os.statvfs(path).f_flag
    flags = statvfs_flags & _KEPT_MOUNT_FLAGS
    if statvfs_flags & _ST_RELATIME:
        flags |= _MS_RELATIME
    elif not flags & _MS_NOATIME:
        flags |= _MS_STRICTATIME
    return flags


def _unescape(mount_point: str) -> str:
    # /proc/self/mountinfo writes space, tab, newline and backslash as octal escapes.
    return mount_point.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")


def _set_limits(limits: dict, uid: int | None) -> None:
    processes = limits["processes"]
    if uid is None and not _in_user_namespace():
        # Without our own uid or user namespace the count includes all of the user's tasks.
        processes += _task_count(os.getuid())
    for name, value, hard in (
        (resource.RLIMIT_CPU, limits["cpu_s"], limits["cpu_s"] + 1),  # SIGXCPU first, SIGKILL a second later
        (resource.RLIMIT_AS, limits["memory_bytes"], None),
        (resource.RLIMIT_FSIZE, limits["file_bytes"], None),
        (resource.RLIMIT_NOFILE, limits["open_files"], None),
        (resource.RLIMIT_NPROC, processes, None),
        (resource.RLIMIT_CORE, 0, None),
    ):
        resource.setrlimit(name, (value, value if hard is None else hard))


def _in_user_namespace() -> bool:
    with open("/proc/self/uid_map", encoding="utf-8") as f:
        return f.read().split()[:3] != ["0", "0", "4294967295"]


def _task_count(uid: int) -> int:
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{name}/task"))
            except OSError:
                continue
    return count


def _wait_for(child: int, timeout_s: float, caller_fd: int) -> str:
    """Wait until the child exits ("exited"), the timeout passes ("timed out") or the caller dies
    ("caller died": its lifeline reads EOF)."""
    try:
        pidfd = os.pidfd_open(child)
    except OSError:  # kernels before 5.3: poll without reaping
        return _poll_exit(child, timeout_s, caller_fd)
    try:
        ready = _readable([pidfd, caller_fd], timeout_s)
    finally:
        os.close(pidfd)
    if caller_fd in ready:
        return "caller died"
    return "exited" if ready else "timed out"


def _poll_exit(child: int, timeout_s: float, caller_fd: int) -> str:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _readable([caller_fd], 0.01):
            return "caller died"
        if os.waitid(os.P_PID, child, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return "exited"
    return "timed out"


def _readable(fds: list[int], timeout_s: float) -> list[int]:
    """The fds that are readable, or at EOF, within timeout_s. poll, not select: the caller's
    pipes keep its fd numbers, which may be above select's limit of 1023."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return [fd for fd, _ in poller.poll(timeout_s * 1000)]


def _end(child: int, kill: bool) -> int:
    """Kill the child if asked and whatever stays in its group; reap it; return its wait status."""
    if kill:
        os.kill(child, signal.SIGKILL)  # in a PID namespace this ends every process in it
    try:
        os.killpg(child, signal.SIGKILL)  # the child is not reaped yet, so its group id is not recycled
    except (ProcessLookupError, PermissionError):
        pass
    return os.waitpid(child, 0)[1]


def _report(report_fd: int, message: dict) -> None:
    os.write(report_fd, (json.dumps(message) + "\n").encode())


def _libc(name: str, *args) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}{_describe(args)}: {os.strerror(errno)}")


def _describe(args: tuple) -> str:
    shown = [a.decode() if isinstance(a, bytes) else str(a) for a in args if a is not None]
    return f"({', '.join(shown)})"


if __name__ == "__main__":
    _launcher_main(json.loads(sys.argv[1]))
