"""The quickstart: the whole system on a fresh clone, with nothing downloaded (`./run.sh demo`).

    python -m launch.quickstart [--out outputs/quickstart] [--quick] [--fresh]

Stages, each a command of the project run as a user would run it (logs in OUT/logs/):

    data         synthetic scenes -> labeled clips (`data_pipelines.make_dataset --synthetic`);
                 rendered videos -> unlabeled clips through the CPU flow teacher
                 (`data_pipelines.make_dataset --inputs`); held-back clips for the trainer's eval
                 hook; a synthetic benchmark (`flow3r_jax.eval.synthetic`) and one more video
                 with exact poses for `reconstruct`
    stage1       `launch.train` stage 1 (flow head only) of `tiny` on the unlabeled clips, on 8
                 fake CPU devices as a 4 (data) x 2 (fsdp) mesh; the initial model is saved as
                 step 0
    stage2       `launch.train` stage 2 (all but the encoder) from stage 1, labeled:2 + unlabeled:1
    eval         `launch.eval` of step 0 and of the final checkpoint on the held-back benchmark
    reconstruct  `flow3r_jax.reconstruct` of the held-back video with the trained checkpoint,
                 feed-forward, then `--refine` (per-scene optimisation from the model's depth)
    report       OUT/report/: summary.md (metrics of step 0 against the final checkpoint, the
                 reconstructions' errors against the exact poses), loss_curves.png, trajectory
                 plots, points.ply, tensorboard/ (links to the runs' event files)

A finished stage is recorded in OUT/stages/ and reused by a rerun; an interrupted training stage
resumes from its last checkpoint, an interrupted data stage from the writer's own record.
`--fresh` starts over. `--quick` is the reduced form the test suite runs (smaller scenes, fewer
steps). About 10 minutes on 2 CPU cores (README "Quickstart").
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from flow3r_jax.cli import ArgumentParser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("data", "stage1", "stage2", "eval", "reconstruct", "report")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes of one quickstart run (recorded in OUT/quickstart.json; a rerun must match)."""

    labeled: int = 16  # labeled synthetic clips
    videos: int = 8  # rendered videos for the unlabeled clips (CPU flow teacher)
    heldout: int = 4  # held-back labeled clips for the trainer's eval hook
    bench: int = 4  # held-back benchmark sequences for launch.eval
    frames: int = 8  # frames per clip
    size: str = "64x84"  # HxW of every rendered frame
    steps1: int = 150
    steps2: int = 400
    checkpoint_every: int = 50
    eval_every: int = 50
    recon_frames: int = 12
    recon_steps: int = 300  # --refine optimisation steps
    devices: int = 8
    mesh: str = "4x2"  # data x fsdp


FULL = Plan()
QUICK = Plan(labeled=4, videos=2, heldout=2, bench=2, frames=6, size="42x56", steps1=6, steps2=8, checkpoint_every=4, eval_every=4, recon_frames=6, recon_steps=20)


class QuickstartError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------ running

# absl / XLA C++ log lines ("I1206 05:27:09.58 ..." ) and backend probing stay in the log file.
# Python-side absl records (Orbax's checkpoint chatter) likewise.
_NOISE = re.compile(r"^[IWE]\d{4} |Unable to initialize backend|^\s*$|it/s\]$|^[\d-]+ [\d:,]+ absl: ")


def _say(msg: str) -> None:
    print(f"[quickstart {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Runner:
    def __init__(self, out: str, verbose: bool):
        self.out = out
        self.verbose = verbose
        self.logs = os.path.join(out, "logs")
        os.makedirs(self.logs, exist_ok=True)

    def run(self, name: str, args: list[str], env: dict | None = None) -> None:
        """Runs `python -m ARGS` in the repository root; every output line goes to
        OUT/logs/NAME.log and the project's own lines to the terminal."""
        log_path = os.path.join(self.logs, name + ".log")
        cmd = [sys.executable, "-m", *args]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env["PYTHONPATH"] = ROOT + (os.pathsep + full_env["PYTHONPATH"] if full_env.get("PYTHONPATH") else "")
        with open(log_path, "a") as log:
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            # Its own session: a Ctrl-C at the terminal reaches this process only, which then
            # stops the command with SIGTERM, the signal on which launch.train saves a checkpoint
            # of the current step before it exits (so a rerun loses no step).
            proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
            try:
                for line in proc.stdout:
                    log.write(line)
                    if self.verbose or not _NOISE.search(line):
                        print(f"    {line.rstrip()}", flush=True)
                rc = proc.wait()
            except BaseException:
                _say(f"stopping {name} (SIGTERM; a training stage saves its current step)")
                proc.send_signal(signal.SIGTERM)
                try:
                    rest, _ = proc.communicate(timeout=120)
                    log.write(rest or "")
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
                raise
        if rc != 0:
            with open(log_path) as f:
                tail = f.readlines()[-25:]
            raise QuickstartError(f"{name} failed (exit {rc}): {' '.join(args[:1])}\n" + "".join("    " + t for t in tail) + f"full log: {log_path}")


def _train_flags(plan: Plan, workdir: str, stage: int, sources: str, heldout: str, steps: int, extra: list[str]) -> list[str]:
    data, fsdp = plan.mesh.split("x")
    h, w = (int(v) for v in plan.size.split("x"))
    side = min(h, w) // 14 * 14  # square crops, a multiple of the patch size
    return [
        "launch.train", f"--cpu_devices={plan.devices}", f"--config={os.path.join(ROOT, 'configs', 'flow3r.py')}:size=tiny,stage={stage}",
        f"--workdir={workdir}", f"--config.data.sources={sources}", f"--config.mesh.data={data}", f"--config.mesh.fsdp={fsdp}",
        f"--config.data.height={side}", f"--config.data.width={side}", f"--config.train.steps={steps}",
        f"--config.checkpoint.every={plan.checkpoint_every}", "--config.checkpoint.keep=20", "--config.log.every=10", "--config.log.progress=False",
        "--config.eval.fn=flow3r_jax.train.evaluate:heldout_metrics", f"--config.eval.every={plan.eval_every}", f"--config.eval.sources={heldout}",
        "--config.eval.batches=2", *extra,
    ]


# ------------------------------------------------------------------------------------- stages


def stage_data(r: Runner, plan: Plan, paths: dict) -> dict:
    d = paths["data"]
    common = ["--frames", str(plan.frames), "--size", plan.size, "--offsets", "1,2"]
    _say(f"data: {plan.labeled} labeled synthetic clips ({plan.frames} frames of {plan.size}, exact depth, poses and flow)")
    r.run("data_labeled", ["data_pipelines.make_dataset", "--synthetic", str(plan.labeled), "--seed", "0", "--output_dir", os.path.join(d, "labeled"), *common])
    _say(f"data: {plan.heldout} held-back labeled clips (the trainer's eval hook)")
    r.run("data_heldout", ["data_pipelines.make_dataset", "--synthetic", str(plan.heldout), "--seed", "100", "--output_dir", os.path.join(d, "heldout"), *common])
    _say(f"data: rendering {plan.videos} videos, then unlabeled clips with the CPU flow teacher's flow")
    r.run("data_videos", ["data_pipelines.synthetic", "--out", os.path.join(d, "videos"), "--scenes", str(plan.videos), "--frames", str(plan.frames + 2), "--size", plan.size, "--seed", "5"])
    r.run("data_unlabeled", ["data_pipelines.make_dataset", "--inputs", os.path.join(d, "videos", "*", "video.mp4"), "--output_dir", os.path.join(d, "unlabeled"), "--frames", str(plan.frames), "--offsets", "1,2"])
    _say(f"data: a held-back benchmark of {plan.bench} sequences and a video to reconstruct")
    r.run("data_benchmark", ["flow3r_jax.eval.synthetic", "--out", paths["benchmark"], "--sequences", str(plan.bench), "--frames", str(plan.frames), "--size", plan.size, "--seed", "1000"])
    r.run("data_video", ["data_pipelines.synthetic", "--out", os.path.join(d, "recon_video"), "--scenes", "1", "--frames", str(plan.recon_frames), "--size", plan.size, "--seed", "2000", "--preset", "orbit", "--offsets", "1", "--flow-px", "2,6"])
    return {}


def stage_train(r: Runner, plan: Plan, paths: dict, stage: int) -> dict:
    d = paths["data"]
    heldout = os.path.join(d, "heldout")
    if stage == 1:
        _say(f"stage 1: flow head only, unlabeled clips, {plan.steps1} steps of tiny on {plan.devices} fake CPU devices ({plan.mesh} data x fsdp)")
        flags = _train_flags(plan, paths["stage1"], 1, os.path.join(d, "unlabeled"), heldout, plan.steps1, ["--config.checkpoint.save_initial=True"])
    else:
        _say(f"stage 2: all but the encoder, labeled:2 + unlabeled:1, {plan.steps2} steps from stage 1")
        sources = f"{os.path.join(d, 'labeled')}:2,{os.path.join(d, 'unlabeled')}:1"
        flags = _train_flags(plan, paths["stage2"], 2, sources, heldout, plan.steps2, ["--config.init.kind=checkpoint", f"--config.init.path={paths['stage1']}"])
    r.run(f"train_stage{stage}", flags)
    return {}


def _eval_flags(plan: Plan, paths: dict, checkpoint: str, tag: str) -> list[str]:
    w = int(plan.size.split("x")[1]) // 14 * 14
    return ["launch.eval", f"--checkpoint={checkpoint}", f"--tag={tag}", "--benchmarks=synthetic", f"--data_root={paths['benchmark']}", f"--out={paths['eval']}", "--size=tiny", f"--load_width={w}", "--plots=2"]


def stage_eval(r: Runner, plan: Plan, paths: dict) -> dict:
    _say("eval: launch.eval of the initial model (step 0) and of the final checkpoint on the held-back benchmark")
    r.run("eval_step0", _eval_flags(plan, paths, os.path.join(paths["stage1"], "checkpoints", "0"), "step_0"))
    r.run("eval_final", _eval_flags(plan, paths, paths["stage2"], "final"))
    return {}


def _video(paths: dict) -> str:
    return os.path.join(paths["data"], "recon_video", "scene_0000", "video.mp4")


def stage_reconstruct(r: Runner, plan: Plan, paths: dict) -> dict:
    h, w = (int(v) for v in plan.size.split("x"))
    common = ["flow3r_jax.reconstruct", "--input", _video(paths), "--checkpoint", paths["stage2"], "--model-size", "tiny", "--ff-pixels", str(h * w), "--no-progress"]
    _say("reconstruct: feed-forward with the trained checkpoint")
    r.run("reconstruct_feedforward", [*common, "--out", os.path.join(paths["recon"], "feedforward")])
    _say(f"reconstruct: --refine ({plan.recon_steps} steps of per-scene optimisation from the model's depth)")
    r.run("reconstruct_refined", [*common, "--out", os.path.join(paths["recon"], "refined"), "--refine", "--steps", str(plan.recon_steps), "--pixels", str(h * w), "--sfm", "off"])
    return {}


def stage_report(r: Runner, plan: Plan, paths: dict) -> dict:
    from launch.quickstart_report import write_report

    _say("report: summary, loss curves, trajectory plots, point cloud, TensorBoard")
    return write_report(paths, _video(paths))


# --------------------------------------------------------------------------------------- main


def _paths(out: str) -> dict:
    return {
        "out": out, "data": os.path.join(out, "data"), "benchmark": os.path.join(out, "data", "benchmark"), "stage1": os.path.join(out, "runs", "stage1"),
        "stage2": os.path.join(out, "runs", "stage2"), "eval": os.path.join(out, "eval"), "recon": os.path.join(out, "reconstruct"), "report": os.path.join(out, "report"),
    }


def _check_out(out: str, plan: Plan, fresh: bool) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise QuickstartError(f"--out {out} is a file, not a directory")
    record = os.path.join(out, "quickstart.json")
    if fresh and os.path.isdir(out):
        if os.listdir(out) and not os.path.exists(record):
            raise QuickstartError(f"--fresh: {out} is not a quickstart directory (no quickstart.json); not deleting it")
        shutil.rmtree(out)
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.exists(record):
            raise QuickstartError(f"--out {out} is a non-empty directory that the quickstart did not make; choose another")
        with open(record) as f:
            had = json.load(f)["plan"]
        if had != dataclasses.asdict(plan):
            diff = sorted(k for k in had if had.get(k) != dataclasses.asdict(plan).get(k))
            raise QuickstartError(f"{out} was made with other settings ({', '.join(diff)} differ, e.g. --quick); use another --out or --fresh")
    os.makedirs(out, exist_ok=True)
    try:
        with open(record + ".tmp", "w") as f:
            json.dump({"plan": dataclasses.asdict(plan)}, f, indent=1)
        os.replace(record + ".tmp", record)
    except OSError as e:
        raise QuickstartError(f"--out {out} is not writable: {e}") from e


def run_quickstart(out: str, plan: Plan = FULL, fresh: bool = False, verbose: bool = False) -> dict:
    """Runs the stages not finished yet; returns {stage: its record} and the report's paths."""
    out = os.path.abspath(out)
    _check_out(out, plan, fresh)
    paths = _paths(out)
    r = Runner(out, verbose)
    done_dir = os.path.join(out, "stages")
    os.makedirs(done_dir, exist_ok=True)
    fns = {
        "data": lambda: stage_data(r, plan, paths), "stage1": lambda: stage_train(r, plan, paths, 1), "stage2": lambda: stage_train(r, plan, paths, 2),
        "eval": lambda: stage_eval(r, plan, paths), "reconstruct": lambda: stage_reconstruct(r, plan, paths), "report": lambda: stage_report(r, plan, paths),
    }
    records, t_all = {}, time.time()
    for i, name in enumerate(STAGES):
        marker = os.path.join(done_dir, name + ".json")
        if os.path.exists(marker) and name != "report":  # the report is cheap: always rewritten
            with open(marker) as f:
                records[name] = json.load(f)
            _say(f"[{i + 1}/{len(STAGES)}] {name}: reusing the finished stage ({records[name]['seconds']:.0f} s when it ran); --fresh to redo")
            continue
        _say(f"[{i + 1}/{len(STAGES)}] {name}")
        t = time.time()
        info = fns[name]() or {}
        records[name] = {"seconds": round(time.time() - t, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S"), **info}
        with open(marker + ".tmp", "w") as f:
            json.dump(records[name], f, indent=1)
        os.replace(marker + ".tmp", marker)
        _say(f"{name}: done in {records[name]['seconds']:.0f} s")
    _say(f"finished in {time.time() - t_all:.0f} s. Outputs:")
    for k, v in records["report"]["outputs"].items():
        print(f"  {k:16s} {v}")
    return records


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(module="launch.quickstart", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/quickstart", help="output directory (default outputs/quickstart)")
    p.add_argument("--quick", action="store_true", help="the reduced run of the test suite (smaller scenes, a few steps)")
    p.add_argument("--fresh", action="store_true", help="delete OUT (a quickstart directory) and start over")
    p.add_argument("--verbose", action="store_true", help="also print library log lines (they are always in OUT/logs/)")
    a = p.parse_args(argv)

    def on_term(signum, frame):  # SIGTERM (a batch system, `kill`): stop as on Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        run_quickstart(a.out, QUICK if a.quick else FULL, a.fresh, a.verbose)
    except QuickstartError as e:
        print(f"quickstart: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nquickstart: interrupted; rerun the same command to resume (finished stages in {os.path.join(a.out, 'stages')} are reused)", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
