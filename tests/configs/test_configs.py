"""Every config file resolves for every value of every named option, rejects unknown options
and values by name, and means what it says: the ablation's variants (data sources, flow loss
weight, flow head, equal budgets), the evaluation suites (registered benchmarks and tasks),
FlowMap's settings (valid FlowMapConfig, reaching reconstruct and launch.eval as defaults that
command-line flags override)."""

import dataclasses
import functools
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from configs import ablation_flow_heads, eval as eval_config, flow3r, flowmap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = {"flow3r": flow3r, "flowmap": flowmap, "eval": eval_config, "ablation_flow_heads": ablation_flow_heads}
# Options whose values are not enumerated: a few values each.
FREE_VALUES = {("flowmap", "steps"): ("1", "500", "2000"), ("ablation_flow_heads", "seed"): ("0", "7")}


def _option_cases():
    for name, module in MODULES.items():
        for option in module._OPTIONS:
            for value in module._CHOICES.get(option, FREE_VALUES.get((name, option), ())):
                yield pytest.param(module, option, value, id=f"{name}:{option}={value}")


def test_every_option_has_values_to_test():
    for name, module in MODULES.items():
        for option in module._OPTIONS:
            assert option in module._CHOICES or (name, option) in FREE_VALUES, f"{name}: option {option} untested"


@pytest.mark.parametrize("module, option, value", list(_option_cases()))
def test_config_resolves_for_each_option(module, option, value):
    c = module.get_config(f"{option}={value}")
    assert isinstance(c, ml_collections.ConfigDict)
    assert c.options == f"{option}={value}"
    json.loads(c.to_json_best_effort())  # serialisable, as launch.sweep writes it


@pytest.mark.parametrize("module", MODULES.values(), ids=MODULES.keys())
def test_unknown_option_or_value_is_a_value_error_naming_it(module):
    with pytest.raises(ValueError, match="no_such_option"):
        module.get_config("no_such_option=1")
    option = next(iter(module._OPTIONS))
    with pytest.raises(ValueError, match=f"{option}.*bogus_value"):
        module.get_config(f"{option}=bogus_value")
    with pytest.raises(ValueError, match="NAME=VALUE"):
        module.get_config("novalue")


@pytest.mark.parametrize("arg", ["steps=0", "steps=ten"])
def test_flowmap_steps_must_be_a_positive_integer(arg):
    with pytest.raises(ValueError, match="steps"):
        flowmap.get_config(arg)


def test_ablation_seed_must_be_an_integer():
    with pytest.raises(ValueError, match="seed"):
        ablation_flow_heads.get_config("seed=x")


# ------------------------------------------------------------------------------ flow3r


def test_flow3r_mesh_and_schedule_options():
    from flow3r_jax.train.optimizer import one_cycle_schedule

    base = flow3r.get_config("size=tiny")
    assert (base.mesh.data, base.mesh.fsdp) == (-1, 1)
    fsdp = flow3r.get_config("size=tiny,mesh=fsdp")
    assert (fsdp.mesh.data, fsdp.mesh.fsdp, fsdp.mesh.tensor) == (1, -1, 1)
    t = flow3r.get_config("size=tiny,schedule=constant").train
    steps = np.array([0, t.steps // 2, t.steps - 1])
    np.testing.assert_allclose(one_cycle_schedule(t.lr, t.steps, t.warmup_frac, t.div_factor, t.final_div_factor)(steps), t.lr, rtol=1e-6)
    b = base.train
    assert float(one_cycle_schedule(b.lr, b.steps, b.warmup_frac, b.div_factor, b.final_div_factor)(steps)[-1]) < b.lr / 1000


# ---------------------------------------------------------------------------- ablation

PATHS = {"labeled": "/data/labeled", "unlabeled": "/data/videos", "unlabeled_more": "/data/videos_x4"}


def _ablation(variant, **opts):
    c = ablation_flow_heads.get_config(",".join([f"variant={variant}", *(f"{k}={v}" for k, v in opts.items())]))
    for k, v in PATHS.items():  # as --config.ablation.K=V does, after get_config
        c.ablation[k] = v
    return c


@pytest.mark.parametrize(
    "variant, sources, flow_weight, head",
    [
        ("supervised", "/data/labeled", 0.0, "factored"),
        ("factored", "/data/labeled,/data/videos", 0.01, "factored"),
        ("tracking", "/data/labeled,/data/videos", 0.01, "tracking"),
        ("projective", "/data/labeled,/data/videos", 0.01, "projective"),
        ("factored_more_data", "/data/labeled,/data/videos_x4", 0.01, "factored"),
        ("consistency", "/data/labeled,/data/videos", 0.01, "factored"),
    ],
)
def test_ablation_variant_data_loss_and_head(variant, sources, flow_weight, head):
    from flow3r_jax.train.loop import parse_sources

    c = _ablation(variant)
    assert c.data.sources == sources  # follows the dataset fields set after get_config
    assert [p for p, _ in parse_sources(c.data.sources)] == sources.split(",")
    assert c.loss.flow_weight == flow_weight
    assert c.model.flow_head == head
    assert c.train.trainable == "all_but_encoder"
    assert c.loss.consistency_weight == (0.1 if variant == "consistency" else 0.0) and c.loss.consistency_units == "ndc"


def test_ablation_variants_share_one_budget():
    def budget(c):
        return (c.train.steps, c.data.global_batch, c.data.frames, c.data.pairs, c.data.height, c.data.width, c.train.lr, c.model.size, c.init.kind)

    for size in ("tiny", "small"):
        budgets = {v: budget(_ablation(v, size=size)) for v in ablation_flow_heads.VARIANTS}
        assert len(set(budgets.values())) == 1, budgets
    c = _ablation("tracking", seed=2)
    assert (c.seed, c.data.seed) == (2, 2)


@pytest.mark.parametrize("variant", ["supervised", "projective"])
def test_ablation_variants_leave_parameters_to_train(variant):
    """Projective flow has no head parameters; supervised trains the geometry."""
    from flow3r_jax.train.loop import model_config
    from flow3r_jax.train.state import ParamLayout, trainable_mask

    c = _ablation(variant)
    names = ParamLayout.of(model_config(c)).names
    mask = trainable_mask(names, c.train.trainable)
    assert any(mask.values())
    assert any(n.startswith("flow_head/") for n in names) == (variant == "supervised")


def test_supervised_flow_weight_zero_gives_the_flow_prediction_no_gradient():
    import jax

    from flow3r_jax.losses import LossConfig, flow3r_loss
    from tests.losses import reference as ref

    small = dict(B=2, N=2, H=4, W=4, S=1, labeled=(True, False), high_quality=(True, False))
    out, batch = jax.tree.map(jax.numpy.asarray, ref.random_batch(np.random.default_rng(0), **small))

    @functools.partial(jax.jit, static_argnums=1)
    def grad(flow, weight):
        return jax.grad(lambda f: flow3r_loss({**out, "flow": f}, batch, LossConfig(flow_weight=weight))[0])(flow)

    def flow_grad(weight):
        return np.asarray(grad(out["flow"], weight))

    assert not np.any(flow_grad(_ablation("supervised").loss.flow_weight))
    assert np.any(flow_grad(_ablation("factored").loss.flow_weight))


# -------------------------------------------------------------------------------- eval


@pytest.mark.parametrize("suite", eval_config.SUITES)
def test_eval_suites_name_registered_benchmarks_and_their_tasks(suite):
    from flow3r_jax.eval.benchmarks import BENCHMARKS

    c = eval_config.get_config(f"suite={suite}")
    tasks = [t for t in c.tasks.split(",") if t]
    for bench in c.benchmarks.split(","):
        assert bench in BENCHMARKS, bench
        assert not tasks or set(tasks) & set(BENCHMARKS[bench].tasks), (bench, tasks)


def test_eval_all_is_the_union_of_the_paper_suites():
    c = eval_config.get_config("suite=all")
    assert set(c.benchmarks.split(",")) == {"sintel", "bonn", "kitti", "nyu-v2", "tum", "scannet", "re10k", "co3d", "7scenes-sparse", "7scenes-dense", "nrgbd-sparse", "nrgbd-dense"}
    assert set(eval_config.get_config("suite=pose").tasks.split(",")) == {"pose_trajectory", "pose_angular"}


def test_launch_eval_takes_config_fields_as_defaults_and_flags_win():
    """The config's suite and alignment reach launch.eval's flags; an explicit flag wins."""
    code = (
        "import json, sys\n"
        "from absl import flags\n"
        "from launch import eval as e\n"
        "flags.FLAGS(sys.argv)\n"
        "e._apply_config()\n"
        "F = flags.FLAGS\n"
        "print(json.dumps(dict(benchmarks=F.benchmarks, tasks=F.tasks, depth_align=F.depth_align, size=F.size, max_sequences=F.max_sequences, plots=F.plots)))\n"
    )
    argv = ["--config=configs/eval.py:suite=video_depth,size=tiny", "--config.depth_align=median", "--config.max_sequences=2", "--depth_align=l1_scale"]
    r = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == dict(benchmarks=["sintel", "bonn", "kitti"], tasks=["video_depth"], depth_align="l1_scale", size="tiny", max_sequences=2, plots=2)


# ----------------------------------------------------------------------------- flowmap


@pytest.mark.parametrize("depth", ["cnn", "explicit"])
def test_flowmap_config_is_a_valid_flowmap_config(depth):
    from flow3r_jax.flowmap import FlowMapConfig
    from flow3r_jax.reconstruct import _read_config

    defaults, fields = _read_config([f"--config=configs/flowmap.py:depth={depth},steps=300", "--config.flowmap.lr=1e-4", "--config.flowmap.focal_regression_after=0"])
    assert defaults["steps"] == 300 and defaults["explicit_depth"] == (depth == "explicit")
    assert set(fields) <= {f.name for f in dataclasses.fields(FlowMapConfig)}
    make = FlowMapConfig.explicit_depth if depth == "explicit" else FlowMapConfig
    cfg = make(**fields, steps=defaults["steps"])
    assert cfg.lr == 1e-4 and cfg.focal_regression_after is None and cfg.depth == depth
    # The config's numbers are FlowMapConfig's (FlowMap's), but for the overrides above.
    reference = dataclasses.asdict(make(steps=300))
    assert {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("lr", "focal_regression_after")} == {k: v for k, v in reference.items() if k not in ("lr", "focal_regression_after")}


def test_reconstruct_reads_the_config_and_flags_win(tmp_path, capsys):
    """The config's input reaches reconstruct (a missing file is reported); --input wins."""
    from flow3r_jax.reconstruct import _split_config_args, main

    config_args, rest = _split_config_args(["--config", "configs/flowmap.py:steps=5", "--config.input", "/nope.mp4", "--out", "o", "--config.frames=4"])
    assert config_args == ["--config=configs/flowmap.py:steps=5", "--config.input=/nope.mp4", "--config.frames=4"] and rest == ["--out", "o"]
    out = str(tmp_path / "out")
    assert main(["--config=configs/flowmap.py:steps=5", "--config.input=/no/such/video.mp4", "--out", out]) == 2
    assert "/no/such/video.mp4" in capsys.readouterr().err
    assert main(["--config=configs/flowmap.py", "--config.input=/no/such/video.mp4", "--input", "/other/missing", "--out", out]) == 2
    assert "/other/missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--config=configs/flowmap.py", "--config.no_such_field=1", "--out", out])
