"""Coloured point clouds as binary little-endian PLY files (x y z float32, red green blue uchar),
and a reader for the same layout."""

from __future__ import annotations

import numpy as np

__all__ = ["write_ply", "read_ply"]

_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def write_ply(path: str, points: np.ndarray, colors: np.ndarray | None = None) -> None:
    """points (P, 3); colors (P, 3) uint8 or float in [0, 1] (default grey)."""
    points = np.asarray(points, np.float32).reshape(-1, 3)
    if colors is None:
        colors = np.full(points.shape, 128, np.uint8)
    colors = np.asarray(colors)
    if colors.dtype != np.uint8:
        colors = np.clip(np.round(colors * 255.0), 0, 255).astype(np.uint8)
    colors = colors.reshape(-1, 3)
    if len(colors) != len(points):
        raise ValueError(f"write_ply: {len(points)} points but {len(colors)} colours")
    rec = np.empty(len(points), _DTYPE)
    rec["x"], rec["y"], rec["z"] = points.T
    rec["red"], rec["green"], rec["blue"] = colors.T
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment flow3r_jax reconstruct\n"
        f"element vertex {len(points)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(rec.tobytes())


def read_ply(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(points (P, 3) float32, colors (P, 3) uint8) of a file written by `write_ply`."""
    with open(path, "rb") as f:
        header = b""
        while not header.endswith(b"end_header\n"):
            line = f.readline()
            if not line:
                raise ValueError(f"{path}: not a PLY file (no end_header)")
            header += line
        text = header.decode("ascii")
        if "format binary_little_endian 1.0" not in text:
            raise ValueError(f"{path}: only binary little-endian PLY files are read")
        count = int(text.split("element vertex ")[1].split()[0])
        rec = np.frombuffer(f.read(count * _DTYPE.itemsize), _DTYPE, count)
    return np.stack([rec["x"], rec["y"], rec["z"]], -1), np.stack([rec["red"], rec["green"], rec["blue"]], -1)
