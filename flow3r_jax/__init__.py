"""flow3r_jax: Flow3r in JAX/Flax.

Importing the package has no side effects (no device initialisation, no downloads; heavy
submodules load on first use). Subpackages:

- `flow3r_jax.geometry`: pure, jittable camera / pose / flow math (the conventions live there).
- `flow3r_jax.models`: the Flow3r model; `flow3r_jax.load_pretrained(path, size="large")` builds
  it from the official `flow3r.bin`, a pi^3 `model.safetensors` or one of our checkpoints.
- `flow3r_jax.losses`, `data`, `train`, `flowmap`, `eval`, `convert`: see README.md.

`python -m flow3r_jax` prints the versions of Python, JAX and the main dependencies.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_pretrained", "save_pretrained"]


def __getattr__(name):
    if name in ("load_pretrained", "save_pretrained"):
        from flow3r_jax.models import pretrained

        return getattr(pretrained, name)
    raise AttributeError(f"module 'flow3r_jax' has no attribute {name!r}")
