"""flow3r_jax.eval (see README.md for what lands here)."""
