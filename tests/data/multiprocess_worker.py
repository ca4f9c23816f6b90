"""One process of tests/data/test_multiprocess.py: joins a 2-process CPU cluster (gloo, 2 devices
per process), reads its share of a dataset and assembles the global batch."""

import sys

import numpy as np

pid, port, dataset, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

from flow3r_jax.train.distributed import initialize  # noqa: E402

initialize(f"localhost:{port}", 2, pid, cpu_devices=2)

import jax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from flow3r_jax.data.pipeline import InputConfig, build_dataset, to_global_batch  # noqa: E402
from flow3r_jax.data.sample import SampleConfig  # noqa: E402
from flow3r_jax.train.mesh import make_mesh  # noqa: E402

cfg = InputConfig(sources=((dataset, 1.0),), batch_size=2, shuffle=False, sample=SampleConfig(frames=2, pairs=1, height=28, width=28, train=False))
host = next(iter(build_dataset(cfg)))
mesh = make_mesh((-1, 1, 1))
batch = to_global_batch(host, mesh)
gathered = multihost_utils.process_allgather(batch["images"], tiled=True)
shards = sorted((s.device.id, s.index[0].start) for s in batch["images"].addressable_shards)
np.savez(out, local=host["images"], gathered=gathered, global_shape=np.array(batch["images"].shape), process_count=jax.process_count(), device_count=jax.device_count(), shards=np.array(shards))
jax.distributed.shutdown()
