"""`python -m flow3r_jax`: print the package, Python and JAX versions and the visible devices."""

from __future__ import annotations

import importlib.metadata
import platform
import sys

_DEPENDENCIES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "grain",
    "numpy",
    "tensorflow-datasets",
    "array-record",
    "opencv-python-headless",
    "torch",
    "apache-beam",
)


def info() -> str:
    """Returns a human-readable report of versions and devices."""
    import flow3r_jax

    lines = [
        f"flow3r_jax {flow3r_jax.__version__}",
        f"python     {platform.python_version()} ({sys.executable})",
    ]
    for dist in _DEPENDENCIES:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        lines.append(f"{dist:<22} {version}")
    try:
        import jax

        devices = jax.devices()
        lines.append(f"jax backend {jax.default_backend()}: {len(devices)} device(s): {devices}")
        lines.append(f"jax processes: {jax.process_count()}")
    except Exception as err:  # report, do not crash: this command is for diagnosing set-ups
        lines.append(f"jax devices unavailable: {err!r}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from flow3r_jax.cli import ArgumentParser

    parser = ArgumentParser(module="flow3r_jax", description=__doc__)
    parser.add_argument("command", nargs="?", default="info", choices=["info"], help="info (the default): print the versions and the devices JAX sees")
    parser.parse_args(argv)
    print(info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
