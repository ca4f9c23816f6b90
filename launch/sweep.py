"""Expand a config file's sweep into jobs and run them locally, as a SLURM array or on TPU pods;
tabulate their results.

    python -m launch.sweep CONFIG[:OPTIONS] --workdir ROOT [--backend local|slurm|tpu]
        [--dry_run] [--parallel N] [--sweep NAME] [--config.x=y ...]
    python -m launch.sweep summary ROOT

A config file (configs/*.py) has `get_config(arg)`, named options `_OPTIONS`, a generator
`sweep()` (or another one, `--sweep NAME`) that yields override dicts, and `ENTRY`, the program
a job runs (a module, default "launch.train", or a script path relative to the config file)
with `WORKDIR_FLAG`, its flag for the job's directory (default "workdir"; "out" for launch.eval
and reconstruct). An override key that names an option goes into the config string
(`{"size": "base"}` -> `CONFIG:size=base`); any other key is a field (`{"train.lr": 1e-4}` ->
`--config.train.lr=0.0001`). `--config.x=y` given here applies to every job.

Each job is named after its overrides (`size=base,train.lr=0.0001`; characters other than
letters, digits and `._=,-` become `_`) and runs in ROOT/NAME, where launch.sweep writes,
before anything starts: `config.json` (the resolved config, as the job will see it),
`sweep_job.json` (name, overrides, command) and, as the job runs, `status.json` ("running",
then "done" or "failed" with the exit code) and `log.txt`. ROOT/sweep.json lists the jobs.

Backends:
- local: runs the jobs, `--parallel N` at a time (default 1), each a subprocess in the
  repository root. A job whose status is "done" is skipped, so rerunning the command resumes a
  sweep (training resumes from its checkpoints); a failed job is reported and the others go on;
  the exit status is 1 if any job failed.
- slurm: writes ROOT/sweep.sbatch, an array script with one task per line of
  ROOT/sweep_jobs.txt (`WORKDIR<TAB>COMMAND`; `--array=0-(n-1)`, `%N` with --parallel), each
  task running its command under `srun` (one process per SLURM task: multi-node jobs join through
  flow3r_jax.train.distributed) and keeping status.json; then runs `sbatch ROOT/sweep.sbatch`.
- tpu (training configs): one `python launch/tpu_pod.py run --name NAME --zone ZONE
  --config CONFIG:OPTIONS --workdir ROOT/NAME -- --config.x=y ...` per job, run one after the
  other (`--tpu_arg=--detach` to start them all and return; ROOT is then gs://BUCKET/PATH).

`--dry_run` resolves every job's config (bad options or fields fail here) and prints the jobs
and commands without writing anything, except for the slurm backend, which writes its two
files (sweep.sbatch, sweep_jobs.txt) so that they can be read and checked.

`summary ROOT` prints (and writes to ROOT/summary.md) a Markdown table: per job its status
(done / running / failed / not started), its overrides and final metrics: for training the
last step and the last value of every loss/* and eval/* key of metrics.jsonl; for launch.eval
the papers' columns of each benchmark and task (its JSON results; the latest checkpoint's when
it evaluated several); for reconstruct the optimiser's final loss and time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time

from flow3r_jax.cli import ArgumentParser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATUS_FILE = "status.json"
JOB_FILE = "sweep_job.json"

__all__ = ["Job", "build_jobs", "job_name", "resolve_config", "run_local", "write_slurm", "tpu_commands", "job_state", "summarize", "main"]


class SweepError(ValueError):
    """A config file, sweep or job that cannot be expanded or run as asked."""


@dataclasses.dataclass
class Job:
    name: str
    workdir: str
    overrides: dict  # the sweep's override dict for this job (what names it)
    options: str  # the config string passed as CONFIG:options
    fields: dict  # field path -> value ("--config.path=value"), the global overrides included
    command: list[str]  # the entry's command line (python -m ENTRY ...)
    entry_args: list[str]  # the entry's arguments alone (what tpu_pod.py passes on)
    config: object = dataclasses.field(default=None, repr=False)  # the resolved ConfigDict


# ------------------------------------------------------------------------- config files


def load_config_module(path: str):
    """The config file as a module (loaded by path, as ml_collections' config flag does)."""
    if not os.path.isfile(path):
        raise SweepError(f"{path}: no such config file")
    name = "_sweep_config_" + re.sub(r"\W", "_", os.path.abspath(path))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise SweepError(f"{path}: not a config file (no get_config)")
    return module


def _entry(module) -> str:
    return getattr(module, "ENTRY", "launch.train")


def parse_option_string(text: str) -> dict[str, str]:
    """'a=1,b=x' -> {'a': '1', 'b': 'x'} (the config file validates names and values)."""
    out = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        k, sep, v = item.partition("=")
        if not sep:
            raise SweepError(f"config option {item!r}: expected NAME=VALUE")
        out[k.strip()] = v.strip()
    return out


def format_value(v) -> str:
    """A value as a command line spells it (what ml_collections' override flags parse)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (tuple, list)):
        return "(" + ",".join(format_value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return str(v)


def job_name(overrides: dict) -> str:
    """Stable, filesystem-safe name of a job from its overrides, in the sweep's order."""
    if not overrides:
        return "default"
    name = ",".join(f"{k}={format_value(v)}" for k, v in overrides.items())
    name = re.sub(r"[^A-Za-z0-9._=,-]", "_", name)
    if len(name) > 120:  # long values (paths): keep a readable prefix and a hash of the whole
        name = name[:100] + "-" + hashlib.sha1(name.encode()).hexdigest()[:10]
    return name


def resolve_config(config_path: str, options: str, fields: dict):
    """The ConfigDict the job's entry will see: parsed by ml_collections' own `--config` flag
    from the same arguments (options string, `--config.x=y` overrides, config locked)."""
    from absl import flags
    from ml_collections import config_flags

    argv = ["launch.sweep", f"--config={config_path}" + (f":{options}" if options else ""), *(f"--config.{k}={format_value(v)}" for k, v in fields.items())]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "the job's config file and options", flag_values=fv, lock_config=True, sys_argv=argv)
    try:
        fv(argv)
    except Exception as err:  # absl / ml_collections / the config file: all a bad job
        raise SweepError(f"{config_path}:{options} {fields}: {err}") from err
    return fv.config


def _entry_command(module, config_path: str, python: str) -> list[str]:
    entry = _entry(module)
    if entry.endswith(".py"):  # a script, relative to the config file
        return [python, os.path.join(os.path.dirname(os.path.abspath(config_path)), entry)]
    return [python, "-m", entry]


def build_jobs(config: str, root: str, sweep: str = "sweep", global_fields: dict | None = None, python: str = sys.executable) -> tuple[list[Job], object]:
    """(jobs, config module) for CONFIG[:OPTIONS]'s sweep function `sweep` under ROOT. Every
    job's config is resolved here, so that a bad option or field fails before anything runs."""
    path, _, base = config.partition(":")
    path = os.path.abspath(path)
    module = load_config_module(path)
    # Jobs run in the repository root: a config file there is named relative to it, so that
    # the commands also hold on other machines (SLURM nodes, TPU VMs) with their own checkout.
    arg_path = os.path.relpath(path, REPO) if path.startswith(REPO + os.sep) else path
    fn = getattr(module, sweep, None)
    if not callable(fn):
        raise SweepError(f"{path}: no sweep function {sweep!r}")
    option_names = set(getattr(module, "_OPTIONS", {}))
    workdir_flag = getattr(module, "WORKDIR_FLAG", "workdir")
    jobs, seen = [], {}
    for overrides in fn():
        overrides = dict(overrides)
        opts = parse_option_string(base)
        fields = dict(global_fields or {})
        for k, v in overrides.items():
            if k in option_names:
                opts[k] = format_value(v)
            else:
                fields[k] = v
        options = ",".join(f"{k}={v}" for k, v in opts.items())
        name = job_name(overrides)
        if name in seen:
            raise SweepError(f"{path}: sweep {sweep!r} yields two jobs named {name!r} ({seen[name]} and {overrides})")
        seen[name] = overrides
        workdir = root.rstrip("/") + "/" + name
        args = [f"--config={arg_path}" + (f":{options}" if options else ""), *(f"--config.{k}={format_value(v)}" for k, v in fields.items()), f"--{workdir_flag}={workdir}"]
        resolved = resolve_config(path, options, fields)  # (the same file, from this process's cwd)
        jobs.append(Job(name, workdir, overrides, options, fields, _entry_command(module, path, python) + args, args, resolved))
    if not jobs:
        raise SweepError(f"{path}: sweep {sweep!r} yields no jobs")
    return jobs, module


def _is_remote(path: str) -> bool:
    return "://" in path


def prepare(jobs: list[Job], root: str, config: str) -> None:
    """Writes ROOT/sweep.json and, per job, config.json (resolved) and sweep_job.json."""
    os.makedirs(root, exist_ok=True)
    manifest = []
    for job in jobs:
        os.makedirs(job.workdir, exist_ok=True)
        with open(os.path.join(job.workdir, "config.json"), "w") as f:
            f.write(job.config.to_json_best_effort(indent=2, sort_keys=True))
        record = dict(name=job.name, overrides=job.overrides, options=job.options, fields=job.fields, command=job.command)
        with open(os.path.join(job.workdir, JOB_FILE), "w") as f:
            json.dump(record, f, indent=1, default=str)
        manifest.append(job.name)
    with open(os.path.join(root, "sweep.json"), "w") as f:
        json.dump({"config": config, "jobs": manifest, "created": time.time()}, f, indent=1)


# ------------------------------------------------------------------------------- status


def write_status(workdir: str, status: str, **extra) -> None:
    tmp = os.path.join(workdir, f".{STATUS_FILE}.tmp")
    with open(tmp, "w") as f:
        json.dump({"status": status, "time": time.time(), **extra}, f)
    os.replace(tmp, os.path.join(workdir, STATUS_FILE))


def read_status(workdir: str) -> dict | None:
    try:
        with open(os.path.join(workdir, STATUS_FILE)) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -------------------------------------------------------------------------------- local


def run_local(jobs: list[Job], parallel: int = 1, poll: float = 0.05) -> int:
    """Runs the jobs, `parallel` at a time, skipping those already done; returns 1 if any
    failed (each is reported), else 0. Ctrl-C / SIGTERM stop the running jobs (SIGTERM: the
    trainer saves a checkpoint) and mark them failed."""
    pending = []
    for job in jobs:
        st = read_status(job.workdir) or {}
        if st.get("status") == "done":
            print(f"launch.sweep: {job.name}: done already, skipped")
        elif st.get("status") == "running" and st.get("host") == socket.gethostname() and int(st.get("pid") or 0) > 0 and _alive(int(st["pid"])):
            print(f"launch.sweep: {job.name}: running in another process (pid {st['pid']}), skipped")
        else:
            pending.append(job)
    skipped = len(jobs) - len(pending)
    running: dict = {}  # Popen -> (job, log file, start time)
    failed, done = [], 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        while pending or running:
            while pending and len(running) < max(1, parallel):
                job = pending.pop(0)
                os.makedirs(job.workdir, exist_ok=True)
                log = open(os.path.join(job.workdir, "log.txt"), "a")
                log.write(f"# launch.sweep {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(job.command)}\n")
                log.flush()
                proc = subprocess.Popen(job.command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
                write_status(job.workdir, "running", pid=proc.pid, host=socket.gethostname())
                running[proc] = (job, log, time.time())
                print(f"launch.sweep: {job.name}: started (pid {proc.pid}, log {job.workdir}/log.txt)")
            for proc in [p for p in running if p.poll() is not None]:
                job, log, t0 = running.pop(proc)
                log.close()
                rc = proc.returncode
                write_status(job.workdir, "done" if rc == 0 else "failed", returncode=rc, seconds=round(time.time() - t0, 1))
                if rc == 0:
                    done += 1
                    print(f"launch.sweep: {job.name}: done ({time.time() - t0:.1f} s)")
                else:
                    failed.append(job.name)
                    print(f"launch.sweep: {job.name}: FAILED (exit {rc}); see {job.workdir}/log.txt", file=sys.stderr)
            time.sleep(poll)
    except KeyboardInterrupt:
        for proc, (job, log, _) in running.items():
            proc.terminate()
        for proc, (job, log, _) in running.items():
            proc.wait()
            log.close()
            write_status(job.workdir, "failed", returncode=proc.returncode, note="stopped by launch.sweep")
        raise
    print(f"launch.sweep: {done} done, {skipped} skipped, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


# -------------------------------------------------------------------------------- SLURM


def write_slurm(jobs: list[Job], root: str, name: str, parallel: int = 0, nodes: int = 1, ntasks_per_node: int = 1, gpus_per_node: int = 0, partition: str = "", time_limit: str = "", extra: list[str] = ()) -> str:
    """Writes ROOT/sweep_jobs.txt and the array script ROOT/sweep.sbatch; returns its path."""
    os.makedirs(root, exist_ok=True)
    jobs_file = os.path.join(os.path.abspath(root), "sweep_jobs.txt")
    with open(jobs_file, "w") as f:
        for job in jobs:
            f.write(f"{os.path.abspath(job.workdir)}\t{shlex.join(job.command)}\n")
    array = f"0-{len(jobs) - 1}" + (f"%{parallel}" if parallel > 0 else "")
    directives = [f"--job-name={name}", f"--array={array}", f"--output={os.path.abspath(root)}/slurm-%A_%a.out", f"--nodes={nodes}", f"--ntasks-per-node={ntasks_per_node}"]
    if gpus_per_node:
        directives.append(f"--gpus-per-node={gpus_per_node}")
    if partition:
        directives.append(f"--partition={partition}")
    if time_limit:
        directives.append(f"--time={time_limit}")
    directives += list(extra)
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        f"# launch.sweep: {len(jobs)} jobs, one array task per line of {jobs_file}",
        *(f"#SBATCH {d}" for d in directives),
        "set -uo pipefail",
        f"cd {q(REPO)}",
        f"LINE=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {q(jobs_file)})",
        "WORKDIR=${LINE%%$'\\t'*}",
        "CMD=${LINE#*$'\\t'}",
        'mkdir -p "$WORKDIR"',
        f"if grep -q '\"status\": \"done\"' \"$WORKDIR/{STATUS_FILE}\" 2>/dev/null; then",
        '  echo "launch.sweep: $WORKDIR is done already"',
        "  exit 0",
        "fi",
        "write_status() {",
        f"  printf '{{\"status\": \"%s\", \"time\": %s, \"slurm_job\": \"%s\"%s}}\\n' \"$1\" \"$(date +%s)\" \"${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}\" \"${{2:-}}\" > \"$WORKDIR/{STATUS_FILE}\"",
        "}",
        "write_status running",
        'echo "# launch.sweep $(date "+%F %T") (SLURM ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}): $CMD" >> "$WORKDIR/log.txt"',
        'srun bash -c "$CMD" >> "$WORKDIR/log.txt" 2>&1',
        "RC=$?",
        'if [ "$RC" -eq 0 ]; then write_status done ", \\"returncode\\": 0"; else write_status failed ", \\"returncode\\": $RC"; fi',
        'exit "$RC"',
        "",
    ]
    script = os.path.join(os.path.abspath(root), "sweep.sbatch")
    with open(script, "w") as f:
        f.write("\n".join(lines))
    return script


# ---------------------------------------------------------------------------------- TPU


def _tpu_name(prefix: str, job: str) -> str:
    """A TPU VM name: lowercase letters, digits and hyphens, unique per job (hash)."""
    slug = re.sub(r"[^a-z0-9]+", "-", job.lower()).strip("-")[:40].strip("-")
    name = f"{prefix}-{slug}-{hashlib.sha1(job.encode()).hexdigest()[:6]}".lstrip("-")
    return name if name[0].isalpha() else "s-" + name


def tpu_commands(jobs: list[Job], entry: str, zone: str, prefix: str, accelerator: str = "", project: str = "", extra: list[str] = ()) -> list[list[str]]:
    """One `python launch/tpu_pod.py run --name ... --config CONFIG:OPTIONS --workdir W -- --config.x=y ...`
    per job (tpu_pod.py creates the slice, ships the repository and runs launch.train)."""
    if entry != "launch.train":
        raise SweepError(f"the tpu backend runs launch.train jobs (launch/tpu_pod.py); this config's entry is {entry}")
    out = []
    for job in jobs:
        config = job.entry_args[0].partition("=")[2]
        if os.path.isabs(config.partition(":")[0]):
            raise SweepError(f"the tpu backend needs a config file in the repository, got {config}")
        cmd = ["python", "launch/tpu_pod.py", "run", "--name", _tpu_name(prefix, job.name), "--zone", zone]
        cmd += (["--accelerator", accelerator] if accelerator else []) + (["--project", project] if project else [])
        cmd += [*extra, "--config", config, "--workdir", job.workdir, "--", *(f"--config.{k}={format_value(v)}" for k, v in job.fields.items())]
        out.append(cmd)
    return out


# ------------------------------------------------------------------------------ summary


def _training_metrics(workdir: str) -> dict:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        return {}
    out: dict = {}
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line being written
                continue
            if "step" in rec:
                out["step"] = max(int(rec["step"]), out.get("step", 0))
            out.update({k: v for k, v in rec.items() if k.startswith(("loss/", "eval/"))})
    return out


def _eval_metrics(workdir: str) -> dict:
    """The papers' columns of launch.eval's results (the last tag, in name order, per benchmark)."""
    reports = {}
    for tag in sorted(os.listdir(workdir)):
        d = os.path.join(workdir, tag)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            if name.endswith(".json"):
                try:
                    with open(os.path.join(d, name)) as f:
                        rep = json.load(f)
                except (OSError, json.JSONDecodeError):
                    continue
                if isinstance(rep, dict) and "tasks" in rep and "benchmark" in rep:
                    reports[rep["benchmark"]] = rep
    if not reports:
        return {}
    from flow3r_jax.eval.runner import SUMMARY_COLUMNS

    out = {}
    for bench, rep in reports.items():
        for task, r in rep["tasks"].items():
            summary = r.get("summary", {})
            keys = [k for k, _ in SUMMARY_COLUMNS.get(task, [])] or [k for k, v in summary.items() if isinstance(v, float)]
            out.update({f"{bench}/{task}/{k}": summary[k] for k in keys if k in summary})
    return out


def _flowmap_metrics(workdir: str) -> dict:
    try:
        with open(os.path.join(workdir, "cameras.json")) as f:
            run = json.load(f).get("run", {})
    except (OSError, json.JSONDecodeError):
        return {}
    return {f"flowmap/{k}": run[k] for k in ("final_loss", "focal_flowmap_units", "seconds") if isinstance(run.get(k), (int, float))}


def job_metrics(workdir: str) -> dict:
    return {**_training_metrics(workdir), **_eval_metrics(workdir), **_flowmap_metrics(workdir)}


def job_state(workdir: str, metrics: dict | None = None) -> str:
    """done / running / failed (exit N) / not started, from status.json, else from the outputs
    (jobs started elsewhere: a training run whose last step is the config's is done)."""
    st = read_status(workdir)
    if st is not None:
        s = st.get("status")
        if s == "running" and st.get("host") == socket.gethostname() and st.get("pid") and not _alive(int(st["pid"])):
            return "failed (launcher gone)"
        if s == "failed":
            return f"failed (exit {st.get('returncode')})"
        return str(s)
    metrics = job_metrics(workdir) if metrics is None else metrics
    if "step" in metrics:
        try:
            with open(os.path.join(workdir, "config.json")) as f:
                steps = json.load(f)["train"]["steps"]
        except (OSError, KeyError, json.JSONDecodeError):
            steps = None
        return "done" if steps is not None and metrics["step"] >= steps else "running"
    if os.path.isfile(os.path.join(workdir, "results.md")) or os.path.isfile(os.path.join(workdir, "cameras.json")):
        return "done"
    return "running" if os.path.isfile(os.path.join(workdir, "log.txt")) else "not started"


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def summarize(root: str) -> str:
    """The sweep's table (Markdown), also written to ROOT/summary.md."""
    if not os.path.isdir(root):
        raise SweepError(f"{root}: no such sweep directory")
    names = []
    try:
        with open(os.path.join(root, "sweep.json")) as f:
            names = list(json.load(f)["jobs"])
    except (OSError, KeyError, json.JSONDecodeError):
        pass
    names += sorted(d for d in os.listdir(root) if d not in names and os.path.isfile(os.path.join(root, d, JOB_FILE)))
    if not names:
        raise SweepError(f"{root}: no sweep jobs (no sweep.json, no */{JOB_FILE})")
    rows, override_keys, metric_keys = [], {}, {}
    for name in names:
        workdir = os.path.join(root, name)
        try:
            with open(os.path.join(workdir, JOB_FILE)) as f:
                overrides = json.load(f).get("overrides", {})
        except (OSError, json.JSONDecodeError):
            overrides = {}
        metrics = job_metrics(workdir) if os.path.isdir(workdir) else {}
        status = job_state(workdir, metrics) if os.path.isdir(workdir) else "not started"
        override_keys.update(dict.fromkeys(overrides))
        metric_keys.update(dict.fromkeys(k for k in metrics if k != "step"))
        rows.append((name, status, overrides, metrics))
    has_step = any("step" in m for *_, m in rows)
    cols = ["job", "status", *override_keys, *(["step"] if has_step else []), *sorted(metric_keys)]
    lines = [f"# Sweep {os.path.abspath(root)}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, status, overrides, metrics in rows:
        cells = [name, status, *(_cell(overrides.get(k)) for k in override_keys)]
        cells += [_cell(metrics.get(k)) for k in cols[len(cells):]]
        lines.append("| " + " | ".join(cells) + " |")
    counts = {s: sum(r[1].split(" ")[0] == s for r in rows) for s in ("done", "running", "failed")}
    lines += ["", f"{len(rows)} jobs: {counts['done']} done, {counts['running']} running, {counts['failed']} failed, {len(rows) - sum(counts.values())} not started", ""]
    text = "\n".join(lines)
    with open(os.path.join(root, "summary.md"), "w") as f:
        f.write(text)
    return text


# --------------------------------------------------------------------------------- main


def _split_overrides(argv: list[str]) -> tuple[dict, list[str]]:
    """(`--config.x=y` overrides as {x: 'y'}, the other arguments)."""
    fields, rest, i = {}, [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--config."):
            key, sep, value = a[len("--config."):].partition("=")
            if not sep:
                if i + 1 >= len(argv):
                    raise SweepError(f"{a}: missing value")
                value, i = argv[i + 1], i + 1
            fields[key] = value
        else:
            rest.append(a)
        i += 1
    return fields, rest


def _parser() -> ArgumentParser:
    p = ArgumentParser(module="launch.sweep", description=__doc__.split("\n\n")[0], epilog="`python -m launch.sweep summary ROOT` tabulates a sweep's results.")
    p.add_argument("config", help="CONFIG[:OPTIONS], e.g. configs/ablation_flow_heads.py:size=tiny")
    p.add_argument("--workdir", required=True, help="the sweep's root; each job runs in ROOT/NAME")
    p.add_argument("--backend", choices=("local", "slurm", "tpu"), default="local", help="where the jobs run: local subprocesses, a SLURM array or TPU pods (default local)")
    p.add_argument("--dry_run", action="store_true", help="print the jobs and commands; write nothing (slurm: only its two files)")
    p.add_argument("--parallel", type=int, default=0, help="local: jobs at a time (default 1); slurm: the array's %%N limit (default none)")
    p.add_argument("--sweep", default="sweep", help="the config file's sweep function (default sweep)")
    p.add_argument("--python", default=sys.executable, help="interpreter of the jobs (local, slurm)")
    g = p.add_argument_group("slurm")
    g.add_argument("--nodes", type=int, default=1, help="nodes per job (default 1)")
    g.add_argument("--ntasks_per_node", type=int, default=1, help="processes per node (one per GPU for multi-GPU nodes)")
    g.add_argument("--gpus_per_node", type=int, default=0, help="GPUs per node (default 0: no --gpus-per-node directive)")
    g.add_argument("--partition", default="", help="the SLURM partition (default: the cluster's)")
    g.add_argument("--time", default="", help="time limit, e.g. 24:00:00")
    g.add_argument("--sbatch_arg", action="append", default=[], help="another #SBATCH directive, e.g. --sbatch_arg=--account=X (repeatable)")
    g = p.add_argument_group("tpu")
    g.add_argument("--zone", default="", help="the TPU pods' zone")
    g.add_argument("--accelerator", default="", help="e.g. v5p-64")
    g.add_argument("--project", default="", help="GCP project (default: gcloud's)")
    g.add_argument("--tpu_prefix", default="", help="TPU VM name prefix (default: the config file's name)")
    g.add_argument("--tpu_arg", action="append", default=[], help="another argument of tpu_pod.py run (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["summary"]:
        if len(argv) != 2:
            print("usage: python -m launch.sweep summary ROOT", file=sys.stderr)
            return 2
        try:
            print(summarize(argv[1]))
        except SweepError as err:
            print(f"launch.sweep: error: {err}", file=sys.stderr)
            return 2
        return 0
    p = _parser()
    try:
        fields, rest = _split_overrides(argv)
    except SweepError as err:
        p.error(str(err))
    args = p.parse_args(rest)
    if args.backend == "tpu" and not args.zone:
        p.error("--backend tpu needs --zone")
    try:
        jobs, module = build_jobs(args.config, args.workdir, args.sweep, fields, args.python)
        stem = os.path.splitext(os.path.basename(args.config.partition(":")[0]))[0]
        if args.backend == "tpu":
            commands = tpu_commands(jobs, _entry(module), args.zone, args.tpu_prefix or stem.replace("_", "-"), args.accelerator, args.project, args.tpu_arg)
    except SweepError as err:
        print(f"launch.sweep: error: {err}", file=sys.stderr)
        return 2
    print(f"launch.sweep: {len(jobs)} jobs of {args.config} ({args.sweep}), backend {args.backend}, root {args.workdir}")
    if args.backend == "local":
        for job in jobs:
            print(f"  {job.name}\n    {shlex.join(job.command)}")
        if args.dry_run:
            return 0
        prepare(jobs, args.workdir, args.config)
        return run_local(jobs, max(1, args.parallel))
    if args.backend == "slurm":
        script = write_slurm(jobs, args.workdir, f"sweep-{stem}", args.parallel, args.nodes, args.ntasks_per_node, args.gpus_per_node, args.partition, args.time, args.sbatch_arg)
        for job in jobs:
            print(f"  {job.name}\n    {shlex.join(job.command)}")
        print(f"sbatch {shlex.quote(script)}")
        if args.dry_run:
            return 0
        prepare(jobs, args.workdir, args.config)
        return subprocess.run(["sbatch", script]).returncode
    for cmd in commands:
        print(shlex.join(cmd))
    if args.dry_run:
        return 0
    if not _is_remote(args.workdir):
        prepare(jobs, args.workdir, args.config)
    failed = [job.name for job, cmd in zip(jobs, commands) if subprocess.run(cmd, cwd=REPO).returncode != 0]
    if failed:
        print(f"launch.sweep: tpu_pod.py failed for {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
