"""The Grain input pipeline: determinism, exact restore, mixtures, process sharding, targets, errors;
frame-count buckets: every batch has one bucket's shape, the bucket of a batch is the same on every
process, batches take consecutive records of the mixture stream (none skipped, none repeated), and
a restored iterator continues exactly."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import grain
import numpy as np
import pytest

from flow3r_jax.data.pipeline import Bucket, BucketBatches, InputConfig, build_dataset, to_global_batch
from flow3r_jax.data.sample import SampleConfig, make_sample
from flow3r_jax.data.sampling import SamplingError
from flow3r_jax.data.sources import DatasetError, open_source
from flow3r_jax.data.targets import derive_flows, prepare_batch

SAMPLE = SampleConfig(frames=4, pairs=4, height=56, width=84)


def _cfg(datasets, **kw):
    return InputConfig(sources=((datasets["labeled"], 1.0), (datasets["unlabeled"], 1.0)), batch_size=2, sample=SAMPLE, **kw)


def _take(ds, n):
    it = iter(ds)
    return [next(it) for _ in range(n)]


def _same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def test_deterministic_by_seed(datasets):
    a = _take(build_dataset(_cfg(datasets, seed=3), 0, 1), 3)
    b = _take(build_dataset(_cfg(datasets, seed=3), 0, 1), 3)
    c = _take(build_dataset(_cfg(datasets, seed=4), 0, 1), 3)
    assert all(_same(x, y) for x, y in zip(a, b))
    assert not all(_same(x, y) for x, y in zip(a, c))


def test_restore_and_continue_equals_uninterrupted(datasets):
    ds = build_dataset(_cfg(datasets, seed=1), 0, 1)
    straight = _take(ds, 6)
    it = iter(ds)
    for _ in range(3):
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # must survive a JSON round trip (checkpoint)
    it2 = iter(build_dataset(_cfg(datasets, seed=1), 0, 1))
    it2.set_state(state)
    resumed = [next(it2) for _ in range(3)]
    assert all(_same(x, y) for x, y in zip(straight[3:], resumed))


def test_mixture_ratio(datasets):
    cfg = InputConfig(sources=((datasets["labeled"], 3.0), (datasets["unlabeled"], 1.0)), batch_size=4, sample=SampleConfig(frames=2, pairs=1, height=28, width=28, train=False))
    sources = np.concatenate([b["source"] for b in _take(build_dataset(cfg, 0, 1), 25)])
    frac = float(np.mean(sources == 0))
    # Binomial(100, 0.75) has sd 0.043; Grain's mixing is exact in expectation.
    assert abs(frac - 0.75) < 0.13, frac
    assert np.all(np.concatenate([b["labeled"] for b in _take(build_dataset(cfg, 0, 1), 5)]) == (np.concatenate([b["source"] for b in _take(build_dataset(cfg, 0, 1), 5)]) == 0))


def test_processes_read_disjoint_records(datasets):
    src = open_source(datasets["labeled"])
    seen = []
    for p in range(2):
        cfg = InputConfig(sources=((datasets["labeled"], 1.0),), batch_size=1, sample=SampleConfig(frames=2, pairs=0, height=28, width=28, train=False), shuffle=False)
        ds = build_dataset(cfg, p, 2)
        # The raw records this process sees in one epoch.
        seen.append({bytes(src[i]) for i in range(p, len(src), 2)})
        assert len(_take(ds, 2)) == 2
    assert not (seen[0] & seen[1]) and len(seen[0] | seen[1]) == len(src)


def test_derived_flow_matches_stored_exact_flow(datasets):
    """A labeled clip's stored exact flow vs the flow derived on device from depth and poses."""
    src = open_source(datasets["labeled"])
    sample = make_sample(src[0], SampleConfig(frames=4, pairs=6, height=84, width=112, train=False, frame_mode="window", max_stride=1), np.random.default_rng(0))
    assert sample["flow_stored"][sample["pair_valid"]].all()
    batch = {k: jnp.asarray(v)[None] for k, v in sample.items()}
    derived = dict(batch, flow_stored=jnp.zeros_like(batch["flow_stored"]))
    flow_d, covis_d = derive_flows(derived)
    m = np.asarray(covis_d[0] & batch["covisible"][0])
    err = np.linalg.norm(np.asarray(flow_d[0]) - sample["flow"], axis=-1)[m]
    assert m.mean() > 0.5 and np.median(err) < 0.2, (m.mean(), np.median(err))
    out = prepare_batch(batch)
    assert out["images"].dtype == jnp.float32 and float(out["images"].max()) <= 1.0
    from flow3r_jax.geometry import ndc_coords_to_flow

    np.testing.assert_allclose(ndc_coords_to_flow(out["flow_target"])[0], sample["flow"], atol=1e-3)


def test_global_batch_on_one_process(datasets):
    from flow3r_jax.train.mesh import make_mesh

    mesh = make_mesh((-1, 1, 1))
    host = _take(build_dataset(_cfg(datasets), 0, 1), 1)[0]
    batch = to_global_batch(host, mesh)
    assert batch["images"].shape == host["images"].shape
    np.testing.assert_array_equal(np.asarray(batch["flow"]), host["flow"])


def test_clear_errors(datasets, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(datasets["labeled"], broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    os.remove(broken / manifest["shards"][0]["file"])
    with pytest.raises(DatasetError, match="missing shard file"):
        open_source(str(broken))
    stale = tmp_path / "stale"
    shutil.copytree(datasets["labeled"], stale)
    manifest["schema_versions"]["record_schema"]["labeled"] = 99
    (stale / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="schema version mismatch.*record_schema 99 vs 1"):
        open_source(str(stale))
    # Flow codec: format 1 datasets stay readable (each blob names its version), unknown ones are refused.
    manifest["schema_versions"]["record_schema"]["labeled"] = 1
    for codec, ok in ((1, True), (2, True), (3, False)):
        manifest["schema_versions"]["flow_codec"] = codec
        (stale / "manifest.json").write_text(json.dumps(manifest))
        if ok:
            assert len(open_source(str(stale))) > 0
        else:
            with pytest.raises(DatasetError, match="schema version mismatch.*flow_codec 3 vs 1 or 2"):
                open_source(str(stale))
    with pytest.raises(DatasetError, match="no manifest.json"):
        open_source(str(tmp_path))
    too_many = SampleConfig(frames=9, pairs=2, height=28, width=28)
    with pytest.raises(SamplingError, match="fewer than the 9"):
        make_sample(open_source(datasets["labeled"])[0], too_many, np.random.default_rng(0))
    with pytest.raises(ValueError, match="multiples of 14"):
        SampleConfig(height=50, width=56)


def test_epoch_shuffle_permutes_every_epoch_and_is_a_pure_function_of_the_index():
    import pickle

    import grain

    from flow3r_jax.data.pipeline import EpochShuffle

    n = 7
    ds = EpochShuffle(grain.MapDataset.range(n).repeat(), seed=3)
    assert len(ds) > 10 * n or len(ds) >= 2**62  # infinite parent: index // n picks the epoch
    base = EpochShuffle(grain.MapDataset.range(n), seed=3)
    epochs = [[base[e * n + i] % n for i in range(n)] for e in range(4)]
    for order in epochs:  # each epoch visits every record exactly once
        assert sorted(order) == list(range(n))
    assert len({tuple(o) for o in epochs}) > 1  # and the order changes between epochs
    # Pure function of (seed, index): out of order, after the cache is dropped, in a pickled copy.
    again = pickle.loads(pickle.dumps(base))
    assert [again[i] for i in reversed(range(4 * n))] == [base[i] for i in reversed(range(4 * n))]
    assert [EpochShuffle(grain.MapDataset.range(n), seed=4)[i] for i in range(n)] != [base[i] for i in range(n)]


def test_keep_freed_memory_stops_page_faults_on_reused_blocks():
    """In a fresh process: with the setting, allocating and freeing a ~25 MB sample's arrays again
    takes (almost) no page faults (the memory is reused, not returned to the kernel)."""
    import subprocess
    import sys

    code = """
import resource, sys
import numpy as np
from flow3r_jax.data.memory import keep_freed_memory
if sys.argv[1] == "on":
    assert keep_freed_memory()
def sample():
    arrays = [np.ones((8, 378, 518, 2), np.float32), np.ones((8, 378, 518, 3), np.uint8), np.ones((8, 378, 518), np.float32)]
    return sum(int(a.size) for a in arrays)
sample()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    sample()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 5)
"""
    faults = {}
    for mode in ("on", "off"):
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True)
        faults[mode] = float(out.stdout.split()[-1])
    pages = (8 * 378 * 518 * (8 + 3 + 4)) / 4096  # ~5,700 pages of 4 KiB per sample
    assert faults["on"] < 0.01 * pages, faults
    # Without it (this machine: ~230 faults per sample with transparent huge pages, ~5,700
    # without; each one maps and zero-fills fresh memory) it can only be worse.
    assert faults["on"] <= faults["off"], faults


# ---- frame-count buckets ------------------------------------------------------------------

BSAMPLE = SampleConfig(frames=8, pairs=4, height=28, width=42, train=False)
BUCKETS = (Bucket(frames=2, pairs=2, batch_size=3, weight=1.0), Bucket(frames=4, pairs=4, batch_size=1, weight=2.0))


def _bcfg(datasets, seed=0):
    return InputConfig(sources=((datasets["labeled"], 1.0), (datasets["unlabeled"], 1.0)), batch_size=1, sample=BSAMPLE, seed=seed, buckets=BUCKETS)


def test_batch_start_is_the_running_sum_of_the_drawn_bucket_sizes():
    parent = grain.MapDataset.range(10**9)
    bb = BucketBatches(parent, BSAMPLE, BUCKETS, seed=7, stream=0)
    n = 3 * BucketBatches.BLOCK + 17  # crosses block boundaries
    drawn = np.array([bb.bucket_of(i) for i in range(n)])
    sizes = np.array([b.batch_size for b in BUCKETS])[drawn]
    reference = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    # random access out of order, as Grain's reader threads and a restore do
    order = np.random.default_rng(0).permutation(n)
    fresh = BucketBatches(parent, BSAMPLE, BUCKETS, seed=7, stream=0)
    assert all(fresh.start(int(i)) == reference[i] for i in order)
    # the draw follows the weights (1:2) and depends on the seed only, not on the process stream
    assert abs(np.mean(drawn == 1) - 2 / 3) < 0.03
    other = BucketBatches(parent, BSAMPLE, BUCKETS, seed=7, stream=5)
    assert all(other.bucket_of(i) == drawn[i] for i in range(0, n, 37))
    assert any(BucketBatches(parent, BSAMPLE, BUCKETS, seed=8, stream=0).bucket_of(i) != drawn[i] for i in range(50))


def test_batches_have_their_buckets_shapes_and_restore_exactly(datasets):
    ds = build_dataset(_bcfg(datasets, seed=2), 0, 1)
    it = iter(ds)
    straight = [next(it) for _ in range(8)]
    shapes = {(b["images"].shape[0], b["images"].shape[1], b["flow"].shape[1]) for b in straight}
    assert shapes <= {(3, 2, 2), (1, 4, 4)} and len(shapes) == 2, shapes
    for b in straight:
        assert b["images"].shape[2:] == (28, 42, 3) and b["pairs"].shape[2:] == (2,)
        assert int(b["pairs"].max()) < b["images"].shape[1]  # pairs index this sample's frames

    it = iter(build_dataset(_bcfg(datasets, seed=2), 0, 1))
    for _ in range(5):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    it2 = iter(build_dataset(_bcfg(datasets, seed=2), 0, 1))
    it2.set_state(state)
    for want in straight[5:]:
        got = next(it2)
        assert all(np.array_equal(got[k], want[k]) for k in want)


def test_every_process_draws_the_same_bucket_for_the_same_batch(datasets):
    a = iter(build_dataset(_bcfg(datasets), 0, 2))
    b = iter(build_dataset(_bcfg(datasets), 1, 2))
    for _ in range(6):
        x, y = next(a), next(b)
        assert x["images"].shape == y["images"].shape


def test_bad_buckets_are_refused():
    with pytest.raises(ValueError, match="frame counts must differ"):
        InputConfig(sources=(("x", 1.0),), sample=BSAMPLE, buckets=(Bucket(2, 2, 1), Bucket(2, 1, 2)))
    with pytest.raises(ValueError, match="batch_size >= 1"):
        InputConfig(sources=(("x", 1.0),), sample=BSAMPLE, buckets=(Bucket(2, 2, 0),))


def test_bucket_batch_starts_are_right_under_concurrent_first_access():
    """Grain's reader threads ask for batches far apart at once: the block table must not grow
    twice for the same block (every start equals the single-threaded running sum)."""
    import concurrent.futures
    import pickle

    parent = grain.MapDataset.range(10**9)
    ref = BucketBatches(parent, BSAMPLE, BUCKETS, seed=3, stream=0)
    want = {i: ref.start(i) for i in range(0, 40 * BucketBatches.BLOCK, 997)}
    for _ in range(3):
        bb = pickle.loads(pickle.dumps(BucketBatches(parent, BSAMPLE, BUCKETS, seed=3, stream=0)))  # as a Grain worker gets it
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = dict(zip(want, pool.map(bb.start, want)))
        assert got == want
