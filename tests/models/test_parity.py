"""Parity with the official PyTorch Flow3r (runs only when FLOW3R_PARITY_DUMP is set).

FLOW3R_PARITY_DUMP: one dump directory written by ../shared/tools/parity/official_dump.py, a
directory of such dumps, or several paths joined by os.pathsep. Each dump holds the official
model's (randomly initialised, perturbed) weights, inputs, outputs and, with --intermediates,
selected activations.

Outputs are compared with the SPEC targets (fp32, highest matmul precision). Intermediates are
compared stage by stage, each stage fed the *recorded* input of the official run, so a mismatch
points at one module rather than at everything downstream of it.
"""

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flow3r_jax.models.layers import layer_at
from flow3r_jax.models.dpt import bilinear_resize_align_corners, uv_embedding

TARGETS = {"points": 1e-4, "local_points": 1e-4, "camera_poses": 1e-5, "conf": 1e-5, "flow": 2e-6}


def _dumps():
    spec = os.environ.get("FLOW3R_PARITY_DUMP")
    if not spec:
        return []
    found = []
    for part in spec.split(os.pathsep):
        p = pathlib.Path(part)
        if (p / "io.npz").exists():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(d for d in p.iterdir() if (d / "io.npz").exists()))
    return found


DUMPS = _dumps()
pytestmark = pytest.mark.skipif(not DUMPS, reason="set FLOW3R_PARITY_DUMP to official parity dump(s) to run")


@pytest.fixture(scope="module", params=DUMPS, ids=[d.name for d in DUMPS])
def dump(request):
    from flow3r_jax.models.pretrained import load_pretrained

    d = request.param
    model = load_pretrained(str(d / "state_dict.safetensors"), "large")
    io = dict(np.load(d / "io.npz"))
    inter = dict(np.load(d / "intermediates.npz")) if (d / "intermediates.npz").exists() else None
    return model, io, inter


def test_outputs_match_official(dump):
    model, io, _ = dump
    images = jnp.asarray(io["images"].transpose(0, 1, 3, 4, 2))
    pairs = jnp.asarray(io["pair_indices"].astype(np.int32))
    graphdef, state = nnx.split(model)
    with jax.default_matmul_precision("highest"):
        out = jax.jit(lambda s, x, p: nnx.merge(graphdef, s)(x, p))(state, images, pairs)
    errors = {k: float(np.abs(np.asarray(out[k]) - io[k]).max()) for k in TARGETS}
    print("max abs differences:", errors)
    assert all(errors[k] <= TARGETS[k] for k in TARGETS), errors


def _close(name, got, ref, rel=2e-5):
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, (name, got.shape, ref.shape)
    err = np.abs(got - ref).max()
    bound = rel * max(1.0, float(np.abs(ref).max()))
    assert err <= bound, f"{name}: max abs diff {err:.3e} > {bound:.3e}"


def _nchw(x):
    return np.asarray(x).transpose(0, 2, 3, 1)


def test_intermediates_stage_by_stage(dump):
    model, io, rec = dump
    if rec is None:
        pytest.skip("dump has no intermediates.npz")
    cfg = model.cfg
    R = cfg.dec_registers
    images = io["images"].transpose(0, 1, 3, 4, 2)
    B, N, H, W, _ = images.shape
    h, w = H // 14, W // 14
    pairs = jnp.asarray(io["pair_indices"].astype(np.int32))
    x = (jnp.asarray(images.reshape(B * N, H, W, 3)) - jnp.asarray([0.485, 0.456, 0.406])) / jnp.asarray([0.229, 0.224, 0.225])

    with jax.default_matmul_precision("highest"):
        enc = model.encoder
        _close("encoder.patch_embed", enc.embed_patches(x), rec["encoder.patch_embed"])
        tokens = enc.prepare_tokens(jnp.asarray(rec["encoder.patch_embed"]), h, w)
        _close("encoder.blocks.0", layer_at(enc.blocks, 0)(tokens), rec["encoder.blocks.0"])
        _close("encoder", enc.norm(jnp.asarray(rec["encoder.blocks.23"]))[:, 1 + cfg.enc_registers :], rec["encoder"])

        pos = jnp.asarray(np.concatenate([np.zeros((R, 2)), np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 2) + 1]).astype(np.int32))[None]
        regs = jnp.broadcast_to(model.decoder.register_token[...][0], (B * N, R, cfg.dec_dim))
        first = layer_at(model.decoder.pairs, 0)
        _close("decoder.0", first.frame_step(jnp.concatenate([regs, jnp.asarray(rec["encoder"])], 1), pos), rec["decoder.0"])
        _close("decoder.1", first.global_step(jnp.asarray(rec["decoder.0"]), pos, N).reshape(B, -1, cfg.dec_dim), rec["decoder.1"])
        last = layer_at(model.decoder.pairs, cfg.dec_depth // 2 - 1)
        _close("decoder.35", last.global_step(jnp.asarray(rec["decoder.34"]), pos, N).reshape(B, -1, cfg.dec_dim), rec["decoder.35"])
        hidden = jnp.concatenate([jnp.asarray(rec["decoder.34"]), jnp.asarray(rec["decoder.35"]).reshape(B * N, -1, cfg.dec_dim)], -1)
        _close("decoder (full)", model.decoder(jnp.asarray(rec["encoder"]), N, h, w)[0], hidden, rel=1e-4)

        for name in ("point_decoder", "camera_decoder"):
            out, levels = getattr(model, name)(hidden, pos, intermediates=True)
            _close(name, out, rec[name])
            for i, lvl in enumerate(levels):
                _close(f"{name}.inter{i}", lvl, rec[f"{name}.inter{i}"])
        _close("conf_decoder", model.conf_decoder(hidden, pos), rec["conf_decoder"])
        _close("point_head", model.point_head(jnp.asarray(rec["point_decoder"])[:, R:], h, w), rec["point_head"])
        _close("conf_head", model.conf_head(jnp.asarray(rec["conf_decoder"])[:, R:], h, w), rec["conf_head"])

        fh = model.flow_head
        grids = []
        for lvl in range(4):
            sfx = "" if lvl == 0 else f"#{lvl}"
            pt = jnp.asarray(rec[f"point_decoder.inter{lvl}"])[:, R:].reshape(B, N, h * w, -1)
            cm = jnp.asarray(rec[f"camera_decoder.inter{lvl}"])[:, R:].reshape(B, N, h * w, -1)
            _close(f"flow_head.mlp{sfx}", fh.fuse(pt, cm, pairs).reshape(-1, h * w, cfg.head_dim), rec[f"flow_head.mlp{sfx}"])
            _close(f"flow_head.norm{sfx}", fh.norm(jnp.asarray(rec[f"flow_head.mlp{sfx}"])), rec[f"flow_head.norm{sfx}"])
            grids.append(jnp.asarray(rec[f"flow_head.norm{sfx}"]).reshape(-1, h, w, cfg.head_dim))
        dpt = fh.dpt
        levels = []
        for i, g in enumerate(grids):
            p = dpt.projects[i](g)
            _close(f"flow_head.projects.{i}", p, _nchw(rec[f"flow_head.projects.{i}"]))
            p = jnp.asarray(_nchw(rec[f"flow_head.projects.{i}"]))
            p = p + 0.1 * jnp.asarray(uv_embedding(h, w, p.shape[-1], W / H))
            r = dpt.resize_layers[i](p) if dpt.resize_layers[i] is not None else p
            _close(f"flow_head.resize_layers.{i}", r, _nchw(rec[f"flow_head.resize_layers.{i}"]))
            levels.append(dpt.layer_rn[i](jnp.asarray(_nchw(rec[f"flow_head.resize_layers.{i}"]))))
        sizes = [lv.shape[1:3] for lv in levels]
        out4 = dpt.refinenet[3](levels[3], size=sizes[2])
        _close("refinenet4", out4, _nchw(rec["flow_head.scratch.refinenet4"]))
        for k, skip, size in ((2, 2, sizes[1]), (1, 1, sizes[0]), (0, 0, None)):
            prev = jnp.asarray(_nchw(rec[f"flow_head.scratch.refinenet{k + 2}"]))
            _close(f"refinenet{k + 1}", dpt.refinenet[k](prev, levels[skip], size=size), _nchw(rec[f"flow_head.scratch.refinenet{k + 1}"]))
        _close("output_conv1", dpt.output_conv1(jnp.asarray(_nchw(rec["flow_head.scratch.refinenet1"]))), _nchw(rec["flow_head.scratch.output_conv1"]))
        o = bilinear_resize_align_corners(jnp.asarray(_nchw(rec["flow_head.scratch.output_conv1"])), (H, W))
        o = o + 0.1 * jnp.asarray(uv_embedding(H, W, o.shape[-1], W / H))
        _close("output_conv2", dpt.output_conv2b(jax.nn.relu(dpt.output_conv2a(o))), _nchw(rec["flow_head.scratch.output_conv2"]))
