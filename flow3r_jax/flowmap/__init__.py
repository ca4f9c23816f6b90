"""FlowMap per-scene optimisation (Smith et al., "FlowMap: High-Quality Camera Poses,
Intrinsics, and Depth via Gradient Descent", 3DV 2025) as one compiled JAX program.

Depth is the only free variable: every step, camera poses come from weighted Procrustes on the
depth and the backward flow of consecutive frames (chained with an associative scan), the focal
length from a soft-min over candidates (then, from step 1000, a free parameter), and the loss is
the pose-induced flow against the given flow (plus point tracks when given). Stretches of steps
run as one loop inside one `jax.jit`, the host reporting progress and asking whether to stop in
between; `optimize_scenes` vmaps it over several scenes.

    from flow3r_jax.flowmap import FlowMapConfig, make_scene_inputs, optimize_scene, load_init, init_params

    inputs = make_scene_inputs(images, flow_fw, flow_bw)          # (F,H,W,3), (F-1,H,W,2) x 2
    state, cfg = load_init()                                      # the shipped pretrained CNN + MLP
    result = optimize_scene(inputs, cfg, init_params(cfg, F, (H, W), pretrained=state))
    result.poses, result.intrinsics, result.depth, result.focal, result.history

Modules, one concern each: `config` (settings, FlowMap's numbers), `conv` (a convolution whose
gradient stays fast inside the compiled loop on CPU), `depth_net` (depth CNN, explicit depth),
`correspondence` (weight MLP), `model` (the NNX module of both), `intrinsics` (candidates,
soft-min), `poses` (Procrustes from depth + flow, chaining), `losses` (flow, tracks,
photometric mask), `inputs` (validated scene inputs), `optimize` (the compiled run, vmap),
`pretrain` (FlowMap's pretraining recipe on synthetic scenes), `weights` (initialisation files),
`metrics` (trajectory / focal errors), `plot`. The files `reconstruct` writes (for every backend)
are `flow3r_jax.export`'s.
The command line is `python -m flow3r_jax.reconstruct`.
"""

import importlib

# name -> module; imported on first use, so that importing the package does not load JAX.
_EXPORTS = {
    "FlowMapConfig": "config",
    "SceneInputs": "inputs",
    "InputError": "inputs",
    "make_scene_inputs": "inputs",
    "consecutive_flows": "inputs",
    "stack_scenes": "inputs",
    "FlowMapResult": "optimize",
    "StepMetrics": "optimize",
    "forward": "optimize",
    "init_params": "optimize",
    "optimize_scene": "optimize",
    "optimize_scenes": "optimize",
    "load_init": "weights",
    "save_init": "weights",
    "DEFAULT_INIT": "weights",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
