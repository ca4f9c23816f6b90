"""launch.sweep: every config file's sweep expands to its jobs (distinct names and workdirs) for
each backend in a dry run (local commands, a SLURM array script that bash parses, TPU-pod
commands); the local backend runs a trivial entry two at a time, resumes, reports a failure;
`summary` tabulates training, evaluation and not-yet-run workdirs."""

import json
import os
import re
import shlex
import subprocess
import textwrap

import pytest

from launch import sweep as S

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# config file -> (jobs of its sweep, entry module, options every job's config string carries)
SWEEPS = {
    "configs/flow3r.py": (6, "launch.train"),
    "configs/flowmap.py": (6, "flow3r_jax.reconstruct"),
    "configs/eval.py": (3, "launch.eval"),
    "configs/ablation_flow_heads.py": (18, "launch.train"),  # 6 variants x 3 seeds
}


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(ROOT)  # config paths as a user gives them


def _dry(capsys, *argv):
    rc = S.main(list(argv) + ["--dry_run"])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("config", SWEEPS)
def test_local_dry_run_lists_every_job_and_writes_nothing(config, tmp_path, capsys):
    n, entry = SWEEPS[config]
    root = tmp_path / "sweep"
    rc, out, err = _dry(capsys, config, "--workdir", str(root), "--config.options=x")
    assert rc == 0, err
    commands = [shlex.split(line) for line in out.splitlines() if line.startswith("    ")]
    assert len(commands) == n
    assert all(c[1:3] == ["-m", entry] for c in commands)
    workdirs = [a.split("=", 1)[1] for c in commands for a in c if a.startswith(("--workdir=", "--out="))]
    assert len(set(workdirs)) == n and all(os.path.dirname(w) == str(root) for w in workdirs)
    assert all("--config.options=x" in c for c in commands)  # the global override reaches every job
    assert not root.exists()


@pytest.mark.parametrize("config", SWEEPS)
def test_slurm_dry_run_writes_an_array_script_that_bash_parses(config, tmp_path, capsys):
    n, _ = SWEEPS[config]
    root = tmp_path / "sweep"
    rc, out, err = _dry(capsys, config, "--workdir", str(root), "--backend", "slurm", "--parallel", "2", "--gpus_per_node", "8", "--partition", "gpu")
    assert rc == 0, err
    script = root / "sweep.sbatch"
    assert f"sbatch {script}" in out
    text = script.read_text()
    assert re.search(rf"^#SBATCH --array=0-{n - 1}%2$", text, re.M)
    assert "#SBATCH --gpus-per-node=8" in text and "#SBATCH --partition=gpu" in text and "srun " in text
    subprocess.run(["bash", "-n", str(script)], check=True)
    lines = (root / "sweep_jobs.txt").read_text().splitlines()
    assert len(lines) == n and len({ln.split("\t")[0] for ln in lines}) == n
    assert sorted(os.listdir(root)) == ["sweep.sbatch", "sweep_jobs.txt"]  # nothing else in a dry run


def test_slurm_array_task_runs_its_line_and_keeps_the_status(tmp_path, capsys):
    """The array script, run by bash as SLURM would (srun replaced by a function), runs the
    task's command in its workdir and writes status.json."""
    config = _trivial_config(tmp_path)
    root = tmp_path / "sweep"
    assert S.main([f"{config}", "--workdir", str(root), "--backend", "slurm", "--dry_run"]) == 0
    capsys.readouterr()
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_JOB_ID="77")
    script = "srun() { \"$@\"; }; export -f srun; " + f"source {shlex.quote(str(root / 'sweep.sbatch'))}"
    r = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1  # task 1 is the failing job
    status = json.loads((root / "fail=1,loss=2.0" / "status.json").read_text())
    assert status["status"] == "failed" and status["returncode"] == 1 and status["slurm_job"] == "77_1"


@pytest.mark.parametrize("config", ["configs/flow3r.py", "configs/ablation_flow_heads.py"])
def test_tpu_dry_run_gives_one_tpu_pod_command_per_job(config, tmp_path, capsys):
    n, _ = SWEEPS[config]
    rc, out, err = _dry(capsys, config, "--workdir", "gs://bucket/sweep", "--backend", "tpu", "--zone", "us-central2-b", "--accelerator", "v4-8", "--config.data.global_batch=16")
    assert rc == 0, err
    commands = [shlex.split(line) for line in out.splitlines() if line.startswith("python launch/tpu_pod.py")]
    assert len(commands) == n
    names = [c[c.index("--name") + 1] for c in commands]
    assert len(set(names)) == n and all(re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", x) for x in names)
    for c in commands:
        assert c[:3] == ["python", "launch/tpu_pod.py", "run"] and c[c.index("--zone") + 1] == "us-central2-b"
        assert c[c.index("--config") + 1].startswith(config + ":")  # a path in the repository
        assert c[c.index("--workdir") + 1].startswith("gs://bucket/sweep/")
        assert c[c.index("--") + 1 :][0] == "--config.data.global_batch=16"
    assert len({c[c.index("--workdir") + 1] for c in commands}) == n


def test_tpu_backend_refuses_non_training_entries(tmp_path, capsys):
    rc, _, err = _dry(capsys, "configs/eval.py", "--workdir", "gs://b/s", "--backend", "tpu", "--zone", "us-central2-b")
    assert rc == 2 and "launch.eval" in err


def test_bad_override_or_sweep_fails_before_anything(tmp_path, capsys):
    rc, _, err = _dry(capsys, "configs/flow3r.py", "--workdir", str(tmp_path / "s"), "--config.train.no_such_field=1")
    assert rc == 2 and "no_such_field" in err
    rc, _, err = _dry(capsys, "configs/flow3r.py", "--workdir", str(tmp_path / "s"), "--sweep", "nope")
    assert rc == 2 and "nope" in err
    assert not (tmp_path / "s").exists()


def test_job_names_are_stable_and_filesystem_safe():
    assert S.job_name({"size": "base", "train.lr": 1e-4}) == "size=base,train.lr=0.0001"
    assert S.job_name({}) == "default"
    long = S.job_name({"data.sources": "/data/" + "x" * 200})
    assert len(long) <= 120 and "/" not in long and long == S.job_name({"data.sources": "/data/" + "x" * 200})


# ---------------------------------------------------------------------- the local backend

ENTRY = '''
"""A stand-in for launch.train: reads the config launch.sweep wrote, writes metrics.jsonl."""
import json, os, sys, time

args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--workdir="))
workdir = args["workdir"]
with open(os.path.join(workdir, "config.json")) as f:
    c = json.load(f)
with open(os.path.join(workdir, "runs.txt"), "a") as f:
    f.write(f"{time.time()}\\n")
time.sleep(c["sleep"])
with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    for step in (1, 2):
        f.write(json.dumps({"step": step, "loss/total": c["loss"] / step, "train/lr": 0.1}) + "\\n")
    f.write(json.dumps({"step": 2, "eval/epe": 3.5}) + "\\n")
print("entry ran in", workdir)
sys.exit(1 if c["fail"] else 0)
'''

CONFIG = '''
import ml_collections

ENTRY = "entry.py"

_OPTIONS = {"fail": "0"}


def get_config(arg=None):
    fail = dict(x.split("=") for x in filter(None, (arg or "").split(","))).get("fail", "0")
    c = ml_collections.ConfigDict()
    c.options = arg or ""
    c.fail = fail == "1"
    c.loss = 1.0
    c.sleep = 0.0
    c.train = ml_collections.ConfigDict({"steps": 2})
    return c


def sweep():
    yield {"fail": 0, "loss": 1.0}
    yield {"fail": 1, "loss": 2.0}


def two():
    yield {"loss": 1.0, "sleep": 0.5}
    yield {"loss": 2.0, "sleep": 0.5}


def three():
    yield from two()
    yield {"loss": 4.0, "sleep": 0.0}
'''


def _trivial_config(tmp_path):
    (tmp_path / "entry.py").write_text(textwrap.dedent(ENTRY))
    (tmp_path / "trivial.py").write_text(textwrap.dedent(CONFIG))
    return str(tmp_path / "trivial.py")


def _runs(root, name):
    path = os.path.join(root, name, "runs.txt")
    return len(open(path).read().splitlines()) if os.path.exists(path) else 0


def test_local_runs_two_jobs_at_once_then_resumes(tmp_path, capsys):
    config = _trivial_config(tmp_path)
    root = str(tmp_path / "sweep")
    assert S.main([config, "--workdir", root, "--sweep", "two", "--parallel", "2"]) == 0
    out = capsys.readouterr().out
    names = ["loss=1.0,sleep=0.5", "loss=2.0,sleep=0.5"]
    for name in names:
        assert json.load(open(os.path.join(root, name, "status.json")))["status"] == "done"
        assert json.load(open(os.path.join(root, name, "config.json")))["loss"] == float(name[5:8])
        assert "entry ran in" in open(os.path.join(root, name, "log.txt")).read()
    starts = [float(open(os.path.join(root, n, "runs.txt")).read()) for n in names]
    assert abs(starts[0] - starts[1]) < 0.5, "the two jobs did not run at the same time"
    assert "2 done, 0 skipped, 0 failed" in out
    # Rerun with a third job: the finished two are skipped, only the new one runs.
    assert S.main([config, "--workdir", root, "--sweep", "three", "--parallel", "2"]) == 0
    out = capsys.readouterr().out
    assert [_runs(root, n) for n in names] == [1, 1] and _runs(root, "loss=4.0,sleep=0.0") == 1
    assert "1 done, 2 skipped, 0 failed" in out


def test_local_reports_a_failed_job_and_runs_the_others(tmp_path, capsys):
    config = _trivial_config(tmp_path)
    root = str(tmp_path / "sweep")
    assert S.main([config, "--workdir", root]) == 1
    captured = capsys.readouterr()
    assert "fail=1,loss=2.0: FAILED (exit 1)" in captured.err and "1 done, 0 skipped, 1 failed: fail=1,loss=2.0" in captured.out
    assert json.load(open(os.path.join(root, "fail=0,loss=1.0", "status.json")))["status"] == "done"
    status = json.load(open(os.path.join(root, "fail=1,loss=2.0", "status.json")))
    assert status == {**status, "status": "failed", "returncode": 1}
    # A failed job runs again on the next invocation; the finished one does not.
    assert S.main([config, "--workdir", root]) == 1
    assert _runs(root, "fail=0,loss=1.0") == 1 and _runs(root, "fail=1,loss=2.0") == 2


def _table(text):
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in text.splitlines() if ln.startswith("|")]
    header, body = rows[0], rows[2:]
    return [dict(zip(header, r)) for r in body]


def test_summary_tabulates_done_failed_running_and_not_started(tmp_path, capsys):
    config = _trivial_config(tmp_path)
    root = str(tmp_path / "sweep")
    assert S.main([config, "--workdir", root]) == 1
    jobs, _ = S.build_jobs(config, root, "three")
    S.prepare(jobs, root, config)  # written as before a launch, not run
    os.makedirs(os.path.join(root, "loss=2.0,sleep=0.5"), exist_ok=True)
    with open(os.path.join(root, "loss=2.0,sleep=0.5", "metrics.jsonl"), "w") as f:  # started elsewhere, step 1 of 2
        f.write(json.dumps({"step": 1, "loss/total": 0.75}) + "\n")
    capsys.readouterr()
    assert S.main(["summary", root]) == 0
    text = capsys.readouterr().out
    assert open(os.path.join(root, "summary.md")).read().strip() == text.strip()
    rows = {r["job"]: r for r in _table(text)}
    assert set(rows) == {"fail=0,loss=1.0", "fail=1,loss=2.0", "loss=1.0,sleep=0.5", "loss=2.0,sleep=0.5", "loss=4.0,sleep=0.0"}
    assert rows["fail=0,loss=1.0"]["status"] == "done" and rows["fail=0,loss=1.0"]["step"] == "2"
    assert rows["fail=0,loss=1.0"]["loss/total"] == "0.5" and rows["fail=0,loss=1.0"]["eval/epe"] == "3.5"
    assert "train/lr" not in rows["fail=0,loss=1.0"]
    assert rows["fail=1,loss=2.0"]["status"] == "failed (exit 1)" and rows["fail=1,loss=2.0"]["loss/total"] == "1"
    assert rows["loss=2.0,sleep=0.5"]["status"] == "running" and rows["loss=2.0,sleep=0.5"]["step"] == "1"
    assert rows["loss=4.0,sleep=0.0"]["status"] == "not started" and rows["loss=4.0,sleep=0.0"]["loss/total"] == ""
    assert rows["loss=4.0,sleep=0.0"]["sleep"] == "0" and rows["fail=1,loss=2.0"]["fail"] == "1"
    assert "5 jobs: 1 done, 1 running, 1 failed, 2 not started" in text


def test_summary_reads_launch_eval_results(tmp_path, capsys):
    root = tmp_path / "sweep"
    job = root / "suite=video_depth,depth_align=median"
    (job / "ckpt").mkdir(parents=True)
    (job / S.JOB_FILE).write_text(json.dumps({"overrides": {"suite": "video_depth", "depth_align": "median"}}))
    report = {"benchmark": "sintel", "tag": "ckpt", "tasks": {"video_depth": {"summary": {"abs_rel": 0.25, "delta<1.25": 0.7, "valid_pixels": 10}}}}
    (job / "ckpt" / "sintel.json").write_text(json.dumps(report))
    (job / "results.md").write_text("# Evaluation results\n")
    assert S.main(["summary", str(root)]) == 0
    (row,) = _table(capsys.readouterr().out)
    assert row["status"] == "done" and row["depth_align"] == "median"
    assert row["sintel/video_depth/abs_rel"] == "0.25" and row["sintel/video_depth/delta<1.25"] == "0.7"


def test_summary_of_a_missing_or_empty_directory_is_an_error(tmp_path, capsys):
    assert S.main(["summary", str(tmp_path / "none")]) == 2
    assert S.main(["summary", str(tmp_path)]) == 2
    assert "no sweep jobs" in capsys.readouterr().err
