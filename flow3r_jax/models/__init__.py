"""flow3r_jax.models (see README.md for what lands here)."""
