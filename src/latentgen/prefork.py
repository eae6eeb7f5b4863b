"""Run a ``latentgen`` command in a process forked from a warm server: ``python -m latentgen.prefork COMMAND ...``.

Every workflow job is a new Python process, and importing torch, scikit-learn and pandas
costs 2–4 s of CPU before a job does any work. Small jobs (one checkpoint's activations, its
probes) then spend most of their time importing. With ``LATENTGEN_PREFORK=1`` this module
instead asks a server process, which has imported those libraries once, to ``fork`` a child
that runs the command: the child starts with everything imported, in the caller's working
folder, with the caller's environment, arguments and stdin/stdout/stderr (passed over a
Unix socket), and its exit code comes back to the caller. The server starts on first use
and exits after ``LATENTGEN_PREFORK_IDLE`` seconds (default 120) without requests or running
children.

Without ``LATENTGEN_PREFORK=1`` (the default), under SLURM, or when the server cannot be
reached, the command simply runs in this process, as ``python -m latentgen COMMAND`` would.

Semantics kept: a signal sent to the caller (Ctrl-C, Snakemake cancelling a job) is
forwarded to the child; if the caller is killed outright, the child kills itself. One server
serves one interpreter, one copy of the code (a change to any ``latentgen`` source file
starts a new server) and one set of thread variables (``OMP_NUM_THREADS`` ...). The server
never initialises CUDA, so children may use GPUs (``CUDA_VISIBLE_DEVICES`` is the caller's).
Resource figures in Snakemake's benchmark files do not include the forked child.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

PRELOAD = ["numpy", "scipy.linalg", "h5py", "torch", "sklearn.base", "pandas", "matplotlib", "matplotlib.pyplot",
           "latentgen.data.datasets", "latentgen.models.architectures", "latentgen.models.forward",
           "latentgen.training.loop", "latentgen.probing.activations", "latentgen.probing.subspaces",
           "latentgen.probing.masc_velpic", "latentgen.probing.velpic_transfer", "latentgen.probing.checkpoint",
           "latentgen.probing.run", "latentgen.repair", "latentgen.repair.relabel", "latentgen.provenance",
           "latentgen.paper.figures", "latentgen.paper.metrics", "latentgen.paper.tables", "latentgen.paper.claims",
           # imported inside functions (slow for commands that never need them), but by every
           # probe_run / repair / relabel job: the baselines and the test split (0.1 s a job)
           "latentgen.probing.families", "latentgen.probing.baselines", "latentgen.probing.discriminant",
           "sklearn.model_selection", "sklearn.discriminant_analysis", "sklearn.linear_model", "sklearn.neighbors",
           "latentgen.data.labels", "matplotlib.backends.backend_pdf",
           # creating an optimizer imports torch._dynamo (2-3 s) in every training-like job
           "torch._dynamo"]
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_HEADER = struct.Struct("!I")


def enabled() -> bool:
    return os.environ.get("LATENTGEN_PREFORK", "") not in ("", "0") and not os.environ.get("SLURM_JOB_ID")


def run_dir() -> Path:
    path = Path(os.environ.get("LATENTGEN_PREFORK_DIR") or Path(tempfile.gettempdir()) / f"latentgen-prefork-{os.getuid()}")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def server_key(package: str | os.PathLike | None = None) -> str:
    """Identifies the interpreter, the code and the thread settings a server was started with."""
    if package is None:
        import latentgen

        package = Path(latentgen.__file__).parent
    package = Path(package).resolve()
    digest = hashlib.sha256()
    digest.update(sys.executable.encode())
    digest.update(str(package).encode())
    for name in THREAD_VARIABLES:
        digest.update(f"{name}={os.environ.get(name, '')}".encode())
    for path in sorted(package.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(package)}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# client


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        return sock
    except OSError:
        sock.close()
        return None


def _start_server(key: str, folder: Path, timeout_s: float = 60.0) -> socket.socket | None:
    import fcntl
    import subprocess

    sock_path = folder / f"{key}.sock"
    with open(folder / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time; the others find the socket
        sock = _connect(sock_path)
        if sock is not None:
            return sock
        log = open(folder / f"{key}.log", "ab")
        env = dict(os.environ, MPLBACKEND="Agg")
        env.pop("LATENTGEN_PREFORK", None)
        subprocess.Popen([sys.executable, "-m", "latentgen.prefork", "--serve", key], stdin=subprocess.DEVNULL,
                         stdout=log, stderr=log, env=env, cwd="/", start_new_session=True, close_fds=True)
        log.close()
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            sock = _connect(sock_path)
            if sock is not None:
                return sock
            time.sleep(0.05)
    return None


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _send_request(sock: socket.socket, argv: list[str]) -> int | None:
    """Send the request; return the child's pid once it has taken it, None if nobody took it."""
    body = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                       "umask": os.umask(os.umask(0))}).encode()
    try:
        socket.send_fds(sock, [_HEADER.pack(len(body))], [0, 1, 2])
        sock.sendall(body)
        ack = _recv_exact(sock, 4)
    except OSError:
        return None
    return None if ack is None else struct.unpack("!i", ack)[0]


def run_forked(argv: list[str]) -> int | None:
    """Run ``argv`` in a forked child of the server; None if no server could take it."""
    folder = run_dir()
    key = server_key()
    sys.stdout.flush()
    sys.stderr.flush()
    forwarded = []

    def forward(signum, frame):  # the child decides what the signal means, as a plain process would
        forwarded.append(signum)
        try:
            sock.sendall(bytes([signum]))
        except OSError:
            pass

    for attempt in range(3):  # a server that is just idling out closes without taking the request
        sock = _connect(folder / f"{key}.sock") or _start_server(key, folder)
        if sock is None:
            return None
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, forward)
        if _send_request(sock, argv) is not None:
            break
        sock.close()
    else:
        return None
    reply = _recv_exact(sock, 4)
    sock.close()
    if reply is not None:
        return struct.unpack("!i", reply)[0]
    if forwarded:
        return 128 + forwarded[-1]
    print("latentgen.prefork: the forked child ended without an exit code", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve"]:
        return serve(argv[1])
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if enabled():
        code = run_forked(argv)
        if code is not None:
            return code
    from latentgen.__main__ import main as latentgen_main

    return latentgen_main(argv)


# --------------------------------------------------------------------------------------------
# server


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional library only makes children import it later
            print(f"prefork: not preloaded {name}: {exc}", file=sys.stderr, flush=True)


def serve(key: str, idle_s: float | None = None) -> int:
    idle_s = float(os.environ.get("LATENTGEN_PREFORK_IDLE", 120)) if idle_s is None else idle_s
    folder = run_dir()
    sock_path = folder / f"{key}.sock"
    _preload()
    sock_path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    inode = os.stat(sock_path).st_ino
    server.listen(64)
    server.settimeout(idle_s)
    served = {"commands": 0, "finished": 0, "cpu_s": 0.0}

    def reap(signum, frame):  # collect finished children and the CPU time they used
        while True:
            try:
                pid, _, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            served["finished"] += 1
            served["cpu_s"] += usage.ru_utime + usage.ru_stime

    signal.signal(signal.SIGCHLD, reap)
    print(f"prefork: serving {sock_path} (pid {os.getpid()})", file=sys.stderr, flush=True)
    try:
        while True:
            try:
                conn, _ = server.accept()
            except socket.timeout:
                if served["commands"] > served["finished"]:
                    continue  # idle only once no child is running either (a long training, say)
                break
            conn.setblocking(True)
            _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                             struct.calcsize("3i")))
            if uid != os.getuid():
                conn.close()  # only the owner may run commands here
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            served["commands"] += 1
            pid = os.fork()
            if pid == 0:
                server.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os._exit(_child(conn))
            conn.close()
    finally:
        server.close()
        print(f"prefork: served {served['commands']} commands; {served['finished']} finished children used "
              f"{served['cpu_s']:.1f} s of CPU", file=sys.stderr, flush=True)
        try:  # leave a newer server's socket alone
            if os.stat(sock_path).st_ino == inode:
                sock_path.unlink()
        except OSError:
            pass
    return 0


def _child(conn: socket.socket) -> int:
    code, taken = 1, False
    try:
        head, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
        if len(fds) != 3:
            return 1
        rest = _recv_exact(conn, _HEADER.size - len(head)) if len(head) < _HEADER.size else b""
        if rest is None:
            return 1
        body = _recv_exact(conn, _HEADER.unpack(head + rest)[0])
        if body is None:
            return 1
        request = json.loads(body)
        conn.sendall(struct.pack("!i", os.getpid()))
        taken = True
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.setsid()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.umask(request["umask"])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

        def watch():  # forwarded signals arrive as bytes; end of file means the caller is gone
            while True:
                try:
                    data = conn.recv(1)
                except OSError:
                    data = b""
                os.kill(os.getpid(), data[0] if data else signal.SIGKILL)

        threading.Thread(target=watch, daemon=True).start()
        from latentgen.__main__ import main as latentgen_main

        sys.argv = ["latentgen", *request["argv"]]
        try:
            code = int(latentgen_main(request["argv"]) or 0)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        if taken:
            try:
                conn.sendall(struct.pack("!i", code))
            except OSError:
                pass
    return code


if __name__ == "__main__":
    sys.exit(main())
