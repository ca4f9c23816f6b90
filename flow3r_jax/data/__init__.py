"""flow3r_jax.data (see README.md for what lands here)."""
