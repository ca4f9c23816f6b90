"""Train Flow3r on a Cloud TPU pod slice, driving `gcloud` from this machine:

    python -m launch.tpu_pod run --name flow3r-v4 --zone us-central2-b --accelerator v4-32 --spot \\
        --workdir gs://BUCKET/runs/large --config configs/flow3r.py:size=large \\
        -- --config.data.sources=/mnt/gcs/BUCKET/data/re10k:1 --config.data.global_batch=256

Actions (the first argument):

- `create`: the TPU VM (`gcloud compute tpus tpu-vm create`), or with `--queued` a queued
  resource (`gcloud compute tpus queued-resources create`, then waits until it is ACTIVE);
- `setup`: ships the repository (`git archive` of `--ref`, default HEAD: commit what you want to
  run) to every worker (`tpu-vm scp --worker=all`), installs `--python` if the image lacks it,
  and `pip install -e .[tpu]` into ~/flow3r_venv on every worker; installs gcsfuse when a bucket
  is mounted;
- `train`: mounts the buckets and runs `python -m launch.train` on every worker at once
  (`tpu-vm ssh --worker=all`); JAX finds the other workers itself (TPU cluster detection);
- `run`: create (unless a READY VM of that name exists; a preempted one is deleted and created
  again), setup, train;
- `delete`: deletes the VM (or the queued resource).

`--dry_run` prints the commands instead of running them, one per line, quoted for a POSIX shell
(`run` then assumes that no VM exists yet). Arguments are checked before anything runs.

Workdir: the workers share no disk, so the workdir must be shared storage. `gs://BUCKET/PATH` is
mounted with gcsfuse at /mnt/gcs/BUCKET on every worker and the trainer writes to
/mnt/gcs/BUCKET/PATH; an absolute path is passed as is (a Filestore / NFS mount the image
provides). `--mount_bucket B` mounts more buckets (data) at /mnt/gcs/B. Data paths in the config
overrides must name these mounts.

Spot / preemptible slices: when the slice is preempted, the training command fails. Run the same
`run` command again: it recreates the slice, sets it up and the trainer resumes from the latest
checkpoint in the workdir (the trainer also saves on the SIGTERM of a shutdown when it has time).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script (python launch/tpu_pod.py): the repository's modules
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from flow3r_jax.cli import ArgumentParser  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACTIONS = ("create", "setup", "train", "run", "delete")
REMOTE_DIR = "flow3r_jax"  # under the worker's home directory
REMOTE_VENV = "flow3r_venv"
REMOTE_ARCHIVE = "flow3r_jax.tar.gz"
MOUNT_ROOT = "/mnt/gcs"
DEFAULT_VERSION = "tpu-ubuntu2204-base"
PYTHONS = ("python3.11", "python3.12")


class UsageError(ValueError):
    """A bad argument: raised before any command runs."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    doc = __doc__.split("\n\n")
    p = ArgumentParser(module="launch.tpu_pod", description=doc[0], epilog="\n\n".join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=ACTIONS, help="create | setup | train | run | delete (see below)")
    p.add_argument("--name", required=True, help="TPU VM (and queued resource) name")
    p.add_argument("--zone", required=True, help="e.g. us-central2-b")
    p.add_argument("--project", default=None, help="GCP project (default: gcloud's)")
    p.add_argument("--accelerator", default=None, help="accelerator type, e.g. v4-32, v5p-64, v6e-16 (create, run)")
    p.add_argument("--version", default=DEFAULT_VERSION, help="TPU software version (runtime image)")
    p.add_argument("--spot", action="store_true", help="spot capacity (cheaper, preemptible)")
    p.add_argument("--queued", action="store_true", help="create through a queued resource (waits for capacity)")
    p.add_argument("--ref", default="HEAD", help="the git commit to ship (setup, run)")
    p.add_argument("--python", default="python3.11", help=f"interpreter on the workers, one of {', '.join(PYTHONS)}")
    p.add_argument("--config", default="configs/flow3r.py:size=large", help="launch.train --config (a path in the repository)")
    p.add_argument("--workdir", default=None, help="gs://BUCKET/PATH or an absolute shared path (train, run)")
    p.add_argument("--mount_bucket", action="append", default=[], help="another bucket to mount at /mnt/gcs/NAME (repeatable)")
    p.add_argument("--detach", action="store_true", help="train in the background on the workers (log in ~/flow3r_train.log)")
    p.add_argument("--dry_run", action="store_true", help="print the commands instead of running them")
    p.usage = "%(prog)s ACTION --name NAME --zone ZONE [options] [-- --config.KEY=VALUE ...]"
    # Everything after "--" goes to launch.train as config overrides.
    cut = argv.index("--") if "--" in argv else len(argv)
    a = p.parse_args(argv[:cut])
    a.overrides = list(argv[cut + 1 :])
    try:
        validate(a)
    except UsageError as e:
        p.error(str(e))
    return a


def _bucket(path: str) -> tuple[str, str]:
    """gs://BUCKET/PATH -> (BUCKET, PATH)."""
    m = re.fullmatch(r"gs://([a-z0-9][a-z0-9._-]{1,220}[a-z0-9])/(.*)", path)
    if not m or not m.group(2).strip("/"):
        raise UsageError(f"--workdir={path!r}: want gs://BUCKET/PATH (a bucket and a non-empty path)")
    return m.group(1), m.group(2).strip("/")


def validate(a: argparse.Namespace) -> None:
    """Raises UsageError naming the argument and its value; changes nothing."""
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", a.name):
        raise UsageError(f"--name={a.name!r}: lower-case letters, digits and '-', starting with a letter, at most 63")
    if not re.fullmatch(r"[a-z]+-[a-z]+\d+-[a-z]", a.zone):
        raise UsageError(f"--zone={a.zone!r}: want a zone such as us-central2-b")
    if a.action in ("create", "run"):
        if a.accelerator is None:
            raise UsageError(f"{a.action} needs --accelerator (e.g. v4-32)")
        if not re.fullmatch(r"v\d+[a-z]*-\d+", a.accelerator):
            raise UsageError(f"--accelerator={a.accelerator!r}: want an accelerator type such as v4-32, v5p-64, v6e-16")
    if a.python not in PYTHONS:
        raise UsageError(f"--python={a.python!r}: flow3r_jax needs one of {', '.join(PYTHONS)}")
    for b in a.mount_bucket:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]", b):
            raise UsageError(f"--mount_bucket={b!r}: want a bucket name (no gs://)")
    if a.action in ("train", "run"):
        if not a.workdir:
            raise UsageError(f"{a.action} needs --workdir (gs://BUCKET/PATH or an absolute shared path)")
        if a.workdir.startswith("gs://"):
            _bucket(a.workdir)
        elif not a.workdir.startswith("/"):
            raise UsageError(f"--workdir={a.workdir!r}: the workers share no disk; want gs://BUCKET/PATH or an absolute path on shared storage")
        config_file = a.config.split(":", 1)[0]
        if os.path.isabs(config_file) or not os.path.isfile(os.path.join(ROOT, config_file)):
            raise UsageError(f"--config={a.config!r}: {config_file} is not a file of the repository (the workers get the repository only)")
        for o in a.overrides:
            if not re.fullmatch(r"--config\.[A-Za-z_][\w.]*=.*", o, re.S):
                raise UsageError(f"override {o!r}: want --config.KEY=VALUE after --")
    if a.action in ("setup", "run"):
        r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--verify", "--quiet", f"{a.ref}^{{commit}}"], capture_output=True, text=True)
        if r.returncode != 0:
            raise UsageError(f"--ref={a.ref!r}: not a commit of {ROOT}")


# --- the commands ---------------------------------------------------------------------------------


def _gcloud(a, *args: str) -> list[str]:
    return ["gcloud", "compute", "tpus", *args, "--zone", a.zone] + (["--project", a.project] if a.project else [])


def _ssh(a, script: str) -> list[str]:
    return _gcloud(a, "tpu-vm", "ssh", a.name, "--worker=all", "--command", script)


def archive_path(a) -> str:
    return os.path.join(tempfile.gettempdir(), f"flow3r_jax-{a.name}.tar.gz")


def buckets(a) -> list[str]:
    """The buckets to mount: the workdir's first, then --mount_bucket, without repeats."""
    out = [_bucket(a.workdir)[0]] if a.workdir and a.workdir.startswith("gs://") else []
    return list(dict.fromkeys(out + list(a.mount_bucket)))


def remote_workdir(a) -> str:
    if a.workdir.startswith("gs://"):
        bucket, path = _bucket(a.workdir)
        return f"{MOUNT_ROOT}/{bucket}/{path}"
    return a.workdir


def create_commands(a) -> list[list[str]]:
    spot = ["--spot"] if a.spot else []
    if a.queued:
        return [_gcloud(a, "queued-resources", "create", a.name, "--node-id", a.name, "--accelerator-type", a.accelerator, "--runtime-version", a.version, *spot)]
    return [_gcloud(a, "tpu-vm", "create", a.name, "--accelerator-type", a.accelerator, "--version", a.version, *spot)]


def delete_commands(a) -> list[list[str]]:
    if a.queued:
        return [_gcloud(a, "queued-resources", "delete", a.name, "--force", "--quiet")]
    return [_gcloud(a, "tpu-vm", "delete", a.name, "--quiet")]


def _mount_script(a) -> list[str]:
    lines = []
    for b in buckets(a):
        d = f"{MOUNT_ROOT}/{b}"
        lines.append(f'sudo mkdir -p {d} && sudo chown "$USER" {d} && (mountpoint -q {d} || gcsfuse --implicit-dirs {b} {d})')
    return lines


def setup_script(a) -> str:
    """Runs on every worker: interpreter, gcsfuse, the repository, the venv with flow3r_jax[tpu]."""
    py = a.python
    lines = ["set -e"]
    lines.append(f"command -v {py} >/dev/null || (sudo add-apt-repository -y ppa:deadsnakes/ppa && sudo apt-get update -q && sudo apt-get install -y -q {py} {py}-venv)")
    if buckets(a):
        lines.append(
            "command -v gcsfuse >/dev/null || ("
            'echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -cs) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list'
            " && curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null"
            " && sudo apt-get update -q && sudo apt-get install -y -q gcsfuse)"
        )
    lines.append(f"rm -rf ~/{REMOTE_DIR} && mkdir -p ~/{REMOTE_DIR} && tar -xzf ~/{REMOTE_ARCHIVE} -C ~/{REMOTE_DIR}")
    lines.append(f"test -x ~/{REMOTE_VENV}/bin/python || {py} -m venv ~/{REMOTE_VENV}")
    lines.append(f"cd ~/{REMOTE_DIR} && ~/{REMOTE_VENV}/bin/python -m pip install -q --upgrade pip && ~/{REMOTE_VENV}/bin/python -m pip install -q -e '.[tpu]'")
    return "; ".join(lines)  # one line: `--dry_run` prints one command per line


def setup_commands(a) -> list[list[str]]:
    archive = archive_path(a)
    return [
        ["git", "-C", ROOT, "archive", "--format=tar.gz", f"--output={archive}", a.ref],
        _gcloud(a, "tpu-vm", "scp", archive, f"{a.name}:{REMOTE_ARCHIVE}", "--worker=all"),
        _ssh(a, setup_script(a)),
    ]


def train_script(a) -> str:
    """Runs on every worker: mounts, then the trainer (all workers at once form the JAX cluster)."""
    # The interpreter path unquoted, so that the worker's shell expands ~; the rest quoted.
    train = f"~/{REMOTE_VENV}/bin/python " + shlex.join(["-u", "-m", "launch.train", "--config", a.config, "--workdir", remote_workdir(a), *a.overrides])
    if a.detach:
        train = f"setsid nohup {train} > ~/flow3r_train.log 2>&1 < /dev/null &"
    return "; ".join(["set -e", *_mount_script(a), f"cd ~/{REMOTE_DIR}", train])


def train_commands(a) -> list[list[str]]:
    return [_ssh(a, train_script(a))]


# --- running them -------------------------------------------------------------------------------


def _state(a) -> str | None:
    """The VM's (or queued resource's) state, None when it does not exist."""
    kind, field = ("queued-resources", "state.state") if a.queued else ("tpu-vm", "state")
    r = subprocess.run(_gcloud(a, kind, "describe", a.name, f"--format=value({field})"), capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def _run(cmds: list[list[str]]) -> None:
    for cmd in cmds:
        print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True)


def _wait_active(a, poll_s: float = 30.0) -> None:
    while (state := _state(a)) != "ACTIVE":
        if state in (None, "FAILED", "SUSPENDED"):
            raise RuntimeError(f"queued resource {a.name} in {a.zone}: state {state}")
        print(f"tpu_pod: queued resource {a.name}: {state}; waiting", file=sys.stderr, flush=True)
        time.sleep(poll_s)


def _ensure_created(a) -> None:
    state = _state(a)
    ready = "ACTIVE" if a.queued else "READY"
    if state == ready:
        print(f"tpu_pod: reusing {a.name} ({state})", file=sys.stderr, flush=True)
        return
    if state is not None and state not in ("CREATING", "WAITING_FOR_RESOURCES", "ACCEPTED", "PROVISIONING"):
        print(f"tpu_pod: {a.name} is {state}: deleting and creating it again", file=sys.stderr, flush=True)
        _run(delete_commands(a))
        state = None
    if state is None:
        _run(create_commands(a))
    if a.queued:
        _wait_active(a)


def plan(a) -> list[list[str]]:
    """The commands of an action, assuming (for create / run) that no VM exists yet."""
    return {
        "create": create_commands,
        "setup": setup_commands,
        "train": train_commands,
        "delete": delete_commands,
        "run": lambda a: create_commands(a) + setup_commands(a) + train_commands(a),
    }[a.action](a)


def main(argv=None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    if a.dry_run:
        for cmd in plan(a):
            print(shlex.join(cmd))
        return 0
    if a.action in ("setup", "run") and subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD"]).returncode != 0:
        print(f"tpu_pod: the working tree has uncommitted changes; only {a.ref} is shipped", file=sys.stderr)
    try:
        if a.action == "run":
            _ensure_created(a)
            _run(setup_commands(a) + train_commands(a))
        else:
            _run(plan(a))
            if a.action == "create" and a.queued:
                _wait_active(a)
    except subprocess.CalledProcessError as e:
        print(f"tpu_pod: {shlex.join(e.cmd)} exited with status {e.returncode}", file=sys.stderr)
        if a.action in ("train", "run"):
            print("tpu_pod: if the slice was preempted, rerun the same `run` command: it recreates the slice and resumes from the workdir", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
