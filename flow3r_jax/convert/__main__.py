"""Convert an official checkpoint into a flow3r_jax model directory, then check it.

    python -m flow3r_jax.convert --input flow3r.bin --output checkpoints/flow3r_large
    python -m flow3r_jax.convert --input model.safetensors --output checkpoints/pi3   # pi^3: no flow head
    python -m flow3r_jax.convert --input flow3r.bin --output DIR --official_repo ~/src/flow3r   # + parity

The output directory (`config.json`, `params.safetensors`, `conversion.json`) is what
`--checkpoint` of launch.eval and flow3r_jax.reconstruct and `flow3r_jax.load_pretrained` take.
Printed: the conversion summary (tensors mapped, parameters, unused and missing keys), the round
trip (the directory loads back bit-identical, and re-exported equals the input file), our
outputs on a fixed 2-frame 112x154 input, and with `--official_repo` (a local checkout of
Kidrauh/flow3r; needs torch, the [convert] extra; nothing is downloaded) the differences to the
official PyTorch model on that input against the parity targets.

Exit status: 0 done; 1 a check failed (non-finite outputs, parity beyond the targets); 2 bad
input (missing, unreadable or foreign file, wrong --size, existing output).
"""

from __future__ import annotations

import argparse
import logging
import sys

from flow3r_jax.cli import ArgumentParser

PROG = "flow3r_jax.convert"


def _parser() -> ArgumentParser:
    p = ArgumentParser(module=PROG, description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, metavar="FILE", help="official checkpoint: flow3r.bin (torch) or .safetensors; a pi^3 model.safetensors or a DINOv2-reg encoder also work")
    p.add_argument("--output", required=True, metavar="DIR", help="the model directory to write (config.json, params.safetensors, conversion.json)")
    p.add_argument("--size", default="auto", choices=("auto", "tiny", "small", "base", "large"), help="model size of the checkpoint (default auto: read from its shapes)")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in --output")
    p.add_argument("--official_repo", metavar="DIR", default=None, help="a local checkout of Kidrauh/flow3r: also compare with the official PyTorch model on the fixed input (needs torch; large Flow3r checkpoints only)")
    p.add_argument("--skip_forward", action="store_true", help="skip running the converted model on the fixed input (conversion and round trip only)")
    p.add_argument("--verbose", action="store_true", help="also print the library's log lines (INFO)")
    return p


def _error(msg: str) -> int:
    print(f"python -m {PROG}: error: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from flow3r_jax.convert.checkpoint import convert_checkpoint
    from flow3r_jax.convert.official import ConversionError
    from flow3r_jax.convert.readers import CheckpointFormatError

    if args.official_repo is not None:  # fail before a long conversion
        from flow3r_jax.convert.parity import check_official_repo

        try:
            check_official_repo(args.official_repo)
        except (FileNotFoundError, ImportError) as err:
            return _error(str(err))
    try:
        result = convert_checkpoint(args.input, args.output, size=args.size, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, CheckpointFormatError, ConversionError, ImportError) as err:
        return _error(str(err))
    print(f"python -m {PROG}: converted")
    for line in result.summary_lines():
        print("  " + line)
    if args.skip_forward and not args.official_repo:
        return 0

    import numpy as np

    from flow3r_jax.convert import parity
    from flow3r_jax.models.pretrained import load_pretrained

    model = load_pretrained(args.output)
    images, pairs = parity.fixed_input()
    ours, lines = parity.forward_summary(model, images, pairs)
    del model
    print(f"forward on the fixed input ({images.shape[1]} frames {images.shape[2]}x{images.shape[3]}, seed 0, pairs {pairs[0].tolist()}):")
    for line in lines:
        print("  " + line)
    status = 0 if all(np.isfinite(v).all() for v in ours.values()) else 1
    if status:
        print(f"python -m {PROG}: the converted model gives non-finite outputs", file=sys.stderr)
    if args.official_repo is None:
        print("parity with the official PyTorch model: not run (give --official_repo DIR, a local checkout of Kidrauh/flow3r, with torch installed)")
        return status
    if result.kind != "flow3r" or result.size != "large":
        print(f"parity with the official PyTorch model: not possible: the official Flow3r() is the large model with a flow head; this checkpoint is a {result.kind} {result.size!r} one")
        return status
    from flow3r_jax.convert.readers import open_checkpoint

    theirs = parity.official_outputs(args.official_repo, open_checkpoint(args.input), images, pairs)
    ok, lines = parity.compare(ours, theirs)
    print(f"parity with the official PyTorch model ({args.official_repo}): {'within' if ok else 'BEYOND'} the targets")
    for line in lines:
        print("  " + line)
    return status if ok else 1


if __name__ == "__main__":
    sys.exit(main())
