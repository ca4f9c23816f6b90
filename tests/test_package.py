"""Package-level behaviour: the info command, import hygiene, layering of the geometry package."""

import ast
import pathlib
import subprocess
import sys

import flow3r_jax

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_info_command_prints_versions():
    out = subprocess.run([sys.executable, "-m", "flow3r_jax"], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    import jax

    assert f"flow3r_jax {flow3r_jax.__version__}" in out
    assert f"jax                    {jax.__version__}" in out
    assert f"python     {sys.version_info.major}.{sys.version_info.minor}" in out
    assert "jax backend cpu" in out


def test_import_has_no_side_effects():
    """Importing the package and its geometry must not initialise a JAX backend."""
    code = "import flow3r_jax, flow3r_jax.geometry, jax._src.xla_bridge as xb; print(bool(xb._backends))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_geometry_imports_nothing_else_of_the_project():
    for path in (ROOT / "flow3r_jax" / "geometry").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flow3r_jax"):
                assert node.module.startswith("flow3r_jax.geometry"), f"{path.name} imports {node.module}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in ("flax", "optax", "orbax", "torch") for n in names), f"{path.name}: {names}"


def test_public_load_pretrained_is_lazy():
    code = "import sys, flow3r_jax; assert 'flax' not in sys.modules; f = flow3r_jax.load_pretrained; assert 'flax' in sys.modules; print(f.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "flow3r_jax.models.pretrained"
