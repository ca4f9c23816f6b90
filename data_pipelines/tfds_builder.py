"""TFDS metadata next to the shards, so TFDS reads a dataset directory without TensorFlow.

`write_tfds_metadata` writes `dataset_info.json` and `features.json` (through
`tfds.folder_dataset.write_metadata`, no TensorFlow involved) describing one split, "train", made
of the ArrayRecord shards with their lengths. Then, without TensorFlow installed:

    import tensorflow_datasets as tfds
    from flow3r_jax.data.records import decode_record

    builder = tfds.builder_from_directory(DIR)          # DIR = the dataset directory
    source = builder.as_data_source("train", deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    clip = decode_record(source[0])

    # or, with DIR laid out as DATA_DIR/NAME/VERSION (e.g. data/flow3r_videos/1.0.0):
    source = tfds.data_source(NAME, split="train", data_dir=DATA_DIR,
                              deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)

Records are opaque bytes (our record format, not `tf.train.Example`), declared as one scalar
bytes feature "record"; read them with `RAW_BYTES` (the default deserialization would try to
parse a `tf.train.Example`). `data_source(DIR)` below does exactly this and decodes.
"""

from __future__ import annotations

import os

import numpy as np

from data_pipelines.shards import SPLIT

__all__ = ["FILENAME_TEMPLATE", "write_tfds_metadata", "data_source", "DecodedSource"]

FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"


def write_tfds_metadata(output_dir: str, name: str, shard_lengths: list[int], num_bytes: int, description: str = "", version: str = "1.0.0") -> None:
    """Writes dataset_info.json and features.json for the shards `{name}-train.array_record-*`."""
    import tensorflow_datasets as tfds

    split = tfds.core.SplitInfo(name=SPLIT, shard_lengths=[int(n) for n in shard_lengths], num_bytes=int(num_bytes), filename_template=None)
    features = tfds.features.FeaturesDict({"record": tfds.features.Tensor(shape=(), dtype=np.object_, doc="an encoded flow3r_jax.data.records clip")})
    tfds.folder_dataset.write_metadata(
        data_dir=os.fspath(output_dir),
        features=features,
        split_infos=[split],
        version=version,
        filename_template=FILENAME_TEMPLATE,
        check_data=False,  # the shards were counted when written
        description=description or f"{name}: flow3r_jax clip records (decode with flow3r_jax.data.records.decode_record)",
    )


class DecodedSource:
    """A random-access source (len, [i]) applying `decode_record` to a TFDS raw-bytes source."""

    def __init__(self, raw):
        self.raw = raw

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index):
        from flow3r_jax.data.records import decode_record

        return decode_record(self.raw[index])


def data_source(output_dir: str, split: str = SPLIT, decode: bool = True):
    """The dataset directory through TFDS (`builder_from_directory(...).as_data_source` with raw
    bytes), each item decoded into its record dataclass unless `decode=False`."""
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(os.fspath(output_dir))
    raw = builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    return DecodedSource(raw) if decode else raw
