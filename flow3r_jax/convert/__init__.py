"""flow3r_jax.convert (see README.md for what lands here)."""
