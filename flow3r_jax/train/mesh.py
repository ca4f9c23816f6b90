"""The device mesh: named axes ("data", "fsdp", "tensor"), sizes from the config.

`-1` means "the remaining devices". Batches are sharded over ("data", "fsdp") jointly; parameters
over "fsdp" (and "tensor") through logical axis rules (training config).
"""

from __future__ import annotations

import math

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

__all__ = ["MESH_AXES", "BATCH_AXES", "make_mesh", "resolve_axis_sizes", "batch_sharding"]

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def resolve_axis_sizes(sizes: tuple[int, ...] | list[int], num_devices: int) -> tuple[int, ...]:
    """Replaces one -1 by what is left; checks the product equals the device count."""
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) != len(MESH_AXES):
        raise ValueError(f"mesh: expected sizes for {MESH_AXES}, got {sizes}")
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh: sizes must be positive with at most one -1, got {sizes}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"mesh: {num_devices} devices are not divisible by the fixed axes {sizes}")
        sizes = tuple(num_devices // known if s == -1 else s for s in sizes)
    if math.prod(sizes) != num_devices:
        raise ValueError(f"mesh: axis sizes {dict(zip(MESH_AXES, sizes))} need {math.prod(sizes)} devices, have {num_devices}")
    return sizes


def make_mesh(sizes=(-1, 1, 1), devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    shape = resolve_axis_sizes(sizes, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """Leading (batch) dimension split over ("data", "fsdp"), the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))
