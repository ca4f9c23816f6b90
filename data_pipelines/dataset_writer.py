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
   anything different is refused (use a new directory or `overwrite`).
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

Because every record is a deterministic function of (input, config) and every file appears
atomically, any interleaving of crashes and reruns ends with identical files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil

from etils import epath

from data_pipelines.shards import SHARD_OPTIONS, atomic_write_bytes, check_name, shard_filename, write_shard

__all__ = ["DatasetWriter", "PlanMismatchError", "IncompleteShardError", "stable_shard", "default_num_shards", "MANIFEST_VERSION"]

MANIFEST_VERSION = 1
WORK = "_work"


class PlanMismatchError(RuntimeError):
    """The output directory holds a partial run made from other inputs or settings."""


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

    def prepare(self, inputs, overwrite: bool = False) -> dict[int, list]:
        """Checks (or starts) the plan of the directory and returns the shard assignment."""
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
            if old != plan:
                diff = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
                raise PlanMismatchError(
                    f"{self.output_dir} holds a run with different {diff}; resume with the same inputs and "
                    "options, or choose a new output directory (or overwrite)"
                )
        else:
            self.work.mkdir(parents=True, exist_ok=True)
            _write_json(plan_path, plan)
        for leftover in self.root.glob("*.tmp-*"):  # temp files of a killed run (never renamed)
            leftover.unlink()
        return self.assign(inputs)

    def _wipe(self) -> None:
        for f in list(self.root.iterdir()):
            if f.name == WORK or f.name in ("manifest.json", "dataset_info.json", "features.json") or f.name.startswith(f"{self.name}-"):
                if f.is_dir():
                    _rmtree(f)
                else:
                    f.unlink()

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
