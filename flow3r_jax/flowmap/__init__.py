"""FlowMap per-scene optimisation (Smith et al., "FlowMap: High-Quality Camera Poses,
Intrinsics, and Depth via Gradient Descent", 3DV 2025) as one compiled JAX program.

Depth is the only free variable: every step, camera poses come from weighted Procrustes on the
depth and the backward flow of consecutive frames (chained with an associative scan), the focal
length from a soft-min over candidates (then, from step 1000, a free parameter), and the loss is
the pose-induced flow against the given flow (plus point tracks when given). The whole run is a
`lax.scan` inside one `jax.jit`; `optimize_scenes` vmaps it over several scenes.

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
`metrics` (trajectory / focal errors), `export` (cameras.json, COLMAP model), `ply`, `plot`.
The command line is `python -m flow3r_jax.reconstruct`.
"""

from flow3r_jax.flowmap.config import FlowMapConfig
from flow3r_jax.flowmap.inputs import InputError, SceneInputs, consecutive_flows, make_scene_inputs, stack_scenes
from flow3r_jax.flowmap.optimize import FlowMapResult, StepMetrics, forward, init_params, optimize_scene, optimize_scenes
from flow3r_jax.flowmap.weights import DEFAULT_INIT, load_init, save_init

__all__ = [
    "FlowMapConfig",
    "SceneInputs",
    "InputError",
    "make_scene_inputs",
    "consecutive_flows",
    "stack_scenes",
    "FlowMapResult",
    "StepMetrics",
    "forward",
    "init_params",
    "optimize_scene",
    "optimize_scenes",
    "load_init",
    "save_init",
    "DEFAULT_INIT",
]
