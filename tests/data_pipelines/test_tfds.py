"""TFDS reads the dataset directories without TensorFlow installed."""

import functools
import json
import shutil
import sys

import tensorflow_datasets as tfds

from data_pipelines.dataset_writer import DatasetWriter
from data_pipelines.inputs import discover_inputs
from data_pipelines.make_dataset import _video_one, run
from data_pipelines.process import PipelineConfig
from data_pipelines.shards import open_dataset
from data_pipelines.tfds_builder import data_source
from flow3r_jax.data.records import UnlabeledClip, decode_record


def test_tfds_reads_the_shards_without_tensorflow(pipe_videos, tmp_path, no_tensorflow):
    cfg = PipelineConfig(frames=4, offsets=(1,))
    out = tmp_path / "flow3r_videos" / "1.0.0"  # DATA_DIR / NAME / VERSION: tfds.data_source finds it by name
    writer = DatasetWriter(str(out), "flow3r_videos", "unlabeled", cfg.to_dict(), num_shards=3)
    manifest = run(writer, discover_inputs(str(pipe_videos[0])), functools.partial(_video_one, cfg=cfg), progress=False)
    assert manifest["counts"]["written"] == 4
    ours = list(open_dataset(str(out), decode=False))

    builder = tfds.builder_from_directory(str(out))
    assert builder.info.splits["train"].num_examples == 4
    assert builder.info.splits["train"].shard_lengths == [s["records"] for s in manifest["shards"]]
    raw = builder.as_data_source("train", deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    assert len(raw) == 4 and [bytes(raw[i]) for i in range(4)] == ours

    by_name = tfds.data_source("flow3r_videos", split="train", data_dir=str(tmp_path), deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    assert [bytes(by_name[i]) for i in range(len(by_name))] == ours

    decoded = data_source(str(out))
    clips = [decoded[i] for i in range(len(decoded))]
    assert all(isinstance(c, UnlabeledClip) for c in clips)
    assert sorted(c.video_id for c in clips) == [f"scene_{n:04d}/video.mp4" for n in range(4)]
    assert "tensorflow" not in sys.modules


def test_metadata_is_deterministic(pipe_videos, tmp_path):
    cfg = PipelineConfig(frames=4, offsets=(1,))
    inputs = discover_inputs(str(pipe_videos[0]))[:2]
    for d in ("a", "b"):
        writer = DatasetWriter(str(tmp_path / d), "clips", "unlabeled", cfg.to_dict(), num_shards=2)
        run(writer, inputs, functools.partial(_video_one, cfg=cfg), progress=False)
    for name in ("dataset_info.json", "features.json", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    info = json.loads((tmp_path / "a" / "dataset_info.json").read_text())
    assert info["fileFormat"] == "array_record" and info["name"] == "clips"
    # The directory is self-contained: moved elsewhere it still reads.
    shutil.move(str(tmp_path / "a"), str(tmp_path / "moved"))
    assert decode_record(data_source(str(tmp_path / "moved"), decode=False)[0]).video_id.startswith("scene_")
