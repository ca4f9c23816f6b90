"""Forward checks of a converted model on a fixed small input, and parity with the official model.

`fixed_input()` is the input of `shared/tools/parity/official_dump.py` (2 frames of 112x154 drawn
with NumPy RandomState(seed).uniform, pairs (0, 1) and (1, 0)). `forward_summary` runs our model
on it; `official_outputs` runs the official PyTorch `Flow3r()` of a local checkout of
`Kidrauh/flow3r` (needs torch, the `[convert]` extra; nothing is downloaded: network access is
refused while the official model is built and run) with the same weights; `compare` measures
the differences against the SPEC targets (fp32, highest matmul precision), scaled by the
outputs' magnitude (max(1, max |official|)) as the stage-by-stage parity tests do.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from typing import Mapping

import numpy as np

__all__ = ["TARGETS", "fixed_input", "forward_summary", "check_official_repo", "official_outputs", "compare"]

# Max abs difference per output at magnitude <= 1 (tests/models/test_parity.py's targets).
TARGETS = {"points": 1e-4, "local_points": 1e-4, "camera_poses": 1e-5, "conf": 1e-5, "flow": 2e-6}


def fixed_input(frames: int = 2, height: int = 112, width: int = 154, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images (1, N, H, W, 3) float32 in [0, 1), pairs (1, S, 2) int64), as official_dump.py."""
    images = np.random.RandomState(seed).uniform(0.0, 1.0, size=(1, frames, 3, height, width)).astype(np.float32)
    pairs = [(0, 1), (1, 0)] if frames > 1 else [(0, 0)]
    return images.transpose(0, 1, 3, 4, 2).copy(), np.asarray([pairs], np.int64)


def forward_summary(model, images: np.ndarray, pairs: np.ndarray) -> tuple[dict[str, np.ndarray], list[str]]:
    """Our outputs (fp32, highest precision) and a line per output: shape, range, finiteness."""
    from flow3r_jax.models.inference import Predictor

    out = Predictor(model, precision="highest")(images, pairs)
    lines = []
    for k in ("points", "local_points", "conf", "camera_poses", "flow"):
        v = out[k]
        finite = bool(np.isfinite(v).all())
        lines.append(f"{k:<13} {tuple(v.shape)} " + (f"in [{v.min():.4g}, {v.max():.4g}]" if finite else f"{int((~np.isfinite(v)).sum())} NON-FINITE values"))
    return out, lines


@contextlib.contextmanager
def _no_network():
    def refuse(*_a, **_k):
        raise RuntimeError("flow3r_jax.convert: network access attempted while building the official model (nothing may be downloaded)")

    saved = socket.socket.connect, socket.create_connection
    socket.socket.connect, socket.create_connection = refuse, refuse
    try:
        yield
    finally:
        socket.socket.connect, socket.create_connection = saved


def check_official_repo(repo: str) -> None:
    """Raises FileNotFoundError / ImportError (naming `repo`) unless the official model can be built."""
    if not os.path.isfile(os.path.join(repo, "flow3r", "models", "flow3r.py")):
        raise FileNotFoundError(f"{repo}: not a checkout of Kidrauh/flow3r (flow3r/models/flow3r.py is missing)")
    try:
        import torch  # noqa: F401
    except ImportError as err:
        raise ImportError(f"the official parity check with {repo} needs torch: pip install -e '.[convert]' (torch==2.13.0, CPU)") from err


def official_outputs(repo: str, state_dict: Mapping[str, np.ndarray], images: np.ndarray, pairs: np.ndarray) -> dict[str, np.ndarray]:
    """The official model of the checkout `repo` with `state_dict` loaded (strictly) run on the
    input; images (1, N, H, W, 3) as for our model."""
    check_official_repo(repo)
    import torch
    os.environ.setdefault("XFORMERS_DISABLED", "1")  # the official code's pure-PyTorch paths
    repo = os.path.abspath(repo)
    if repo not in sys.path:
        sys.path.insert(0, repo)
    with _no_network():
        from flow3r.models.flow3r import Flow3r as OfficialFlow3r

        official = OfficialFlow3r().float().eval()
        official.load_state_dict({k: torch.from_numpy(np.array(state_dict[k], np.float32)) for k in state_dict}, strict=True)
        with torch.inference_mode(), torch.autocast("cpu", enabled=False):
            out = official(torch.from_numpy(images.transpose(0, 1, 4, 2, 3).copy()), pair_indices=torch.from_numpy(pairs.astype(np.int64)))
    return {k: out[k].detach().float().numpy() for k in TARGETS}


def compare(ours: Mapping[str, np.ndarray], official: Mapping[str, np.ndarray]) -> tuple[bool, list[str]]:
    """(all within target, a line per output: max abs difference, its bound, pass / FAIL)."""
    ok, lines = True, []
    for k, target in TARGETS.items():
        ref = np.asarray(official[k])
        err = float(np.abs(np.asarray(ours[k]) - ref).max())
        bound = target * max(1.0, float(np.abs(ref).max()))
        ok &= err <= bound
        lines.append(f"{k:<13} max abs diff {err:.2e} (bound {bound:.1e}) {'ok' if err <= bound else 'FAIL'}")
    return ok, lines
