"""Geometry kernels: pure, batched, differentiable camera / pose / flow math.

Every function takes and returns arrays, batches over leading dimensions (`...`), and works
under `jax.jit`, `jax.vmap` and `jax.grad`. Nothing here imports the rest of the project.

Conventions (one per quantity, used everywhere in flow3r_jax):

- **Camera axes**: OpenCV. x right, y down, z forward (into the scene); depth is z.
- **Poses**: 4x4 camera-to-world matrices [[R, t], [0, 1]]: x_world = R x_cam + t, so t is the
  camera centre. `relative_pose(T_i, T_j) = inv(T_i) @ T_j` maps camera j's frame into camera i's.
  Similarity transforms are [[s R, t], [0, 1]].
- **Rotations**: 3x3 matrices acting on column vectors; quaternions scalar-first (w, x, y, z).
- **Pixels**: (x, y) = (column, row) with the centre of the top-left pixel at (0.5, 0.5), so an
  image of width W spans [0, W]. Intrinsics K map camera coordinates to these pixel coordinates.
- **Normalised image coordinates**: ((x - cx) / fx, (y - cy) / fy), i.e. K^-1 applied.
- **Official NDC** (the released Flow3r model's flow output): x_ndc = 1 - 2 p_x / (W - 1),
  y_ndc = 1 - 2 p_y / (H - 1) with integer-centred pixel indices p = xy - 0.5 (+x left, +y up).
- **Flow**: displacement in pixels from frame i's pixel centres to frame j, on frame i's grid,
  (..., H, W, 2) as (dx, dy), unless a function says NDC.
- **Images and maps**: channels last, (..., H, W, C).
"""

from flow3r_jax.geometry.alignment import (
    align_trajectories,
    apply_similarity_to_poses,
    masked_median,
    median_scale,
    robust_scale,
    scale_shift_lstsq,
    weighted_median,
)
from flow3r_jax.geometry.camera import (
    focal_from_fov,
    focal_from_pointmap,
    fov_from_focal,
    intrinsics_from_focal,
    intrinsics_from_fov,
    ndc_to_pixel,
    normalized_to_pixel,
    pixel_grid,
    pixel_to_ndc,
    pixel_to_normalized,
    points_to_depth,
    project_points,
    scale_intrinsics,
    unproject_depth,
)
from flow3r_jax.geometry.flow import (
    coords_to_flow,
    fb_occluded,
    flow_from_camera_points,
    flow_to_color,
    flow_to_coords,
    flow_to_ndc_coords,
    forward_backward_mask,
    gt_flow_with_depth_check,
    induced_flow,
    ndc_coords_to_flow,
)
from flow3r_jax.geometry.linalg import det3, polar_rotation, safe_norm, skew, vee
from flow3r_jax.geometry.normals import depth_edge, quad_normal_mask, quad_normals
from flow3r_jax.geometry.procrustes import rigid_from_moments, weighted_moments, weighted_procrustes
from flow3r_jax.geometry.rotations import (
    axis_angle_to_matrix,
    geodesic_angle,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_to_matrix,
    random_rotation,
    rotation_6d_to_matrix,
    rotation_9d_to_matrix,
)
from flow3r_jax.geometry.sampling import (
    bicubic_aa_weights,
    bilinear_sample,
    nearest_sample,
    resize_bicubic_antialias,
)
from flow3r_jax.geometry.trajectory import chain_relative_poses, consecutive_relative_poses
from flow3r_jax.geometry.transforms import (
    compose,
    invert_rigid,
    invert_similarity,
    make_transform,
    relative_pose,
    similarity_scale,
    split_transform,
    transform_points,
)
