"""The sandbox: opt-in, verdicts, pass@k, and hostile programs.

For every hostile program: this process survives, the verdict is not "passed", nothing
outside the sandbox directory changed, and no process it started is left running. Each
hostile program renames itself (and so every process it forks) to a unique tag, which is
how leftovers are found. Each attack is written so that exit status 0 means it worked, and
where possible a control run outside the sandbox shows that the attack does work.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from math import comb
from pathlib import Path

import pytest

from cos_bench.errors import CosBenchError
from cos_bench.sandbox import CODE_EVAL_ENV, Isolation, Limits, Verdict, pass_at_k, run_programs, sandbox_isolation

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox needs Linux")

REPO_ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def isolation() -> Isolation:
    return sandbox_isolation()


@pytest.fixture(autouse=True)
def own_temp_dir(tmp_path: Path, monkeypatch):
    """Sandbox working directories go here, so we can check that every one was removed."""
    sandboxes = tmp_path / "sandboxes"
    sandboxes.mkdir(mode=0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(sandboxes))
    yield
    assert list(sandboxes.iterdir()) == [], "a sandbox directory was left behind"


@pytest.fixture
def strong(isolation: Isolation) -> Isolation:
    """Skip attacks that would really hurt when programs run as our own user with no namespaces."""
    if not (isolation.drop_privileges or isolation.namespaces):
        pytest.skip(f"weak isolation here ({isolation.note}): a hostile program could harm this test run")
    return isolation


def tag() -> str:
    return "cbh" + secrets.token_hex(6)  # 15 characters: the most a process name holds


def tagged(program: str, name: str) -> str:
    # PR_SET_NAME (15): the name every fork inherits.
    prelude = f"import ctypes\nctypes.CDLL(None).prctl(15, {name.encode()!r}, 0, 0, 0)\n"
    return prelude + textwrap.dedent(program)


def processes_named(name: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if comm == name and state != "Z":
            found.append(int(pid))
    return found


def run_hostile(program: str, timeout_s: float = 3.0, limits: Limits | None = None) -> Verdict:
    """Run one tagged program; then insist that nothing it started is still running."""
    name = tag()
    (verdict,) = run_programs([tagged(program, name)], timeout_s=timeout_s, allow=True, limits=limits)
    deadline = time.monotonic() + 2.0
    while processes_named(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_named(name) == [], f"processes left running: {verdict}"
    return verdict


# ---------------------------------------------------------------------------------- opt-in and verdicts


def test_execution_needs_explicit_opt_in(monkeypatch) -> None:
    monkeypatch.delenv(CODE_EVAL_ENV, raising=False)
    with pytest.raises(CosBenchError, match=f"pass --allow-code-eval or set {CODE_EVAL_ENV}=1") as info:
        run_programs(["print('hi')"])
    assert "\n" not in str(info.value)
    monkeypatch.setenv(CODE_EVAL_ENV, "yes")  # only "1" counts
    with pytest.raises(CosBenchError):
        run_programs(["print('hi')"])
    monkeypatch.setenv(CODE_EVAL_ENV, "1")
    assert run_programs(["print('hi')"])[0].status == "passed"


def test_verdicts_in_order(isolation: Isolation) -> None:
    programs = [
        "print('ok')",
        "assert 1 + 1 == 3",
        "raise ValueError('bad input')",
        "def f(:\n    pass",
        "import ctypes\nctypes.string_at(0)",
        "while True:\n    pass",
        "import sys\nsys.exit(3)",
    ]
    verdicts = run_programs(programs, timeout_s=2.0, allow=True)
    assert [v.status for v in verdicts] == ["passed", "failed", "failed", "failed", "crashed", "timed out", "failed"]
    assert verdicts[1].reason == "AssertionError at: assert 1 + 1 == 3"
    assert verdicts[2].reason == "ValueError: bad input"
    assert verdicts[3].reason.startswith("SyntaxError")
    assert verdicts[4].reason == "killed by SIGSEGV"
    assert verdicts[5].reason == "wall-clock limit of 2s exceeded"
    assert verdicts[6].reason == "exit status 3"
    assert all(v.isolated_network == isolation.namespaces for v in verdicts)


def test_cpu_limit_is_a_timeout() -> None:
    # A generous wall clock: on a busy machine one CPU second can take several.
    (verdict,) = run_programs(["while True:\n    pass"], timeout_s=60.0, allow=True, limits=Limits(cpu_s=1))
    assert verdict.status == "timed out" and "CPU time limit of 1s" in verdict.reason


def test_programs_run_in_parallel() -> None:
    start = time.monotonic()
    verdicts = run_programs(["import time\ntime.sleep(1.5)"] * 4, timeout_s=10.0, workers=4, allow=True)
    assert [v.status for v in verdicts] == ["passed"] * 4
    assert time.monotonic() - start < 5.0  # one after another would take over 6 s


def test_environment_is_scrubbed(monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    program = (
        "import os\n"
        "assert 'HF_TOKEN' not in os.environ, 'leaked'\n"
        "assert set(os.environ) <= {'PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_CTYPE'}, sorted(os.environ)\n"
    )
    assert run_programs([program], allow=True)[0].status == "passed"


def test_working_directory_is_fresh_and_writable() -> None:
    program = "import os\nassert os.listdir('.') == ['program.py'], os.listdir('.')\nopen('out.txt', 'w').write('x')"
    first, second = run_programs([program, program], allow=True)
    assert (first.status, second.status) == ("passed", "passed"), (first, second)


def test_pass_at_k() -> None:
    assert pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    for n, c, k in [(10, 3, 2), (20, 7, 5), (200, 13, 10)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))
    assert pass_at_k(4, 2, 3) == 1.0  # fewer failures than k: some pass in every draw
    with pytest.raises(CosBenchError, match="pass@5 needs at least 5 samples"):
        pass_at_k(3, 1, 5)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


# ---------------------------------------------------------------------------------- hostile programs


def test_infinite_loop(strong: Isolation) -> None:
    verdict = run_hostile("while True:\n    pass", timeout_s=1.5)
    assert verdict.status == "timed out"


def test_sleeping_forever(strong: Isolation) -> None:
    verdict = run_hostile("import time\ntime.sleep(3600)", timeout_s=1.5)
    assert verdict.status == "timed out" and verdict.duration_s < 6


def test_fork_bomb(strong: Isolation) -> None:
    program = """
    import os
    while True:
        try:
            os.fork()
        except OSError:
            pass
    """
    verdict = run_hostile(program, timeout_s=2.0, limits=Limits(processes=32))
    assert verdict.status in ("timed out", "crashed"), verdict


def test_background_process_is_killed(strong: Isolation) -> None:
    # The program exits at once, leaving a session leader that escaped its process group.
    program = """
    import os, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(120)
        os._exit(0)
    time.sleep(0.3)
    raise SystemExit(1)
    """
    verdict = run_hostile(program)
    assert verdict.status == "failed"


def test_memory_hog(strong: Isolation) -> None:
    program = """
    chunks = []
    while True:
        chunks.append(bytearray(16 << 20))
    """
    verdict = run_hostile(program, limits=Limits(memory_bytes=256 << 20))
    assert verdict.status == "crashed" and "memory limit of 256 MiB" in verdict.reason


def test_many_memory_hogs_share_one_cap(isolation: Isolation) -> None:
    if not isolation.memory_cgroup:
        pytest.skip(f"no memory cgroup here ({isolation.note})")
    # Seven processes, each under the per-process limit, together far over the total.
    program = """
    import os, sys
    children = []
    for _ in range(6):
        pid = os.fork()
        if pid == 0:
            data = b"\\x01" * (300 << 20)
            os._exit(0)
        children.append(pid)
    data = b"\\x01" * (300 << 20)
    sys.exit(0 if all(os.waitpid(child, 0)[1] == 0 for child in children) else 1)
    """
    verdict = run_hostile(program, timeout_s=20.0, limits=Limits(total_memory_bytes=512 << 20))
    assert verdict.status in ("crashed", "failed") and "total memory limit of 512 MiB" in verdict.reason, verdict


def test_huge_file_write(strong: Isolation) -> None:
    program = """
    with open("big.bin", "wb") as f:
        for _ in range(256):
            f.write(b"x" * (1 << 20))
    """
    verdict = run_hostile(program, limits=Limits(file_bytes=4 << 20))
    assert verdict.status == "crashed" and "file size limit of 4 MiB" in verdict.reason


def test_many_files_fill_only_the_private_tmp(isolation: Isolation) -> None:
    if not isolation.namespaces:
        pytest.skip(f"no mount namespace here ({isolation.note})")
    program = """
    for i in range(64):
        with open(f"part{i}.bin", "wb") as f:
            f.write(b"x" * (1 << 20))
    """
    verdict = run_hostile(program, limits=Limits(tmpfs_bytes=8 << 20))
    assert verdict.status == "crashed" and "No space left on device" in verdict.reason


@pytest.fixture
def outside(isolation: Isolation):
    """Files and places outside the sandbox that a program might try to change."""
    name = tag()
    protected = Path(tempfile.mkdtemp(prefix="cos-bench-canary-", dir="/tmp"))
    protected.chmod(0o755)  # others may look, not write
    (protected / "canary.txt").write_text(name)
    (protected / "canary.txt").chmod(0o644)
    targets = {
        "delete": [str(protected / "canary.txt")],
        "write": [str(protected / "new.txt"), str(REPO_ROOT / name), str(Path.home() / name)],
        "rmtree": [str(protected)],
    }
    shared = None
    if isolation.namespaces:  # world-writable places are protected by the mount namespace alone
        shared = Path(tempfile.mkdtemp(prefix="cos-bench-canary-", dir="/tmp"))
        shared.chmod(0o777)
        (shared / "canary.txt").write_text(name)
        (shared / "canary.txt").chmod(0o666)
        targets["delete"].append(str(shared / "canary.txt"))
        targets["write"].append(str(shared / "new.txt"))
        # Inside the sandbox these are its private tmpfs mounts: writing there succeeds, yet
        # nothing may appear on the host.
        targets["private"] = [f"/tmp/{name}", f"/dev/shm/{name}", f"/var/tmp/{name}"]
    yield name, targets
    for directory in filter(None, [protected, shared]):
        assert (directory / "canary.txt").read_text() == name, f"{directory} canary changed"
        assert sorted(p.name for p in directory.iterdir()) == ["canary.txt"]
        subprocess.run(["rm", "-rf", str(directory)], check=True)
    for path in targets["write"] + targets.get("private", []):
        assert not os.path.lexists(path), f"{path} was written"


def test_writing_and_deleting_outside_the_sandbox(strong: Isolation, outside) -> None:
    name, targets = outside
    program = f"""
    import os, shutil
    done = []
    for path in {targets["delete"]!r}:
        try:
            os.remove(path); done.append(path)
        except OSError:
            pass
    for path in {targets["write"]!r}:
        try:
            with open(path, "w") as f:
                f.write("pwned")
            done.append(path)
        except OSError:
            pass
    for path in {targets["rmtree"]!r}:
        try:
            shutil.rmtree(path); done.append(path)
        except OSError:
            pass
    for path in {targets.get("private", [])!r}:
        with open(path, "w") as f:  # succeeds: the sandbox's own /tmp, /dev/shm, /var/tmp
            f.write("private")
    raise SystemExit(0 if done else 1)
    """
    verdict = run_hostile(program)
    assert verdict.status == "failed", verdict


def test_network_connection(isolation: Isolation) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    program = f"""
    import socket
    with socket.create_connection(("127.0.0.1", {port}), timeout=2) as s:
        s.sendall(b"exfiltrated")
    """
    try:
        control = subprocess.run([sys.executable, "-c", textwrap.dedent(program)], timeout=10)
        assert control.returncode == 0  # the attack works outside the sandbox
        listener.accept()[0].close()
        if not isolation.namespaces:
            verdict = run_hostile(program)
            assert not verdict.isolated_network
            pytest.skip(f"no network namespace here ({isolation.note}); the verdict says so")
        verdict = run_hostile(program)
        assert verdict.status == "failed" and verdict.isolated_network, verdict
        with pytest.raises(socket.timeout):
            listener.accept()  # nothing reached us
    finally:
        listener.close()


def test_killing_the_parent_and_a_bystander(strong: Isolation) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        program = f"""
        import os, signal
        killed = []
        for pid in ({os.getpid()}, {bystander.pid}, os.getppid()):
            if pid > 1:
                try:
                    os.kill(pid, signal.SIGKILL); killed.append(pid)
                except OSError:
                    pass
        try:
            os.kill(-1, signal.SIGKILL)  # everything this uid may signal
        except OSError:
            pass
        raise SystemExit(0 if killed else 1)
        """
        verdict = run_hostile(program)
        assert verdict.status != "passed", verdict
        assert bystander.poll() is None, "the bystander was killed"
    finally:
        bystander.kill()
        bystander.wait()


def test_reading_the_parents_environment_for_secrets(strong: Isolation) -> None:
    # The parent (a fresh benchmark process) starts with a secret in its environment; the
    # program looks in its own environment, its parent's and every other process's.
    program = textwrap.dedent("""
    import glob, os
    needle = b"COS_BENCH_TEST_SECRET="
    found = any(k == "COS_BENCH_TEST_SECRET" for k in os.environ)
    for path in [f"/proc/{os.getppid()}/environ", *glob.glob("/proc/*/environ")]:
        try:
            with open(path, "rb") as f:
                found = found or needle in f.read()
        except OSError:
            pass
    raise SystemExit(0 if found else 1)
    """)
    parent = textwrap.dedent("""
    import json, os, subprocess, sys
    from cos_bench.sandbox import run_programs
    program = sys.argv[1]
    clean = {k: v for k, v in os.environ.items() if k != "COS_BENCH_TEST_SECRET"}
    control = subprocess.run([sys.executable, "-c", program], env=clean).returncode
    (verdict,) = run_programs([program], timeout_s=5, allow=True)
    print(json.dumps({"control": control, "status": verdict.status, "reason": verdict.reason}))
    """)
    env = {**os.environ, "COS_BENCH_TEST_SECRET": secrets.token_hex(8)}
    out = subprocess.run([sys.executable, "-c", parent, program], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["control"] == 0, "the attack should work outside the sandbox"
    assert result["status"] == "failed", result


def test_plain_fallback_as_root_still_cleans_up(monkeypatch) -> None:
    """Without namespaces (a container that forbids them), the uid drop alone must hold."""
    if os.geteuid() != 0:
        pytest.skip("the uid-drop fallback exists only when running as root")
    import cos_bench.sandbox as sandbox

    monkeypatch.setattr(sandbox, "sandbox_isolation", lambda: Isolation(True, False, "forced for the test"))
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    verdict = run_hostile(bomb, timeout_s=2.0, limits=Limits(processes=16))
    assert verdict.status == "timed out", verdict
    # The parent exits only once the child has left its process group (a pipe says so):
    # otherwise, on a loaded machine, the launcher's group kill can take the child before
    # its setsid and there is no leftover for the uid sweep to find.
    escape = (
        "import os, time\nr, w = os.pipe()\nif os.fork() == 0:\n    os.setsid()\n    os.write(w, b'x')\n"
        "    time.sleep(120)\nos.read(r, 1)\nraise SystemExit(1)\n"
    )
    verdict = run_hostile(escape)
    assert verdict.status == "failed" and "killed 1 leftover process" in verdict.reason
    assert not verdict.isolated_network
    write = f"open({str(REPO_ROOT / 'pwned.txt')!r}, 'w')"
    assert run_hostile(write).status == "failed"
    assert not (REPO_ROOT / "pwned.txt").exists()


# ---------------------------------------------------------------------------------- must_finish

# Looks for the proof token everywhere a program can read (its file, argv, environment, every
# process's command line and environment in its view, every open fd), then writes every
# candidate to every fd, the proof pipe among them, and exits 0.
FORGER = """
import glob, os, re, sys
texts = []
for path in [sys.argv[0], *glob.glob("/proc/*/cmdline"), *glob.glob("/proc/*/environ")]:
    try:
        with open(path, "rb") as f:
            texts.append(f.read())
    except OSError:
        pass
for fd in range(256):
    try:
        os.set_blocking(fd, False)
        texts.append(os.read(fd, 4096))
    except OSError:
        pass
candidates = {m for text in texts for m in re.findall(rb"[0-9a-f]{32}", text)}
for fd in range(3, 256):
    for candidate in candidates:
        try:
            os.write(fd, candidate)
        except OSError:
            pass
os._exit(0)
"""


@pytest.mark.parametrize("mode", ["probed", "plain"])
def test_must_finish_needs_the_top_level_to_return(monkeypatch, mode: str) -> None:
    if mode == "plain":
        if os.geteuid() != 0:
            pytest.skip("the uid-drop fallback exists only when running as root")
        import cos_bench.sandbox as sandbox

        monkeypatch.setattr(sandbox, "sandbox_isolation", lambda: Isolation(True, False, "forced for the test"))
    programs = [
        "print('ok')",
        "import sys\nsys.exit(0)",
        "import os\nos._exit(0)\n",
        "import atexit, os\natexit.register(os._exit, 0)\nassert False",
        FORGER,
    ]
    verdicts = run_programs(programs, timeout_s=5.0, allow=True, must_finish=True)
    assert [v.status for v in verdicts] == ["passed"] + ["failed"] * 4, verdicts
    assert verdicts[0].reason == "exit status 0"
    assert verdicts[1].reason == "exit status 0 before its last statement returned"
    assert verdicts[3].reason == "exit status 0 before its last statement returned (AssertionError at: assert False)"
    # Without must_finish exit status 0 is all it takes, as before.
    assert [v.status for v in run_programs(programs, timeout_s=5.0, allow=True)] == ["passed"] * 5


# ---------------------------------------------------------------------------------- the caller's death

CALLER = """
import sys, tempfile
import cos_bench.sandbox as sandbox
tempfile.tempdir = sys.argv[2]
if sys.argv[3] == "plain":  # as where namespaces are refused: the uid drop alone
    sandbox.sandbox_isolation = lambda: sandbox.Isolation(True, False, "forced for the test")
sandbox.run_programs([sys.argv[1]], timeout_s=60, allow=True)
"""
# It leaves a second process behind, out of its process group, before both sleep.
SLEEPERS = "import os, time\nif os.fork() == 0:\n    os.setsid()\ntime.sleep(60)\n"


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks after boot: with its pid, it names one process for good."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def descendants(root: int) -> set[tuple[int, str]]:
    """(pid, start time) of every live process below root."""
    children: dict[int, list[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        children.setdefault(parent_of(int(pid)), []).append(int(pid))
    found, stack = set(), [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if (started := start_time(child)) is not None:
                found.add((child, started))
                stack.append(child)
    return found


def memory_cgroup_of(pid: int) -> Path | None:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory" + path)
    return None


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def processes_of_uid(uid: int) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if uid_of(int(pid)) == uid and "State:\tZ" not in Path(f"/proc/{pid}/status").read_text():
                found.append(int(pid))
        except (OSError, StopIteration):
            continue
    return found


def sandbox_under_caller(mode: str, name: str) -> tuple[subprocess.Popen, dict]:
    """Start a benchmark (the caller) running SLEEPERS tagged with name; return it once both sleep,
    with what of its sandbox to look for: processes, uid, cgroup."""
    program = tagged(SLEEPERS, name)
    caller = subprocess.Popen([sys.executable, "-c", CALLER, program, tempfile.gettempdir(), mode], cwd=REPO_ROOT)
    deadline = time.monotonic() + 30
    while len(processes_named(name)) < 2:
        if caller.poll() is not None or time.monotonic() > deadline:
            caller.kill()
            pytest.fail("the program never started")
        time.sleep(0.05)
    program_pid = processes_named(name)[0]
    cgroup = memory_cgroup_of(program_pid)
    return caller, {
        "below": descendants(caller.pid),
        "uid": uid_of(program_pid),
        "cgroup": cgroup if cgroup and "cos-bench" in cgroup.name else None,
    }


def leftovers(name: str, sandbox: dict, isolation: Isolation) -> dict:
    cgroup = sandbox["cgroup"]
    return {
        "processes": sorted(pid for pid, started in sandbox["below"] if start_time(pid) == started),
        "tagged": processes_named(name),
        "uid": processes_of_uid(sandbox["uid"]) if isolation.drop_privileges else [],
        "folders": sorted(p.name for p in Path(tempfile.gettempdir()).iterdir()),
        "cgroup": [str(cgroup)] if cgroup and cgroup.exists() else [],
    }


def wait_until_gone(name: str, sandbox: dict, isolation: Isolation, seconds: float, ignore=()) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        left = {k: v for k, v in leftovers(name, sandbox, isolation).items() if k not in ignore}
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def start_another_benchmark() -> None:
    """A fresh process runs a program in the sandbox, with our sandbox folders' directory as its TMPDIR."""
    program = "from cos_bench.sandbox import run_programs; run_programs(['pass'], allow=True)"
    env = {**os.environ, "TMPDIR": tempfile.gettempdir()}
    subprocess.run([sys.executable, "-c", program], env=env, cwd=REPO_ROOT, check=True, timeout=60)


@pytest.mark.parametrize("mode", ["probed", "plain"])
def test_the_sandbox_dies_with_its_caller(strong: Isolation, mode: str) -> None:
    """kill -9 the benchmark mid-program: within 2 s no process, folder or cgroup of its sandbox is left."""
    if mode == "plain" and os.geteuid() != 0:
        pytest.skip("the uid-drop fallback exists only when running as root")
    isolation = strong if mode == "probed" else Isolation(True, False, "plain")
    name = tag()
    caller, sandbox = sandbox_under_caller(mode, name)
    assert len(sandbox["below"]) >= 3 and os.listdir(tempfile.gettempdir())  # launcher and programs
    caller.kill()
    caller.wait()
    left = wait_until_gone(name, sandbox, isolation, 2.0)
    assert not any(left.values()), f"left behind 2 s after the caller died: {left}"


def test_the_sandbox_dies_with_its_launcher(strong: Isolation) -> None:
    """kill -9 the caller and its launcher (which would clean up): every process below still dies
    within 2 s (parent-death signals), and the next benchmark to start removes the folder and cgroup."""
    if not strong.namespaces:
        pytest.skip("without a PID namespace the program's background processes outlive the launcher")
    name = tag()
    caller, sandbox = sandbox_under_caller("probed", name)
    (launcher,) = [pid for pid, _ in sandbox["below"] if parent_of(pid) == caller.pid]
    os.kill(caller.pid, signal.SIGSTOP)  # else it would clean up once its launcher died
    os.kill(launcher, signal.SIGKILL)
    caller.kill()
    caller.wait()
    left = wait_until_gone(name, sandbox, strong, 2.0, ignore=("folders", "cgroup"))
    assert not any(left.values()), f"left running 2 s after the launcher died: {left}"
    assert leftovers(name, sandbox, strong)["folders"], "the folder is there for the next start to remove"
    start_another_benchmark()
    left = leftovers(name, sandbox, strong)
    assert not any(left.values()), f"left after the next start: {left}"


def owner(pid: int, started: str | None = None) -> str:
    return f"{pid}-{started or start_time(pid)}"


def test_stale_sandboxes_are_removed_at_the_next_start(isolation: Isolation) -> None:
    """What a killed benchmark left (its folders, its cgroups and their processes) goes at the next start;
    what a live one holds stays, and a recycled pid does not make a dead owner live."""
    sandboxes = Path(tempfile.gettempdir())
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone_owner = owner(gone.pid)
    gone.kill()
    gone.wait()
    recycled = owner(os.getpid(), "1")  # our pid, another start time: an earlier process with our pid
    live = owner(os.getpid())
    folders = {who: sandboxes / f"cos-bench-sandbox-{who}-x{i}" for i, who in enumerate((gone_owner, recycled, live))}
    for folder in folders.values():
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "program.py").write_text("pass")
    base = memory_cgroup_of(os.getpid()) if isolation.memory_cgroup else None
    cgroups = {who: base / f"cos-bench-{who}-{i}" for i, who in enumerate((gone_owner, live))} if base else {}
    for cgroup in cgroups.values():
        cgroup.mkdir()
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        if cgroups:  # a process a dead benchmark's sandbox left in its cgroup
            (cgroups[gone_owner] / "cgroup.procs").write_text(str(leftover.pid))
        start_another_benchmark()
        assert [folder.exists() for folder in folders.values()] == [False, False, True]
        assert [cgroup.exists() for cgroup in cgroups.values()] == [False, True][: len(cgroups)]
        if cgroups:
            assert leftover.wait(timeout=5) == -9
    finally:
        leftover.kill()
        leftover.wait()
        for path in [*cgroups.values()]:
            if path.exists():
                path.rmdir()
        subprocess.run(["rm", "-rf", *map(str, folders.values())], check=True)


# ---------------------------------------------------------------------------------- HumanEval solutions

DATA_DIR = Path(__file__).parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def humaneval():
    if not DATA_DIR.is_dir():
        pytest.skip(f"offline data copies not found at {DATA_DIR}")
    from cos_bench.tasks import get_task, resolve_data_source

    task = get_task("humaneval")
    return task, task.load(resolve_data_source(DATA_DIR), limit=None)


def test_all_canonical_solutions_pass(humaneval) -> None:
    task, examples = humaneval
    scores = task.score_many(examples, [e.row["canonical_solution"] for e in examples], allow_code_eval=True)
    failures = [(e.example_id, s.verdict, s.detail) for e, s in zip(examples, scores) if not s.correct]
    assert len(examples) == 164 and failures == []


def test_corrupted_solutions_fail(humaneval) -> None:
    task, examples = humaneval
    first = examples[0]  # has_close_elements: returns True when two numbers are close
    corrupted = [
        first.row["canonical_solution"].replace("return True", "return False"),
        first.row["canonical_solution"].replace("abs(", "abs)("),  # a syntax error
        "    return None\n",
    ]
    scores = task.score_many([first] * 3, corrupted, allow_code_eval=True)
    assert [s.verdict for s in scores] == ["failed"] * 3, scores
