"""flow3r_jax.cli: one flag spelling (snake case), kebab-case aliases, help text required."""

import pytest

from flow3r_jax.cli import ArgumentParser, normalize_flag_spelling


def _parser():
    p = ArgumentParser(module="flow3r_jax.example", description="x")
    p.add_argument("input", help="the input")
    p.add_argument("--frames-from", help="a list file")
    p.add_argument("--num_shards", type=int, default=1, help="shards")
    p.add_argument("--dry-run", action="store_true", help="do nothing")
    return p


def test_both_spellings_parse_to_the_same_option():
    p = _parser()
    a = p.parse_args(["in", "--frames-from", "l.txt", "--num-shards=3", "--dry_run"])
    b = p.parse_args(["in", "--frames_from=l.txt", "--num_shards", "3", "--dry-run"])
    assert vars(a) == vars(b) == {"input": "in", "frames_from": "l.txt", "num_shards": 3, "dry_run": True}


def test_help_shows_the_snake_case_spelling_and_the_module():
    text = _parser().format_help()
    assert text.startswith("usage: python -m flow3r_jax.example")
    assert "--frames_from" in text and "--frames-from" not in text


def test_an_option_without_help_is_refused_when_defined():
    p = ArgumentParser(module="m")
    with pytest.raises(ValueError, match="--steps has no help"):
        p.add_argument("--steps", type=int)


def test_unknown_options_and_values_are_left_alone():
    p = _parser()
    with pytest.raises(SystemExit):
        p.parse_args(["in", "--no-such-flag"])
    # a value that looks like a flag, after a known option taking one value, is not rewritten
    assert normalize_flag_spelling(["--frames_from", "--a-b"], {"frames_from"}) == ["--frames_from", "--a-b"]
    assert normalize_flag_spelling(["--", "--a-b"]) == ["--", "--a-b"]


def test_absl_flags_accept_kebab_case(tmp_path):
    import subprocess
    import sys

    code = (
        "from absl import app, flags\n"
        "from flow3r_jax.cli import absl_flags_parser\n"
        "flags.DEFINE_integer('cpu_devices', 0, 'n')\n"
        "flags.DEFINE_bool('follow', True, 'f')\n"
        "def main(argv):\n"
        "    print(flags.FLAGS.cpu_devices, flags.FLAGS.follow)\n"
        "app.run(main, flags_parser=absl_flags_parser)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, "--cpu-devices=4", "--no-follow"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "False"]


def test_groups_follow_the_same_rules():
    p = ArgumentParser(module="m")
    group = p.add_argument_group("outputs", "where results go")
    group.add_argument("--out-dir", help="the output directory")
    exclusive = p.add_mutually_exclusive_group()
    exclusive.add_argument("--fast-mode", action="store_true", help="fast")
    exclusive.add_argument("--slow_mode", action="store_true", help="slow")
    inner = group.add_mutually_exclusive_group()
    inner.add_argument("--keep-going", action="store_true", help="keep going")
    for container in (group, exclusive, inner):
        with pytest.raises(ValueError, match="m: option --undocumented has no help"):
            container.add_argument("--undocumented")
    args = p.parse_args(["--out-dir", "o", "--fast-mode", "--keep_going"])
    assert (args.out_dir, args.fast_mode, args.slow_mode, args.keep_going) == ("o", True, False, True)
    text = p.format_help()
    assert "--out_dir" in text and "--fast_mode" in text and "--out-dir" not in text and "--fast-mode" not in text
    with pytest.raises(SystemExit):  # the exclusion still holds with either spelling
        p.parse_args(["--fast-mode", "--slow-mode"])
