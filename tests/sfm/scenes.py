"""Exact synthetic scenes shared by the tests of `flow3r_jax.sfm`.

Conventions (those of the package): world-to-camera rotations Rw (K, 3, 3), camera centres C (K, 3),
Xc = R (X - C), pixel = f Xc[:2] / Xc[2] + (cx, cy); frame 0 is the gauge (R_0 = I, C_0 = 0).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

F_TRUE = 500.0
PRINCIPAL = (320.0, 240.0)
W, H = 640, 480


# ----------------------------------------------------------------------------------------------
# Synthetic scenes
# ----------------------------------------------------------------------------------------------


def rotation_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    """Angle (degrees) of Ra Rb^T, batched over a leading axis."""
    d = np.einsum("...ij,...kj->...ik", Ra, Rb)
    return np.degrees(np.linalg.norm(Rotation.from_matrix(d).as_rotvec(), axis=-1))


def project(R, C, f, X, principal=PRINCIPAL):
    """Pixels (K, P, 2) and depths (K, P) of every point in every camera, written out per camera."""
    xy, depth = [], []
    for Rk, Ck in zip(R, C):
        Xc = (X - Ck) @ Rk.T
        depth.append(Xc[:, 2])
        xy.append(f * Xc[:, :2] / Xc[:, 2:3] + np.asarray(principal))
    return np.stack(xy), np.stack(depth)


def make_scene(seed: int = 0, frames: int = 7, candidates: int = 260):
    """Cameras on a smooth path (baseline ~0.4), each rotated a few degrees, looking roughly at +z;
    points uniform in a box at depth 3-8, kept where they are in front of and inside every view."""
    rng = np.random.default_rng(seed)
    k = np.arange(frames, dtype=np.float64)
    C = np.stack([0.4 * k, 0.08 * np.sin(0.9 * k), 0.05 * k + 0.03 * np.sin(1.3 * k)], 1)
    C -= C[0]
    rotvec = np.radians(rng.uniform(-4.0, 4.0, (frames, 3)))
    rotvec[:, 1] -= np.radians(2.5) * k / frames  # yaw a little towards the scene as the camera moves right
    rotvec[0] = 0.0
    R = Rotation.from_rotvec(rotvec).as_matrix()
    R[0] = np.eye(3)
    X = rng.uniform([-1.0, -1.3, 3.0], [3.4, 1.3, 8.0], (candidates, 3))
    xy, depth = project(R, C, F_TRUE, X)
    inside = (depth > 0.1) & (xy[..., 0] > 0) & (xy[..., 0] < W) & (xy[..., 1] > 0) & (xy[..., 1] < H)
    X = X[inside.all(0)]
    assert 150 <= len(X) <= 300, len(X)
    return R, C, X


def observations(R, C, f, X):
    """Every point seen in every frame: frame (n,), point (n,), exact xy (n, 2)."""
    xy, _ = project(R, C, f, X)
    K, P = xy.shape[:2]
    frame = np.repeat(np.arange(K), P)
    point = np.tile(np.arange(P), K)
    return frame, point, xy.reshape(-1, 2)


def perturb(R, C, f, X, seed: int = 1, rot_deg=1.0, centre_frac=0.05, focal_frac=0.05, point_frac=0.02):
    """A start away from the truth: frames 1.. rotated by rot_deg about random axes, centres moved by
    centre_frac of the baseline, focal scaled by 1 + focal_frac, points moved by point_frac of their
    distance from camera 0. Frame 0 stays the gauge."""
    rng = np.random.default_rng(seed)
    K = len(R)
    axes = rng.normal(size=(K, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    dR = Rotation.from_rotvec(np.radians(rot_deg) * axes).as_matrix()
    dR[0] = np.eye(3)
    baseline = np.linalg.norm(C[1] - C[0])
    dC = rng.normal(size=C.shape)
    dC *= centre_frac * baseline / np.linalg.norm(dC, axis=1, keepdims=True)
    dC[0] = 0.0
    Xp = X + point_frac * np.linalg.norm(X, axis=1, keepdims=True) * rng.normal(size=X.shape) / np.sqrt(3)
    return dR @ R, C + dC, f * (1 + focal_frac), Xp


def best_scale(C_est, C_true):
    """s minimising |C_est - s C_true| (C_0 = 0 in both: the only gauge left is the scale)."""
    return float(np.sum(C_est * C_true) / np.sum(C_true * C_true))
