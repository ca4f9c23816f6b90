"""flow3r_jax.train (see README.md for what lands here)."""
