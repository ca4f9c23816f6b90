"""Independent NumPy references and random generators shared by the geometry tests."""

import numpy as np
from scipy.spatial.transform import Rotation


def random_rotations(rng, n):
    return Rotation.random(n, random_state=rng).as_matrix()


def random_poses(rng, n, translation_scale=1.0):
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = random_rotations(rng, n)
    T[:, :3, 3] = rng.normal(size=(n, 3)) * translation_scale
    return T


def intrinsics(fx, fy, cx, cy):
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


def bilinear_reference(image, x, y, padding):
    """Per-point loop implementation of torch's grid_sample(align_corners=False) in our pixel
    convention (pixel centres at +0.5). image (H, W, C); x, y scalars."""
    H, W, C = image.shape
    px, py = x - 0.5, y - 0.5
    if padding == "border":
        px = min(max(px, 0.0), W - 1.0)
        py = min(max(py, 0.0), H - 1.0)
    x0, y0 = int(np.floor(px)), int(np.floor(py))
    out = np.zeros(C)
    for xi in (x0, x0 + 1):
        for yi in (y0, y0 + 1):
            w = (1 - abs(px - xi)) * (1 - abs(py - yi))
            if 0 <= xi < W and 0 <= yi < H:
                out += w * image[yi, xi]
    return out
