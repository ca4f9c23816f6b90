"""flow3r_jax: Flow3r in JAX/Flax.

Importing the package has no side effects (no device initialisation, no downloads). Subpackages:

- `flow3r_jax.geometry`: pure, jittable camera / pose / flow math (the conventions live there).
- `flow3r_jax.models`, `losses`, `data`, `train`, `flowmap`, `eval`, `convert`: see README.md.

`python -m flow3r_jax` prints the versions of Python, JAX and the main dependencies.
"""

__version__ = "0.1.0"
