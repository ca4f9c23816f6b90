"""Shared synthetic scenes with exact ground truth for the FlowMap tests (small, so that the
whole directory stays within a few minutes on 2 cores)."""

import numpy as np
import pytest

from data_pipelines.synthetic import SceneConfig, generate_clip
from flow3r_jax.flowmap import consecutive_flows


def exact_scene(height=64, width=96, frames=8, seed=0, focal=None, preset="random", flow_px=(4.0, 8.0)):
    """A static synthetic room clip with consecutive exact flows and their covisibility."""
    cfg = SceneConfig(height=height, width=width, frames=frames, dynamic=False, preset=preset, kind="room", offsets=(1,), flow_px=flow_px, focal=focal)
    clip = generate_clip(cfg, seed=seed)
    fw, bw = consecutive_flows(clip["pairs"], clip["flow"])
    cfw, cbw = consecutive_flows(clip["pairs"], clip["covisible"][..., None])
    clip.update(flow_fw=fw, flow_bw=bw, cov_fw=cfw[..., 0], cov_bw=cbw[..., 0])
    return clip


def exact_tracks(clip, stride=8, rtol=0.01):
    """Tracks of the pixel centres of a grid on frame 0 (and on the middle frame), projected into
    every frame with the ground truth; visible where in front, inside, and unoccluded (depth test)."""
    depth, poses, K = clip["depth"], clip["poses"], clip["intrinsics"][0]
    F, H, W = depth.shape
    xs, ys = np.meshgrid(np.arange(stride // 2, W, stride) + 0.5, np.arange(stride // 2, H, stride) + 0.5)
    all_xy, all_vis = [], []
    for src in (0, F // 2):
        xy = np.stack([xs.ravel(), ys.ravel()], -1)
        z = depth[src, ys.astype(int).ravel(), xs.astype(int).ravel()]
        cam = np.concatenate([(xy - K[:2, 2]) / np.diag(K)[:2], np.ones((len(xy), 1))], -1) * z[:, None]
        world = cam @ poses[src, :3, :3].T + poses[src, :3, 3]
        txy, vis = [], []
        for t in range(F):
            R, c = poses[t, :3, :3], poses[t, :3, 3]
            pc = (world - c) @ R
            front = pc[:, 2] > 1e-6
            p = pc[:, :2] / np.where(front, pc[:, 2], 1.0)[:, None] * np.diag(K)[:2] + K[:2, 2]
            inside = front & (p[:, 0] >= 0) & (p[:, 0] < W) & (p[:, 1] >= 0) & (p[:, 1] < H)
            col = np.clip(p[:, 0].astype(int), 0, W - 1)
            row = np.clip(p[:, 1].astype(int), 0, H - 1)
            seen = np.abs(depth[t, row, col] - pc[:, 2]) <= rtol * pc[:, 2]
            txy.append(p)
            vis.append(inside & seen & (z > 0))
        all_xy.append(np.stack(txy))
        all_vis.append(np.stack(vis))
    return np.concatenate(all_xy, 1).astype(np.float32), np.concatenate(all_vis, 1)


@pytest.fixture(scope="session")
def tiny_scene():
    return exact_scene()
