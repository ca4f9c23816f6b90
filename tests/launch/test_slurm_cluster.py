"""`flow3r_jax.train.distributed.slurm_cluster`: the SLURM environment of an srun task -> how it
joins the JAX cluster (coordinator, process ids, local GPUs), on hand-written environments as
srun sets them, and the errors for malformed ones."""

import os

import pytest

from flow3r_jax.train.distributed import ClusterSpec, expand_hostlist, expand_tasks_per_node, slurm_cluster


@pytest.mark.parametrize(
    "text, hosts",
    [
        ("node001", ["node001"]),
        ("node001,host2", ["node001", "host2"]),
        ("gpu[01-03,07],cpu5", ["gpu01", "gpu02", "gpu03", "gpu07", "cpu5"]),
        ("node[001,007-009],host2", ["node001", "node007", "node008", "node009", "host2"]),
        ("a[8-10]", ["a8", "a9", "a10"]),  # no padding: the lower bound has one digit
        ("a[08-10]", ["a08", "a09", "a10"]),
        ("rack[1-2]-n[3,5]", ["rack1-n3", "rack1-n5", "rack2-n3", "rack2-n5"]),
        ("n[7]-ib", ["n7-ib"]),
    ],
)
def test_expand_hostlist(text, hosts):
    assert expand_hostlist(text) == hosts


@pytest.mark.parametrize("text, why", [("", "empty host list"), ("gpu[]", "bad range ''"), ("gpu[1-", "'[' without ']'"), ("gpu1]", "']' without '['"), ("a,,b", "empty host name"), ("gpu[3-1]", "goes down"), ("gpu[a-b]", "bad range 'a-b'"), ("g[[1]]", "nested")])
def test_expand_hostlist_errors_name_the_variable(text, why):
    with pytest.raises(ValueError) as e:
        expand_hostlist(text, "SLURM_STEP_NODELIST")
    assert str(e.value).startswith(f"SLURM_STEP_NODELIST={text!r}: ") and why in str(e.value)


def test_expand_tasks_per_node():
    assert expand_tasks_per_node("4(x2),2") == [4, 4, 2]
    assert expand_tasks_per_node("8") == [8]
    for bad in ("", "4(x0)", "x", "2(3)"):
        with pytest.raises(ValueError, match="SLURM_STEP_TASKS_PER_NODE="):
            expand_tasks_per_node(bad, "SLURM_STEP_TASKS_PER_NODE")


def srun_env(procid, ntasks=16, nodes="gpu[01-02]", per_node="8(x2)", job="4242", **extra):
    """What srun sets in task `procid` of a job step (tasks packed node by node)."""
    counts = expand_tasks_per_node(per_node)
    node, local = 0, procid
    while local >= counts[node]:
        local -= counts[node]
        node += 1
    env = {
        "SLURM_JOB_ID": job,
        "SLURM_JOB_NODELIST": nodes,
        "SLURM_STEP_NODELIST": nodes,
        "SLURM_NTASKS": str(ntasks),
        "SLURM_STEP_NUM_TASKS": str(ntasks),
        "SLURM_STEP_ID": "0",
        "SLURM_STEP_TASKS_PER_NODE": per_node,
        "SLURM_TASKS_PER_NODE": per_node,
        "SLURM_PROCID": str(procid),
        "SLURM_LOCALID": str(local),
        "SLURM_NODEID": str(node),
    }
    env.update(extra)
    return env


def test_one_task_per_gpu():
    """2 nodes x 8 GPUs, 8 tasks per node: task i of node n drives the node's GPU i."""
    specs = [slurm_cluster(srun_env(p)) for p in range(16)]
    assert {s.coordinator_address for s in specs} == {f"gpu01:{61440 + 4242 % 4096}"}
    assert [s.process_id for s in specs] == list(range(16))
    assert {s.num_processes for s in specs} == {16}
    assert [s.local_process_id for s in specs] == list(range(8)) * 2
    assert [s.local_device_ids for s in specs] == [(i,) for i in range(8)] * 2


def test_one_task_per_gpu_bound_by_slurm():
    """--gpus-per-task=1: each task sees only its own GPU, so it takes what it sees."""
    spec = slurm_cluster(srun_env(11, CUDA_VISIBLE_DEVICES="3"))
    assert spec == ClusterSpec(f"gpu01:{61440 + 4242 % 4096}", 16, 11, 3, None)


def test_one_task_per_node_uses_all_gpus():
    specs = [slurm_cluster(srun_env(p, ntasks=2, per_node="1(x2)", CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7")) for p in range(2)]
    assert [(s.process_id, s.local_process_id, s.local_device_ids) for s in specs] == [(0, 0, None), (1, 0, None)]


def test_uneven_nodes_and_job_nodelist_fallback():
    """5 tasks as 2,2,1 on three nodes; only SLURM_JOB_NODELIST; node 2's single task takes all."""
    env = srun_env(4, ntasks=5, nodes="n[1-3]", per_node="2(x2),1")
    del env["SLURM_STEP_NODELIST"]
    spec = slurm_cluster(env)
    assert spec == ClusterSpec(f"n1:{61440 + 4242 % 4096}", 5, 4, 0, None)
    assert slurm_cluster(srun_env(3, ntasks=5, nodes="n[1-3]", per_node="2(x2),1")).local_device_ids == (1,)


def test_without_per_node_counts_tasks_spread_evenly():
    """The 2-process test layout: SLURM_NTASKS=2 on localhost, nothing per node."""
    env = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_STEP_NODELIST": "localhost", "SLURM_NODEID": "0", "FLOW3R_COORDINATOR_PORT": "12345"}
    assert slurm_cluster(env) == ClusterSpec("localhost:12345", 2, 1, 1, (1,))


def test_port_rules():
    assert slurm_cluster(srun_env(0, job="61441")).coordinator_address == f"gpu01:{61440 + 61441 % 4096}"
    assert slurm_cluster(srun_env(0, JAX_COORDINATOR_PORT="2222")).coordinator_address == "gpu01:2222"
    assert slurm_cluster(srun_env(0, JAX_COORDINATOR_PORT="2222", FLOW3R_COORDINATOR_PORT="3333")).coordinator_address == "gpu01:3333"


def test_not_a_multi_task_slurm_step():
    assert slurm_cluster({}) is None
    assert slurm_cluster({"SLURM_JOB_ID": "1"}) is None  # an allocation without a task count
    assert slurm_cluster(srun_env(0, ntasks=1, per_node="1")) is None
    assert slurm_cluster({"SLURM_NTASKS": "8", "SLURM_PROCID": "0"}) is None  # not in a job


def test_batch_script_of_a_multi_task_job_is_an_error():
    """The batch step has SLURM_NTASKS=16 and SLURM_PROCID=0 but no step variables."""
    env = {k: v for k, v in srun_env(0).items() if not k.startswith("SLURM_STEP")}
    with pytest.raises(ValueError, match=r"SLURM_NTASKS='16' but this process is not an srun task"):
        slurm_cluster(env)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"SLURM_JOB_ID": "abc"}, "SLURM_JOB_ID='abc': expected an integer >= 0"),
        ({"SLURM_STEP_NUM_TASKS": "many"}, "SLURM_STEP_NUM_TASKS='many': expected an integer >= 1"),
        ({"SLURM_STEP_NUM_TASKS": "0"}, "SLURM_STEP_NUM_TASKS='0': expected an integer >= 1"),
        ({"SLURM_PROCID": "-1"}, "SLURM_PROCID='-1': expected an integer >= 0"),
        ({"SLURM_PROCID": "16"}, "SLURM_PROCID='16': not below SLURM_STEP_NUM_TASKS=16"),
        ({"SLURM_LOCALID": "8"}, "SLURM_LOCALID='8': not below the 8 tasks of this node"),
        ({"SLURM_LOCALID": None}, "SLURM_STEP_NUM_TASKS='16' but SLURM_LOCALID is not set"),
        ({"SLURM_STEP_NODELIST": "gpu[01-"}, "SLURM_STEP_NODELIST='gpu[01-': '[' without ']'"),
        ({"SLURM_STEP_NODELIST": None, "SLURM_JOB_NODELIST": None}, "none of SLURM_STEP_NODELIST"),
        ({"SLURM_NODEID": "5"}, "SLURM_NODEID='5': SLURM_STEP_TASKS_PER_NODE='8(x2)' lists 2 nodes"),
        ({"SLURM_STEP_TASKS_PER_NODE": "8(y2)"}, "SLURM_STEP_TASKS_PER_NODE='8(y2)': bad entry"),
        ({"FLOW3R_COORDINATOR_PORT": "70000"}, "FLOW3R_COORDINATOR_PORT='70000': not a port"),
        ({"FLOW3R_COORDINATOR_PORT": "http"}, "FLOW3R_COORDINATOR_PORT='http': expected an integer >= 1"),
        ({"CUDA_VISIBLE_DEVICES": "0,1"}, "SLURM_LOCALID=5 but CUDA_VISIBLE_DEVICES='0,1' lists 2 GPUs"),
    ],
)
def test_malformed_variables(change, message):
    env = srun_env(5)
    for k, v in change.items():
        if v is None:
            env.pop(k)
        else:
            env[k] = v
    with pytest.raises(ValueError) as e:
        slurm_cluster(env)
    assert message in str(e.value)


def test_fake_cpu_devices_get_patient_collective_timeouts_unless_set(monkeypatch):
    """8 fake devices on 2 busy cores: XLA's 40 s collective timeout would abort a healthy run."""
    from flow3r_jax.train import distributed

    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x --xla_cpu_collective_timeout_seconds=7")
    distributed._patient_cpu_collectives()
    flags = os.environ["XLA_FLAGS"].split()
    assert "--xla_dump_to=/tmp/x" in flags and "--xla_cpu_collective_timeout_seconds=7" in flags  # the user's own stay
    assert "--xla_cpu_collective_call_terminate_timeout_seconds=1800" in flags
    assert sum(f.startswith("--xla_cpu_collective_timeout_seconds=") for f in flags) == 1
    distributed._patient_cpu_collectives()  # idempotent
    assert os.environ["XLA_FLAGS"].split() == flags
