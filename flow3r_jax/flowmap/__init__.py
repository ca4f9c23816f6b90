"""flow3r_jax.flowmap (see README.md for what lands here)."""
