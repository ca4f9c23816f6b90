"""Evaluate checkpoints on the field's benchmarks with π³'s protocols (README "Evaluation").

    python -m launch.eval --checkpoint PATH --benchmarks sintel,tum --data_root DIR --out DIR [--size large]
    python -m launch.eval --checkpoint WORKDIR --follow --benchmarks ... --data_root DIR --out DIR
    python -m launch.eval --predictions DIR --tag colmap --benchmarks ... --data_root DIR --out DIR

`--checkpoint`: an official `flow3r.bin` / `.safetensors`, a `save_pretrained` directory, or a
training run (workdir or step directory). `--follow`: `--checkpoint` is a training workdir whose
checkpoints are evaluated as they appear (each once; restartable). `--predictions`: score
outputs already on disk (`DIR/<benchmark>/<sequence>/cameras.json`, `depth.npz`, as
`reconstruct` writes them) with the same code. Results go to `--out` (JSON per checkpoint and
benchmark, `results.md`, plots). `--cpu_devices N` gives N fake CPU devices (tests).

`--config configs/eval.py[:OPTIONS]` (optional; `--config.x=y` overrides as in launch.train):
the config's fields, named as the flags below, are their defaults (a benchmark suite, the
protocol options); a flag given on the command line wins.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from flow3r_jax.cli import absl_flags_parser

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "checkpoint file, model directory, or training workdir / step directory")
_PREDICTIONS = flags.DEFINE_string("predictions", None, "score predictions on disk instead of running a model")
_BENCHMARKS = flags.DEFINE_list("benchmarks", None, "comma-separated benchmark names (see flow3r_jax.eval.benchmarks.BENCHMARKS)")
_DATA_ROOT = flags.DEFINE_string("data_root", None, "the benchmark's directory, or a directory with one folder per benchmark named as in --benchmarks")
_OUT = flags.DEFINE_string("out", None, "results directory")
_FOLLOW = flags.DEFINE_bool("follow", False, "watch the training workdir --checkpoint and evaluate each new checkpoint once")
_POLL = flags.DEFINE_float("poll_seconds", 60.0, "--follow: seconds between looks at the workdir")
_IDLE = flags.DEFINE_float("idle_timeout", None, "--follow: stop after this many seconds without a new checkpoint (default: wait for the run's last step)")
_SIZE = flags.DEFINE_string("size", "large", "model size of a state-dict checkpoint (.bin / .safetensors)")
_TAG = flags.DEFINE_string("tag", None, "name of this checkpoint's results (default: from the checkpoint path)")
_TASKS = flags.DEFINE_list("tasks", None, "only these tasks (video_depth, mono_depth, pose_trajectory, pose_angular, pointmap, flow)")
_DEPTH_ALIGN = flags.DEFINE_enum("depth_align", "scale_shift", ["scale_shift", "l1_scale", "median"], "video depth alignment (π³: scale & shift; l1_scale: one L1-fitted scale; median: median scale)")
_PLOTS = flags.DEFINE_integer("plots", 2, "sequences plotted per benchmark and task")
_MAX_SEQ = flags.DEFINE_integer("max_sequences", None, "only the first N sequences of each benchmark (smoke runs)")
_LOAD_WIDTH = flags.DEFINE_integer("load_width", None, "input width instead of π³'s 512 / 518 (quick looks, tests; not the protocol)")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", None, "fake CPU devices for this process (tests)")
_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/eval.py[:OPTIONS]: defaults of the flags above (a flag given on the command line wins)", lock_config=True)


def _apply_config() -> None:
    """Sets every flag not given on the command line from the config field of the same name
    ("" and None fields leave the flag's own default)."""
    config = _CONFIG.value
    if config is None:
        return
    for name, value in config.items():
        if name == "options":
            continue
        if name not in flags.FLAGS or name == "config":
            raise app.UsageError(f"--config: field {name!r} is not a launch.eval flag")
        flag = flags.FLAGS[name]
        if flag.present or value is None or value == "":
            continue
        flag.value = flag.parser.parse(value)


def _tag_of(path: str) -> str:
    p = os.path.abspath(path.rstrip("/"))
    base = os.path.basename(p)
    if base.isdigit() and os.path.isdir(os.path.join(p, "state")):
        return f"step_{int(base):08d}"
    if os.path.isdir(os.path.join(p, "checkpoints")):
        from flow3r_jax.train.checkpoint import find_step_dir

        return f"{base}_step_{int(os.path.basename(find_step_dir(p))):08d}"
    return os.path.splitext(base)[0]


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _apply_config()
    if bool(_CHECKPOINT.value) == bool(_PREDICTIONS.value):
        raise app.UsageError("give exactly one of --checkpoint and --predictions")
    if not _BENCHMARKS.value or not _DATA_ROOT.value or not _OUT.value:
        raise app.UsageError("--benchmarks, --data_root and --out are required")
    if _FOLLOW.value and not _CHECKPOINT.value:
        raise app.UsageError("--follow needs --checkpoint WORKDIR")
    if _PREDICTIONS.value and not _TAG.value:
        raise app.UsageError("--predictions needs --tag (the method's name in the results)")
    if _CPU_DEVICES.value is not None:
        import jax

        jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
    logging.getLogger().setLevel(logging.INFO)
    from flow3r_jax.eval.benchmarks import BenchmarkError
    from flow3r_jax.eval.runner import EvalOptions, check_benchmarks, evaluate, evaluate_predictions

    opts = EvalOptions(depth_align=_DEPTH_ALIGN.value, plots=_PLOTS.value, max_sequences=_MAX_SEQ.value, load_width=_LOAD_WIDTH.value, tasks=tuple(_TASKS.value) if _TASKS.value else None)
    try:
        if _PREDICTIONS.value:
            evaluate_predictions(_PREDICTIONS.value, _BENCHMARKS.value, _DATA_ROOT.value, _OUT.value, _TAG.value, opts)
        elif _FOLLOW.value:
            from flow3r_jax.eval.follow import follow

            done = follow(_CHECKPOINT.value, _BENCHMARKS.value, _DATA_ROOT.value, _OUT.value, opts, poll_seconds=_POLL.value, idle_timeout=_IDLE.value)
            print(f"evaluated steps {done}")
        else:
            from flow3r_jax.models.pretrained import load_pretrained

            path = _CHECKPOINT.value
            work = check_benchmarks(_BENCHMARKS.value, _DATA_ROOT.value, opts)  # bad data fails before loading
            try:
                model = load_pretrained(path, size=_SIZE.value)
            except ValueError as e:
                print(f"launch.eval: error: {path}: checkpoint does not match model size {_SIZE.value!r} ({e})", file=sys.stderr)
                return 2
            evaluate(model, _BENCHMARKS.value, _DATA_ROOT.value, _OUT.value, _TAG.value or _tag_of(path), opts, checkpoint=os.path.abspath(path), work=work)
    except (BenchmarkError, FileNotFoundError) as e:
        print(f"launch.eval: error: {e}", file=sys.stderr)
        return 2
    with open(os.path.join(_OUT.value, "results.md")) as f:
        print(f.read())
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main, flags_parser=absl_flags_parser))
