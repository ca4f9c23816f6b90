"""Trajectory plot: the estimated camera path (and optionally a reference path aligned to it by
Sim(3)) in 3D and from above, saved as a PNG. Needs matplotlib (the `[viz]` extra)."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_trajectory"]


def _frustum_axes(ax, poses, scale, color):
    for T in poses:
        c = T[:3, 3]
        z = T[:3, 2] * scale
        ax.plot([c[0], c[0] + z[0]], [c[2], c[2] + z[2]], [-c[1], -c[1] - z[1]], color=color, lw=0.8)


def plot_trajectory(path: str, poses: np.ndarray, reference: np.ndarray | None = None, title: str = "camera trajectory") -> None:
    """poses (N, 4, 4) camera-to-world (OpenCV axes; plotted with y up = -y). `reference` (N,
    4, 4), e.g. ground truth, is aligned onto `poses` by Sim(3) on the camera centres first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    poses = np.asarray(poses, np.float64)
    ref = None
    if reference is not None:
        from flow3r_jax.geometry import align_trajectories

        _, ref = align_trajectories(np.asarray(reference, np.float32), poses.astype(np.float32))
        ref = np.asarray(ref, np.float64)
    c = poses[:, :3, 3]
    span = float(np.max(np.ptp(c, axis=0))) if len(c) > 1 else 1.0
    scale = 0.08 * (span if span > 0 else 1.0)
    fig = plt.figure(figsize=(10, 4.8))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    ax.plot(c[:, 0], c[:, 2], -c[:, 1], "-o", ms=2.5, color="tab:blue", label="estimate")
    _frustum_axes(ax, poses, scale, "tab:blue")
    if ref is not None:
        r = ref[:, :3, 3]
        ax.plot(r[:, 0], r[:, 2], -r[:, 1], "-", color="tab:orange", label="reference (Sim(3) aligned)")
    ax.scatter(*[[v] for v in (c[0, 0], c[0, 2], -c[0, 1])], color="k", s=20, label="frame 0")
    ax.set_xlabel("x")
    ax.set_ylabel("z")
    ax.set_zlabel("-y")
    ax.legend(loc="upper left", fontsize=7)
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.plot(c[:, 0], c[:, 2], "-o", ms=2.5, color="tab:blue")
    for T in poses:
        ax2.arrow(T[0, 3], T[2, 3], T[0, 2] * scale, T[2, 2] * scale, color="tab:blue", width=0.0, head_width=0.0, lw=0.6)
    if ref is not None:
        ax2.plot(ref[:, 0, 3], ref[:, 2, 3], "-", color="tab:orange")
    ax2.set_aspect("equal", adjustable="datalim")
    ax2.set_xlabel("x")
    ax2.set_ylabel("z")
    ax2.set_title("top view (x-z)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
