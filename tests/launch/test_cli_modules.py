"""Every command-line entry point of the project, run for real (`--help` in a subprocess): one flag
style (flow3r_jax.cli), help text on every option, a usage line naming `python -m MODULE`; and no
misleading JAX platform-probing line on stderr."""

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

CLI_MODULES = [
    "flow3r_jax",
    "flow3r_jax.convert",
    "flow3r_jax.eval.synthetic",
    "flow3r_jax.reconstruct",
    "flow3r_jax.flowmap.pretrain",
    "launch.train",
    "launch.eval",
    "launch.sweep",
    "launch.tpu_pod",
    "launch.local_multiprocess",
    "launch.quickstart",
    "data_pipelines.make_dataset",
    "data_pipelines.beam_flow",
    "data_pipelines.synthetic",
    "data_pipelines.synthetic_tracks",
]

# Runs MODULE as `python -m MODULE --help` would, recording every argparse parser that parses
# (its options as defined) and absl's flags, then prints a JSON report on the real stdout.
_PROBE = textwrap.dedent(
    """
    import argparse, contextlib, io, json, os, runpy, sys
    module, root = sys.argv[1], sys.argv[2]
    parsers = []
    original = argparse.ArgumentParser.parse_known_args

    def spy(self, args=None, namespace=None):
        if not any(p is self for p in parsers):
            parsers.append(self)
        return original(self, args, namespace)

    argparse.ArgumentParser.parse_known_args = spy
    captured = io.StringIO()
    sys.argv = [module, "--help"]
    with contextlib.redirect_stdout(captured):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            code = e.code

    def options(parser, prefix=""):
        for a in parser._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    yield from options(sub, f"{prefix}{name} ")
                continue
            yield prefix + (a.option_strings[0] if a.option_strings else a.dest), a.help, a.option_strings

    report = {"exit": code, "help": captured.getvalue(), "progs": [p.prog for p in parsers],
              "classes": [type(p).__module__ + "." + type(p).__name__ for p in parsers[:1]], "no_help": [], "kebab": [], "absl": []}
    for p in parsers[:1]:
        for name, text, strings in options(p):
            if not text:  # argparse.SUPPRESS: deliberately hidden (cli.ArgumentParser accepts it)
                report["no_help"].append(name)
            report["kebab"] += [s for s in strings if s.startswith("--") and "-" in s[2:]]
    if "absl.flags" in sys.modules:
        from absl import flags
        for owner, defined in flags.FLAGS.flags_by_module_dict().items():
            if owner.startswith(root) or owner.split(".")[0] in ("flow3r_jax", "launch", "data_pipelines"):
                for f in defined:
                    report["absl"].append(f.name)
                    if not (f.help or "").strip():
                        report["no_help"].append("--" + f.name)
                    if "-" in f.name:
                        report["kebab"].append("--" + f.name)
    sys.__stdout__.write("\\n@@REPORT@@" + json.dumps(report))
    """
)


def _discovered_cli_modules() -> set[str]:
    """Modules of the library, launchers and pipelines that run as programs."""
    found = set()
    for top in ("flow3r_jax", "launch", "data_pipelines"):
        for path in (ROOT / top).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            if path.name == "__main__.py":
                found.add(".".join(rel.parts[:-1]))
            elif re.search(r"^if __name__ == .__main__.:", path.read_text(), re.M):
                found.add(".".join(rel.parts))
    return found


def test_the_list_covers_every_entry_point():
    assert _discovered_cli_modules() <= set(CLI_MODULES), sorted(_discovered_cli_modules() - set(CLI_MODULES))


@pytest.mark.parametrize("module", CLI_MODULES)
def test_cli_options_have_help_and_usage_names_the_module(module):
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", _PROBE, module, str(ROOT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert "@@REPORT@@" in run.stdout, f"{module} --help did not finish:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    report = json.loads(run.stdout.split("@@REPORT@@", 1)[1])
    assert report["progs"] or report["absl"], f"{module}: no argparse parser or absl flags seen"
    assert report["no_help"] == [], f"{module}: options without help text: {report['no_help']}"
    assert report["kebab"] == [], f"{module}: options defined in kebab-case (snake_case is canonical): {report['kebab']}"
    text = report["help"]
    if report["progs"]:
        assert report["classes"] == ["flow3r_jax.cli.ArgumentParser"], f"{module}: parser is a {report['classes']}, not flow3r_jax.cli.ArgumentParser"
        assert report["progs"][0] == f"python -m {module}", report["progs"]
        assert text.startswith(f"usage: python -m {module}"), text[:300]
    else:  # absl prints the module's docstring as its usage
        assert f"python -m {module} " in text, text[:600]
    assert "Unable to initialize backend" not in run.stderr, run.stderr


@pytest.mark.slow
def test_no_platform_probing_line_on_stderr(tmp_path):
    """JAX logs "Unable to initialize backend 'tpu'" at INFO on machines without a TPU; a command
    logging at INFO (the converter with --verbose) must not print it, though its own INFO lines
    show."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}  # let JAX probe as a user's shell would
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    control = subprocess.run(
        [sys.executable, "-c", "import logging; logging.basicConfig(level=logging.INFO); import jax; jax.devices()"], env=env, capture_output=True, text=True, timeout=300
    )
    if "Unable to initialize backend" not in control.stderr:
        pytest.skip(f"JAX probes no missing platform on this machine (stderr: {control.stderr[-300:]!r})")

    from flow3r_jax.convert.official import BUFFERS, export_state_dict
    from flow3r_jax.models import get_model_config
    from flow3r_jax.models.pretrained import _write_safetensors, abstract_params
    from tests.models.conftest import random_params

    cfg = get_model_config("tiny")
    sd = dict(export_state_dict(random_params(cfg), abstract_params(cfg)[2]))
    sd.update(BUFFERS)
    src = tmp_path / "flow3r.safetensors"
    _write_safetensors(str(src), sd)
    run = subprocess.run(
        [sys.executable, "-m", "flow3r_jax.convert", "--input", str(src), "--output", str(tmp_path / "out"), "--skip_forward", "--verbose"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "INFO flow3r_jax.models.pretrained: loaded flow3r checkpoint" in run.stderr, run.stderr  # INFO is on
    assert "Unable to initialize backend" not in run.stderr, run.stderr
