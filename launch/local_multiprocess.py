"""Run P local JAX processes joined by `jax.distributed` (gloo collectives on CPU):

    python -m launch.local_multiprocess -n 2 [--cpu_devices 2] [--port 0] -- <launch.train args>
    python -m launch.local_multiprocess -n 2 -- --module my.module ARGS   # another entry point

(`python launch/local_multiprocess.py ...` works the same.)

Each process gets FLOW3R_COORDINATOR / FLOW3R_NUM_PROCESSES / FLOW3R_PROCESS_ID (read by
`flow3r_jax.train.distributed.initialize`) and `--cpu_devices D` when given. Their output is
prefixed with the process index. If one process fails (non-zero exit or killed), the others
are stopped (SIGTERM, then SIGKILL after `--grace` seconds) and this launcher exits non-zero
with a message naming the failed process; SIGTERM / SIGINT sent to the launcher are forwarded.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

if __package__ in (None, ""):  # run as a script (python launch/local_multiprocess.py): the repository's modules
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from flow3r_jax.cli import ArgumentParser  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pump(stream, prefix: str) -> None:
    for line in iter(stream.readline, b""):
        sys.stderr.buffer.write(prefix.encode() + line)
        sys.stderr.flush()
    stream.close()


def _parse(argv):
    p = ArgumentParser(module="launch.local_multiprocess", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--num_processes", type=int, required=True, help="number of JAX processes to start")
    p.add_argument("--cpu_devices", type=int, default=None, help="fake CPU devices per process")
    p.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
    p.add_argument("--module", default="launch.train", help="the module each process runs with -m")
    p.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL when stopping")
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- then the module's arguments")
    a = p.parse_args(argv)
    if a.num_processes < 1:
        p.error(f"-n must be >= 1, got {a.num_processes}")
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    if args[:1] == ["--module"] and len(args) > 1:
        a.module, args = args[1], args[2:]
    a.args = args
    return a


def _stop(procs, grace: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main(argv=None) -> int:
    a = _parse(sys.argv[1:] if argv is None else argv)
    port = a.port or free_port()
    env_base = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH", "")]))}
    env_base.update(FLOW3R_COORDINATOR=f"127.0.0.1:{port}", FLOW3R_NUM_PROCESSES=str(a.num_processes))
    procs, pumps = [], []
    for i in range(a.num_processes):
        cmd = [sys.executable, "-u", "-m", a.module, *a.args]
        if a.cpu_devices is not None:
            cmd += [f"--cpu_devices={a.cpu_devices}"]
        p = subprocess.Popen(cmd, cwd=ROOT, env={**env_base, "FLOW3R_PROCESS_ID": str(i)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append(p)
        t = threading.Thread(target=_pump, args=(p.stdout, f"[{i}] "), daemon=True)
        t.start()
        pumps.append(t)

    forwarded = {"sig": None}

    def forward(signum, frame):
        forwarded["sig"] = signum
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    failed = None
    try:
        while True:
            codes = [p.poll() for p in procs]
            bad = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if bad and forwarded["sig"] is None:
                failed = bad[0]
                break
            if all(c is not None for c in codes):
                break
            time.sleep(0.2)
        if failed is not None:
            i, code = failed
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            print(f"local_multiprocess: process {i} {how}; stopping the other {a.num_processes - 1}", file=sys.stderr, flush=True)
            _stop(procs, a.grace)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for t in pumps:
            t.join(timeout=5)
    if failed is not None:
        return 1
    codes = [p.returncode for p in procs]
    if any(codes):
        print(f"local_multiprocess: exit statuses {codes}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
