"""flow3r_jax.losses (see README.md for what lands here)."""
