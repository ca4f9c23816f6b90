"""What `reconstruct` writes, for every backend (FlowMap, the feed-forward model, TracksTo4D):
`formats` (cameras.json, nerfstudio transforms.json, COLMAP binary model), `ply` (point clouds),
`outputs` (the files of one reconstruction), `outdir` (its output directory: checks, staging, no
stale files). These modules load without JAX."""
