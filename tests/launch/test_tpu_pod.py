"""`launch/tpu_pod.py --dry_run`: the gcloud commands it would run for create / setup / train /
run / delete, parsed back with shlex, and its argument checks (before anything runs)."""

import os
import shlex
import subprocess
import sys

import pytest

from tests.train.conftest import ROOT

SCRIPT = os.path.join(ROOT, "launch", "tpu_pod.py")
BASE = ["--name", "flow3r-v4", "--zone", "us-central2-b"]


def dry_run(*args) -> list[list[str]]:
    r = subprocess.run([sys.executable, SCRIPT, "--dry_run", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [shlex.split(line) for line in r.stdout.splitlines()]


def flag(cmd, name):
    return cmd[cmd.index(name) + 1]


def remote(cmd) -> list[list[str]]:
    """The `--command` of a `tpu-vm ssh`, split into its ";"-separated shell commands."""
    return [shlex.split(part) for part in flag(cmd, "--command").split("; ")]


def test_run_creates_copies_installs_and_trains_on_every_worker():
    cmds = dry_run("run", *BASE, "--accelerator", "v4-32", "--spot", "--project", "proj", "--workdir", "gs://my-bucket/runs/large/", "--mount_bucket", "data-b", "--", "--config.train.lr=1e-4", "--config.data.sources=/mnt/gcs/data-b/re10k:1")
    assert [c[:5] for c in cmds] == [
        ["gcloud", "compute", "tpus", "tpu-vm", "create"],
        ["git", "-C", ROOT, "archive", "--format=tar.gz"],
        ["gcloud", "compute", "tpus", "tpu-vm", "scp"],
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],
    ]
    create, archive, scp, setup, train = cmds
    assert create[5] == "flow3r-v4" and flag(create, "--accelerator-type") == "v4-32" and flag(create, "--version") == "tpu-ubuntu2204-base" and "--spot" in create
    for c in (create, scp, setup, train):
        assert flag(c, "--zone") == "us-central2-b" and flag(c, "--project") == "proj"
    for c in (scp, setup, train):
        assert "--worker=all" in c

    # The archive of HEAD goes to every worker's home.
    tarball = archive[5].removeprefix("--output=")
    assert archive[-1] == "HEAD" and tarball.endswith("flow3r_jax-flow3r-v4.tar.gz")
    assert scp[5:7] == [tarball, "flow3r-v4:flow3r_jax.tar.gz"]

    # Setup: python3.11 if missing, gcsfuse (a bucket is mounted), unpack, venv, pip install .[tpu].
    steps = [" ".join(s) for s in remote(setup)]
    assert steps[0] == "set -e" and "python3.11-venv" in steps[1] and "gcsfuse" in steps[2]
    assert "tar -xzf ~/flow3r_jax.tar.gz -C ~/flow3r_jax" in steps[3]
    assert steps[-1].endswith("pip install -q -e .[tpu]")

    # Train: both buckets mounted, then launch.train on the mounted workdir with the overrides.
    steps = remote(train)
    assert ["gcsfuse", "--implicit-dirs", "my-bucket", "/mnt/gcs/my-bucket)"] == steps[1][-4:]
    assert ["gcsfuse", "--implicit-dirs", "data-b", "/mnt/gcs/data-b)"] == steps[2][-4:]
    assert steps[3] == ["cd", "~/flow3r_jax"]
    assert steps[4] == ["~/flow3r_venv/bin/python", "-u", "-m", "launch.train", "--config", "configs/flow3r.py:size=large", "--workdir", "/mnt/gcs/my-bucket/runs/large", "--config.train.lr=1e-4", "--config.data.sources=/mnt/gcs/data-b/re10k:1"]


def test_queued_resource_and_delete():
    (create,) = dry_run("create", *BASE, "--accelerator", "v5p-64", "--queued", "--version", "v2-alpha-tpuv5")
    assert create[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "flow3r-v4"]
    assert flag(create, "--node-id") == "flow3r-v4" and flag(create, "--accelerator-type") == "v5p-64" and flag(create, "--runtime-version") == "v2-alpha-tpuv5"
    assert "--spot" not in create and "--project" not in create
    (delete,) = dry_run("delete", *BASE, "--queued")
    assert delete[:6] == ["gcloud", "compute", "tpus", "queued-resources", "delete", "flow3r-v4"] and "--force" in delete


def test_train_on_a_shared_path_detached_with_python312():
    (train,) = dry_run("train", *BASE, "--workdir", "/shared/runs/x", "--python", "python3.12", "--detach", "--config", "configs/flow3r.py:size=tiny")
    steps = remote(train)
    assert not any("gcsfuse" in s for s in steps)  # nothing to mount
    assert steps[-1][:2] == ["setsid", "nohup"] and steps[-1][-1] == "&"
    assert steps[-1][2:10] == ["~/flow3r_venv/bin/python", "-u", "-m", "launch.train", "--config", "configs/flow3r.py:size=tiny", "--workdir", "/shared/runs/x"]
    setup = dry_run("setup", *BASE, "--python", "python3.12")[-1]
    assert "python3.12 -m venv ~/flow3r_venv" in flag(setup, "--command")


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", *BASE, "--workdir", "gs://b/x"], "run needs --accelerator"),
        (["create", *BASE, "--accelerator", "v4"], "--accelerator='v4'"),
        (["train", "--name", "Flow3r", "--zone", "us-central2-b", "--workdir", "/x"], "--name='Flow3r'"),
        (["train", "--name", "a", "--zone", "central", "--workdir", "/x"], "--zone='central'"),
        (["train", *BASE], "train needs --workdir"),
        (["train", *BASE, "--workdir", "runs/x"], "the workers share no disk"),
        (["train", *BASE, "--workdir", "gs://bucket"], "--workdir='gs://bucket': want gs://BUCKET/PATH"),
        (["train", *BASE, "--workdir", "/x", "--config", "configs/nope.py:size=tiny"], "configs/nope.py is not a file of the repository"),
        (["train", *BASE, "--workdir", "/x", "--", "--lr=1"], "override '--lr=1': want --config.KEY=VALUE"),
        (["setup", *BASE, "--python", "python3.10"], "--python='python3.10'"),
        (["setup", *BASE, "--ref", "no-such-ref-xyz"], "--ref='no-such-ref-xyz': not a commit"),
        (["setup", *BASE, "--mount_bucket", "gs://b"], "--mount_bucket='gs://b'"),
    ],
)
def test_bad_arguments_fail_before_anything_runs(args, message):
    r = subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert r.stdout == ""
