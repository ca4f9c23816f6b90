"""The resumable, idempotent dataset layout shared by the local runner and the Beam pipeline.

    DIR/{name}-train.array_record-00000-of-00008   shards (TFDS naming)
    DIR/manifest.json                               counts, bytes, teacher, failures, config
    DIR/dataset_info.json, DIR/features.json        TFDS metadata (`tfds_builder`)
    DIR/_work/plan.json                             what this directory is being built from
    DIR/_work/shard-00003.json                      sidecar: a committed shard's contents
    DIR/_work/staging/00003/<hash>.rec / .json      per-input results awaiting their shard

Design (why a crash never leaves duplicates or gaps, and a rerun ends with the same bytes):

1. **Fixed assignment.** An input's shard is sha256(id) mod `num_shards`; the id is the input's
   path relative to its root (`inputs.py`), so the same inputs always land in the same shards.
   `plan.json` pins name, config, shard count and a fingerprint of the sorted ids; a rerun with
   anything different is refused (use a new directory or `overwrite`) once anything was staged
   or written under the plan (a plan under which nothing was done is simply replaced).
2. **Per-input staging.** Each processed input is staged as `<hash>.rec` (the record) then
   `<hash>.json` (result + failure; written last, so it marks the input done), each atomically.
   A rerun skips staged inputs: finished videos are never recomputed.
3. **Shard commit.** A shard is written only when all of its inputs are staged: records sorted
   by id into one ArrayRecord file (tmp + rename), then its sidecar JSON (tmp + rename) — the
   sidecar is the commit mark — then its staging files are removed. A shard file without a
   sidecar is ignored and rewritten; a committed shard is never rewritten.
4. **Finalize.** When every shard is committed the manifest is rebuilt from the sidecars alone
   (sorted, no timestamps: deterministic), checked (inputs = written + failed), and written
   last, with the TFDS metadata.
5. **A directory without a plan.** Dataset files (shards of any name, manifest, TFDS metadata)
   in a directory with no `_work/plan.json` (a finished dataset whose `_work/` was deleted) are
   never written over or resumed into (that would mix two datasets' shards under the old
   manifest): `prepare` raises `ExistingDatasetError` unless `overwrite`, which deletes the
   dataset files first (and only them: other files in the directory are kept).
6. **Retrying failures.** A failed input stays done (rerunning skips it) unless `prepare` is
   asked to `retry_failed`: a staged failure's JSON is removed, and a committed shard holding
   failures is reopened: the manifest is removed, the shard's good records are staged again
   from its file (not recomputed) and its sidecar removed, so the next commit rewrites the shard
   with the retried inputs, as if they had never failed.

Because every record is a deterministic function of (input, config) and every file appears
atomically, any interleaving of crashes and reruns ends with identical files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile

from etils import epath

from data_pipelines.shards import SHARD_OPTIONS, SPLIT, atomic_write_bytes, check_name, shard_filename, write_shard

__all__ = ["DatasetWriter", "PlanMismatchError", "ExistingDatasetError", "is_dataset_file", "IncompleteShardError", "stable_shard", "default_num_shards", "MANIFEST_VERSION"]

MANIFEST_VERSION = 1
WORK = "_work"


class PlanMismatchError(RuntimeError):
    """The output directory holds a partial run made from other inputs or settings."""


class ExistingDatasetError(PlanMismatchError):
    """The output directory holds dataset files but no plan: resuming into it would mix datasets."""


class IncompleteShardError(RuntimeError):
    """A shard was asked to commit before all of its inputs were staged."""


def stable_shard(key: str, num_shards: int) -> int:
    """The shard of an input id: sha256 of the id, first 8 bytes big-endian, mod num_shards."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % num_shards


def default_num_shards(num_inputs: int, inputs_per_shard: int = 64) -> int:
    return max(1, math.ceil(num_inputs / inputs_per_shard))


def _digest(key: str) -> str:
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:24]


def _write_json(path: epath.Path, obj) -> None:
    atomic_write_bytes(os.fspath(path), (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


METADATA_FILES = ("manifest.json", "dataset_info.json", "features.json")
_SHARD_FILE = re.compile(rf"^[a-z][a-z0-9_]*-{SPLIT}\.array_record-\d{{5}}-of-\d{{5}}(\.tmp-.*)?$")


def is_dataset_file(name: str) -> bool:
    """Whether a top-level file name of a dataset directory belongs to a dataset (of any name):
    the work directory, the manifest and TFDS metadata, shard files and their temporary files."""
    return name == WORK or name in METADATA_FILES or bool(_SHARD_FILE.match(name))


def _shard_records(path: epath.Path):
    """The records of a shard file, one at a time (a shard can be larger than memory)."""
    from array_record.python.array_record_module import ArrayRecordReader

    tmp = None
    local = os.fspath(path)
    if "://" in local:  # ArrayRecord reads local files: copy a remote shard first
        fd, tmp = tempfile.mkstemp(prefix="flow3r_shard_")
        with os.fdopen(fd, "wb") as f, path.open("rb") as src:
            shutil.copyfileobj(src, f)
        local = tmp
    reader = ArrayRecordReader(local, "readahead_buffer_size:0,max_parallelism:0")
    try:
        for i in range(int(reader.num_records())):
            yield reader.read([i])[0]
    finally:
        reader.close()
        if tmp is not None:
            os.unlink(tmp)


def _record_teacher(record: bytes):
    from flow3r_jax.data.records import decode_record

    rec = decode_record(record)
    name = getattr(rec, "teacher_name", None)
    return None if name is None else {"name": str(name), "version": str(rec.teacher_version)}


def _rmtree(path: epath.Path) -> None:
    if "://" in os.fspath(path):
        path.rmtree()
    else:
        shutil.rmtree(os.fspath(path), ignore_errors=True)


def _schema_versions() -> dict:
    from flow3r_jax.data import flow_codec, records

    return {
        "record_container": records.CONTAINER_VERSION,
        "record_schema": dict(records.SCHEMA_VERSION),
        "flow_codec": flow_codec.FORMAT_VERSION,
    }


class DatasetWriter:
    """Builds one dataset directory; picklable (only strings and dicts), so Beam workers hold it."""

    def __init__(self, output_dir: str, name: str, kind: str, config: dict, num_shards: int, shard_options: str = SHARD_OPTIONS):
        if kind not in ("unlabeled", "labeled"):
            raise ValueError(f"DatasetWriter: kind must be 'unlabeled' or 'labeled', got {kind!r}")
        if num_shards < 1:
            raise ValueError(f"DatasetWriter: num_shards must be >= 1, got {num_shards}")
        self.output_dir = os.fspath(output_dir)
        self.name = check_name(name)
        self.kind = kind
        self.config = json.loads(json.dumps(config, sort_keys=True))
        self.num_shards = int(num_shards)
        self.shard_options = shard_options

    # -- paths -------------------------------------------------------------------------------
    @property
    def root(self) -> epath.Path:
        return epath.Path(self.output_dir)

    @property
    def work(self) -> epath.Path:
        return self.root / WORK

    def shard_file(self, shard: int) -> str:
        return shard_filename(self.name, shard, self.num_shards)

    def _sidecar(self, shard: int) -> epath.Path:
        return self.work / f"shard-{shard:05d}.json"

    def _staged(self, shard: int, key: str, ext: str) -> epath.Path:
        return self.work / "staging" / f"{shard:05d}" / f"{_digest(key)}.{ext}"

    # -- plan --------------------------------------------------------------------------------
    def shard_of(self, key: str) -> int:
        return stable_shard(key, self.num_shards)

    def assign(self, inputs) -> dict[int, list]:
        """{shard: [Input, ...] sorted by id} for every shard (empty lists included)."""
        out: dict[int, list] = {s: [] for s in range(self.num_shards)}
        for inp in inputs:
            out[self.shard_of(inp.key)].append(inp)
        return {s: sorted(v, key=lambda i: i.key) for s, v in out.items()}

    def _plan(self, inputs) -> dict:
        keys = sorted(i.key for i in inputs)
        return {
            "manifest_version": MANIFEST_VERSION,
            "name": self.name,
            "kind": self.kind,
            "num_shards": self.num_shards,
            "shard_options": self.shard_options,
            "config": self.config,
            "num_inputs": len(keys),
            "inputs_fingerprint": hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest(),
            "schema_versions": _schema_versions(),  # a resume never mixes record formats
        }

    def prepare(self, inputs, overwrite: bool = False, retry_failed: bool = False) -> dict[int, list]:
        """Checks (or starts) the plan of the directory and returns the shard assignment.

        Raises PlanMismatchError when the directory's plan differs, ExistingDatasetError when it
        holds dataset files but no plan (unless `overwrite`, which deletes them first).
        `retry_failed` makes the inputs that failed in an earlier run unprocessed again."""
        keys = [i.key for i in inputs]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})[:5]
            raise ValueError(f"DatasetWriter: duplicate input ids {dup}")
        plan = self._plan(inputs)
        plan_path = self.work / "plan.json"
        if overwrite and self.root.exists():
            self._wipe()
        if plan_path.exists():
            old = json.loads(plan_path.read_text())
            if old != plan and not self._has_work():  # nothing was done under the old plan: nothing to mix
                _write_json(plan_path, plan)
            elif old != plan:
                diff = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
                raise PlanMismatchError(
                    f"{self.output_dir} holds a run with different {diff}; resume with the same inputs and "
                    "options, or choose a new output directory (or overwrite)"
                )
        else:
            found = self._dataset_files()
            if found:
                raise ExistingDatasetError(
                    f"{self.output_dir} already holds a dataset ({self._describe(found)}) but no {WORK}/plan.json "
                    f"saying how it was made (was {WORK}/ deleted after it finished?): writing into it would mix "
                    "two datasets' shards under the old manifest. Pass --overwrite to delete that dataset's files "
                    "and write a new one, or choose another output directory"
                )
            self.work.mkdir(parents=True, exist_ok=True)
            _write_json(plan_path, plan)
        for leftover in self.root.glob("*.tmp-*"):  # temp files of a killed run (never renamed)
            leftover.unlink()
        assignment = self.assign(inputs)
        if retry_failed:
            self.reopen_failures(assignment)
        return assignment

    def _has_work(self) -> bool:
        """Whether anything was produced under the directory's plan (a staged result, a shard)."""
        staging = self.work / "staging"
        return any(self.work.glob("shard-*.json")) or (staging.exists() and any(staging.glob("*/*.json"))) or any(
            _SHARD_FILE.match(f.name) and ".tmp-" not in f.name for f in self.root.iterdir())

    def _dataset_files(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(f.name for f in self.root.iterdir()
                      if is_dataset_file(f.name) and ".tmp-" not in f.name and (f.name != WORK or any(f.iterdir())))

    def _describe(self, found: list[str]) -> str:
        parts = []
        manifest = self.root / "manifest.json"
        if "manifest.json" in found:
            try:
                m = json.loads(manifest.read_text())
                c = m["counts"]
                parts.append(f"manifest.json of {m['name']!r}: {c['written']} written, {c['failed']} failed of {c['inputs']} inputs")
            except (ValueError, KeyError, TypeError):
                parts.append("an unreadable manifest.json")
        shards = [f for f in found if _SHARD_FILE.match(f)]
        if shards:
            parts.append(f"{len(shards)} shard file(s): {', '.join(shards[:3])}{', ...' if len(shards) > 3 else ''}")
        parts += [f for f in found if f in METADATA_FILES[1:]] + ([f"{WORK}/ without plan.json"] if WORK in found else [])
        return "; ".join(parts)

    def _wipe(self) -> None:
        """Deletes the dataset files of the directory (of whatever dataset name), nothing else."""
        for f in list(self.root.iterdir()):
            if is_dataset_file(f.name):
                if f.is_dir():
                    _rmtree(f)
                else:
                    f.unlink()

    def previous_failures(self, assignment: dict[int, list]) -> int:
        """How many inputs are done with a failure (committed in a shard, or staged)."""
        n = 0
        for s in range(self.num_shards):
            if self.is_committed(s):
                n += len(json.loads(self._sidecar(s).read_text())["failures"])
            else:
                for inp in assignment.get(s, []):
                    path = self._staged(s, inp.key, "json")
                    if path.exists() and not json.loads(path.read_text())["ok"]:
                        n += 1
        return n

    def reopen_failures(self, assignment: dict[int, list]) -> int:
        """Makes every input that failed in an earlier run unprocessed again; returns how many.

        A staged failure loses its JSON. A committed shard holding failures is reopened: its good
        records are staged again from the shard file (read, not recomputed), then its sidecar is
        removed (if this is interrupted in between, the shard is still committed and a rerun with
        `retry_failed` starts again). The manifest is removed first: until the next finalize the
        directory is an unfinished dataset."""
        n = 0
        for s in range(self.num_shards):
            if self.is_committed(s):
                sidecar = json.loads(self._sidecar(s).read_text())
                if sidecar["failures"]:
                    self._remove_manifest()
                    self._reopen(s, sidecar, {i.key: i.path for i in assignment.get(s, [])})
                    n += len(sidecar["failures"])
                continue
            for inp in assignment.get(s, []):
                path = self._staged(s, inp.key, "json")
                if path.exists() and not json.loads(path.read_text())["ok"]:
                    self._remove_manifest()
                    path.unlink()
                    n += 1
        return n

    def _remove_manifest(self) -> None:
        manifest = self.root / "manifest.json"
        if manifest.exists():
            manifest.unlink()

    def _reopen(self, shard: int, sidecar: dict, paths: dict) -> None:
        folder = self.work / "staging" / f"{shard:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        teachers = sidecar["teachers"]
        count = 0
        for key, record in zip(sidecar["keys"], _shard_records(self.root / sidecar["file"])):
            count += 1
            atomic_write_bytes(os.fspath(self._staged(shard, key, "rec")), record)
            teacher = teachers[0] if len(teachers) == 1 else (_record_teacher(record) if teachers else None)
            meta = {"input": paths.get(key, key), "key": key, "ok": True, "record_bytes": len(record), "failure": None, "teacher": teacher, "timings": {}}
            _write_json(self._staged(shard, key, "json"), meta)
        if count != len(sidecar["keys"]):
            raise RuntimeError(f"{self.output_dir}: shard {sidecar['file']} holds {count} records, its sidecar lists {len(sidecar['keys'])}")
        self._sidecar(shard).unlink()

    # -- per input ---------------------------------------------------------------------------
    def is_committed(self, shard: int) -> bool:
        side = self._sidecar(shard)
        if not side.exists():
            return False
        data = self.root / self.shard_file(shard)
        return data.exists() and data.stat().length == json.loads(side.read_text())["bytes"]

    def is_staged(self, key: str) -> bool:
        shard = self.shard_of(key)
        return self.is_committed(shard) or self._staged(shard, key, "json").exists()

    def stage(self, result) -> None:
        """Stages a `process.ProcessResult` (record first, then its JSON: the done mark)."""
        shard = self.shard_of(result.key)
        folder = self.work / "staging" / f"{shard:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        if result.record is not None:
            atomic_write_bytes(os.fspath(self._staged(shard, result.key, "rec")), result.record)
        meta = {
            "input": result.input,
            "key": result.key,
            "ok": result.record is not None,
            "record_bytes": len(result.record) if result.record is not None else 0,
            "failure": result.failure,
            "teacher": result.info.get("teacher"),
            "timings": result.timings,
        }
        _write_json(self._staged(shard, result.key, "json"), meta)

    # -- per shard ---------------------------------------------------------------------------
    def pending_shards(self) -> list[int]:
        return [s for s in range(self.num_shards) if not self.is_committed(s)]

    def commit(self, shard: int, inputs) -> dict:
        """Writes shard `shard` from the staged results of its `inputs` (idempotent)."""
        if self.is_committed(shard):
            return json.loads(self._sidecar(shard).read_text())
        metas = []
        for inp in sorted(inputs, key=lambda i: i.key):
            path = self._staged(shard, inp.key, "json")
            if not path.exists():
                raise IncompleteShardError(f"shard {shard}: input {inp.key!r} ({inp.path}) is not processed yet")
            metas.append(json.loads(path.read_text()))
        ok = [m for m in metas if m["ok"]]

        def records():
            for m in ok:
                yield self._staged(shard, m["key"], "rec").read_bytes()

        size = write_shard(os.fspath(self.root / self.shard_file(shard)), records(), self.shard_options)
        teachers = sorted({json.dumps(m["teacher"], sort_keys=True) for m in ok if m.get("teacher")})
        sidecar = {
            "shard": shard,
            "file": self.shard_file(shard),
            "records": len(ok),
            "bytes": size,
            "record_bytes": sum(m["record_bytes"] for m in ok),
            "keys": [m["key"] for m in ok],
            "inputs": len(metas),
            "failures": [dict(m["failure"], key=m["key"]) for m in metas if not m["ok"]],
            "teachers": [json.loads(t) for t in teachers],
            "timings": {k: sum(m["timings"].get(k, 0.0) for m in metas) for k in sorted({k for m in metas for k in m["timings"]})},
        }
        _write_json(self._sidecar(shard), sidecar)
        staging = self.work / "staging" / f"{shard:05d}"
        if staging.exists():
            _rmtree(staging)
        return sidecar

    # -- dataset -----------------------------------------------------------------------------
    def finalize(self, assignment: dict[int, list], description: str = "") -> dict:
        """Commits any shard whose inputs are all staged, then writes the manifest and TFDS
        metadata. Raises IncompleteShardError if some input was never processed."""
        from data_pipelines.tfds_builder import write_tfds_metadata

        sidecars = [self.commit(s, assignment.get(s, [])) for s in range(self.num_shards)]
        plan = json.loads((self.work / "plan.json").read_text())
        failures = sorted((f for sc in sidecars for f in sc["failures"]), key=lambda f: f["key"])
        written = sum(sc["records"] for sc in sidecars)
        if plan["num_inputs"] != written + len(failures):
            raise RuntimeError(f"{self.output_dir}: {plan['num_inputs']} inputs but {written} written + {len(failures)} failed")
        teachers = sorted({json.dumps(t, sort_keys=True) for sc in sidecars for t in sc["teachers"]})
        teacher = [json.loads(t) for t in teachers]
        by_stage: dict[str, int] = {}
        for f in failures:
            by_stage[f["stage"]] = by_stage.get(f["stage"], 0) + 1
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "name": self.name,
            "kind": self.kind,
            "record_type": "UnlabeledClip" if self.kind == "unlabeled" else "LabeledClip",
            "schema_versions": _schema_versions(),
            "teacher": teacher[0] if len(teacher) == 1 else (teacher or None),
            "config": self.config,
            "counts": {"inputs": plan["num_inputs"], "written": written, "failed": len(failures), "failed_by_stage": dict(sorted(by_stage.items()))},
            "bytes": sum(sc["bytes"] for sc in sidecars),
            "record_bytes": sum(sc["record_bytes"] for sc in sidecars),
            "shard_options": self.shard_options,
            "shards": [{"file": sc["file"], "records": sc["records"], "bytes": sc["bytes"]} for sc in sidecars],
            "failures": failures,
            "inputs_fingerprint": plan["inputs_fingerprint"],
        }
        write_tfds_metadata(self.output_dir, self.name, [sc["records"] for sc in sidecars], manifest["bytes"], description)
        _write_json(self.root / "manifest.json", manifest)
        return manifest
