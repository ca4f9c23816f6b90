"""Checkpoints of the trainer: saved on one mesh, restored on another (8 fake devices -> 4), read
back outside the trainer (`read_params`, compared with a plain Orbax load), and the errors a
wrong or missing checkpoint gives.

Every run goes through the real entry point (`launch.train`) on the real datasets of the
`train_data` fixture. The 4-device run uses exactly the configuration of test_preemption.py
(`CFG4`, 6 steps), so that the two files share one compiled step (JAX's persistent cache).
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.train.conftest import ROOT, env, losses, run_train, train_args

# 8 fake devices: fsdp=4 x data=2 (mesh.data=-1 takes the rest); one sample per device.
CFG8 = {"data.global_batch": 8, "mesh.fsdp": 4}
# 4 fake devices: fsdp=2 x data=2, same global batch. Shared with test_preemption.py.
CFG4 = {"data.global_batch": 8, "mesh.fsdp": 2, "mesh.data": 2}
STEPS4 = 6


def _committed(step_dir) -> bool:
    return os.path.isdir(os.path.join(step_dir, "state")) and os.path.isdir(os.path.join(step_dir, "data")) and os.path.exists(os.path.join(step_dir, "_CHECKPOINT_METADATA"))


@pytest.fixture(scope="module")
def saved8(train_data, tmp_path_factory):
    """A workdir trained 2 steps on 8 fake devices (fsdp=4, data=2): checkpoints/2."""
    wd = tmp_path_factory.mktemp("ckpt8")
    r = run_train(train_args(wd, train_data, steps=2, **CFG8) + ["--cpu_devices=8"], timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "mesh {'data': 2, 'fsdp': 4, 'tensor': 1} over 8 devices" in r.stderr
    assert sorted(os.listdir(wd / "checkpoints")) == ["2"]
    assert _committed(wd / "checkpoints" / "2")
    got = losses(wd)
    assert sorted(got) == [1, 2] and all(np.isfinite(v) for v in got.values()), got
    return wd


@pytest.mark.slow
def test_restore_on_fewer_devices_continues(saved8, train_data, tmp_path):
    """The 8-device checkpoint restores onto a 4-device mesh (a different fsdp split) and training
    continues from step 2: steps 3..6 run, with the schedule's learning rate of steps 3..6 (so
    the step counter was restored, not restarted)."""
    from flow3r_jax.train.optimizer import one_cycle_schedule

    wd = tmp_path / "run"
    shutil.copytree(saved8, wd)
    before = losses(wd)
    r = run_train(train_args(wd, train_data, steps=STEPS4, **CFG4) + ["--cpu_devices=4"], timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "mesh {'data': 2, 'fsdp': 2, 'tensor': 1} over 4 devices" in r.stderr
    assert f"resumed from {wd / 'checkpoints'}/2" in r.stderr
    got = losses(wd)
    assert sorted(got) == list(range(1, STEPS4 + 1))
    assert all(np.isfinite(v) for v in got.values()), got
    assert {k: got[k] for k in (1, 2)} == before  # the restart logged nothing before step 3
    assert "step 3/6 loss" in r.stderr and "step 2/6 loss" not in r.stderr
    # The learning rate logged at step s is the schedule at s - 1 (0-based step counter).
    recs = {}
    with open(wd / "metrics.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            if "train/lr" in rec:
                recs[rec["step"]] = rec["train/lr"]
    sched = one_cycle_schedule(1e-3, STEPS4, 0.05, 1000.0, 100.0)  # configs/flow3r.py, size=tiny
    for s in range(3, STEPS4 + 1):
        assert recs[s] == pytest.approx(float(sched(s - 1)), rel=1e-5), (s, recs[s])
    assert _committed(wd / "checkpoints" / str(STEPS4))


@pytest.mark.slow
def test_read_params_matches_orbax(saved8):
    """`read_params` of the 8-device checkpoint (restored in this 1-device process) returns every
    parameter of the tiny model, equal to the parameters of the whole state loaded with
    Orbax's `load_checkpointables`."""
    import jax
    import orbax.checkpoint.experimental.v1 as ocp

    from flow3r_jax.models.config import get_model_config
    from flow3r_jax.train.checkpoint import find_step_dir, read_params
    from flow3r_jax.train.state import ParamLayout

    layout = ParamLayout.of(get_model_config("tiny"))
    step_dir = str(saved8 / "checkpoints" / "2")
    assert find_step_dir(str(saved8)) == step_dir
    assert find_step_dir(str(saved8 / "checkpoints")) == step_dir
    got = read_params(str(saved8))
    assert sorted(got) == sorted(layout.names)
    for n in layout.names:
        assert got[n].shape == layout.shapes[n], n
        assert got[n].dtype == np.float32, n

    # The reference: the whole train state (optimiser included), not a partial load.
    meta = ocp.checkpointables_metadata(step_dir).metadata["state"]
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=dev), meta)
    state = ocp.load_checkpointables(step_dir, {"state": abstract})["state"]
    assert int(state["step"]) == 2
    ref = {**state["frozen"], **state["params"]}
    assert sorted(ref) == sorted(got)
    for n in layout.names:
        np.testing.assert_array_equal(got[n], np.asarray(ref[n]), err_msg=n)
    # Trained and frozen parameters both came back: the encoder is frozen (stage 2), the rest trains.
    assert any(n.startswith("encoder/") for n in state["frozen"]) and not any(n.startswith("encoder/") for n in state["params"])
    assert all(np.isfinite(v).all() for v in got.values())


def test_find_step_dir_errors(tmp_path):
    """Missing paths, empty directories, leftovers of an unfinished write: CheckpointError that
    names the path."""
    from flow3r_jax.train.checkpoint import CheckpointError, find_step_dir, read_params

    missing = str(tmp_path / "no_such_run")
    with pytest.raises(CheckpointError, match=f"not found: {missing}"):
        find_step_dir(missing)
    with pytest.raises(CheckpointError, match=f"not found: {missing}"):
        read_params(missing)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=f"{empty}: no committed checkpoint step"):
        find_step_dir(str(empty))

    # Only a temporary (uncommitted) Orbax directory: still nothing to read.
    (empty / "checkpoints" / "7.orbax-checkpoint-tmp-1700000000000").mkdir(parents=True)
    (empty / "checkpoints" / "7.orbax-checkpoint-tmp-1700000000000" / "state").mkdir()
    with pytest.raises(CheckpointError, match=f"{empty}: no committed checkpoint step"):
        find_step_dir(str(empty))

    # A step directory given directly, but without Orbax's commit markers.
    half = tmp_path / "half" / "checkpoints" / "5"
    (half / "state").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=f"{half}: the checkpoint was not completely written"):
        find_step_dir(str(half))


def _init_args(workdir, data, size, init_path):
    args = train_args(workdir, data, steps=2, **{"init.kind": "checkpoint", "init.path": init_path, "data.num_workers": 0})
    assert args[1].endswith(":size=tiny")
    args[1] = args[1].replace(":size=tiny", f":size={size}")
    return args


@pytest.mark.slow
def test_init_checkpoint_errors(saved8, train_data, tmp_path):
    """init.kind=checkpoint with a path that does not exist, or with a checkpoint of another model
    size: launch.train fails before compiling the step, and says why."""
    missing = str(tmp_path / "nonexistent_run")
    cmds = {
        "missing": _init_args(tmp_path / "a", train_data, "tiny", missing),
        "wrong_size": _init_args(tmp_path / "b", train_data, "small", str(saved8)),
    }
    # The two runs are independent and mostly start-up time: run them side by side.
    procs = {k: subprocess.Popen([sys.executable, "-m", "launch.train", *a], cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for k, a in cmds.items()}
    out = {}
    try:
        for k, p in procs.items():
            out[k] = p.communicate(timeout=300)[0]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for k, p in procs.items():
        assert p.returncode != 0, (k, out[k][-3000:])
        assert "train step compiled" not in out[k], k
        assert not os.path.exists(tmp_path / ("a" if k == "missing" else "b") / "checkpoints" / "2")
    assert f"init checkpoint not found: {missing} (config.init.path)" in out["missing"], out["missing"][-3000:]
    assert "CheckpointError" in out["wrong_size"], out["wrong_size"][-3000:]
    assert f"{saved8}: checkpoint parameters do not match model size 'small'" in out["wrong_size"], out["wrong_size"][-3000:]
