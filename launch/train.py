"""Train Flow3r: `python -m launch.train --config configs/flow3r.py:size=tiny --workdir DIR
[--config.train.lr=1e-4 ...]`.

Parses flags and calls `flow3r_jax.train.loop.train(config, workdir)`. Running it again on the
same workdir resumes from the latest checkpoint. Multi-process: set the coordinator through the
environment (`FLOW3R_COORDINATOR`, `FLOW3R_NUM_PROCESSES`, `FLOW3R_PROCESS_ID`; see
`launch/local_multiprocess.py`) or run under SLURM / on a TPU pod (detected). `--cpu_devices N`
gives this process N fake CPU devices (tests, debugging).
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from flow3r_jax.cli import absl_flags_parser

_CONFIG = config_flags.DEFINE_config_file("config", None, "the experiment config: configs/flow3r.py[:OPTIONS] (e.g. :size=tiny); --config.x=y overrides a field", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "the run's directory (checkpoints, metrics, config)")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", None, "fake CPU devices for this process (tests)")


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or not _WORKDIR.value:
        raise app.UsageError("--config and --workdir are required")
    from flow3r_jax.train import distributed

    distributed.initialize(cpu_devices=_CPU_DEVICES.value)
    from flow3r_jax.train.loop import train

    result = train(_CONFIG.value, _WORKDIR.value)
    return 0 if result.get("final_step", 0) >= 0 else 1


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    sys.exit(app.run(main, flags_parser=absl_flags_parser))
