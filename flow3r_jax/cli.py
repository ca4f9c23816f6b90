"""One command-line style for every flow3r_jax command.

Options are spelled `--snake_case` (the absl / ml_collections style of `launch.train` and
`launch.eval`); the `--kebab-case` spelling of every option is accepted as an alias, so older command
lines keep working. Every option must carry help text (checked when it is defined), and the usage
line names the module (`python -m flow3r_jax.reconstruct`).

`ArgumentParser` is argparse with those rules; `normalize_flag_spelling` gives absl entry points the
same aliases (`app.run(main, flags_parser=absl_flags_parser)`).

Both also call `quiet_platform_probing()`: when JAX looks for its backends it logs, at INFO, one
"Unable to initialize backend 'tpu': ... libtpu.so ..." line per platform it probes and does not
find, which every command that logs at INFO (reconstruct, launch.eval, the converter) would
print on a CPU-only machine as if something were wrong. Only those INFO records are dropped;
JAX's warnings (a GPU or TPU present but its backend failing) and errors (a platform asked for in
JAX_PLATFORMS that fails) still show.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Iterable, Sequence

__all__ = ["ArgumentParser", "absl_flags_parser", "normalize_flag_spelling", "option_spellings", "quiet_platform_probing"]

_PROBE_LOGGER = "jax._src.xla_bridge"


class _DropPlatformProbes(logging.Filter):
    """Drops JAX's INFO "Unable to initialize backend '<platform>'" records (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno < logging.WARNING and str(record.msg).startswith("Unable to initialize backend"))


def quiet_platform_probing() -> None:
    """Silences JAX's INFO lines about platforms it probed and did not find (idempotent)."""
    logger = logging.getLogger(_PROBE_LOGGER)
    if not any(isinstance(f, _DropPlatformProbes) for f in logger.filters):
        logger.addFilter(_DropPlatformProbes())

_LONG = re.compile(r"^--([A-Za-z][A-Za-z0-9_-]*)(=.*)?$", re.S)


def _snake(name: str) -> str:
    return name.replace("-", "_")


def normalize_flag_spelling(argv: Sequence[str], known: Iterable[str] | None = None) -> list[str]:
    """Rewrites `--some-flag[=v]` as `--some_flag[=v]`.

    Only tokens before a bare `--` are touched. With `known` (the option names, without the leading
    dashes) a token that already is a known spelling stays as it is, and only rewrites that give a
    known name are made, so a value that happens to start with `--` is left alone.
    """
    known_set = None if known is None else {k.lstrip("-") for k in known}
    out: list[str] = []
    rest = False
    for tok in argv:
        if rest or tok == "--":
            rest = True
            out.append(tok)
            continue
        m = _LONG.match(tok)
        if m and "-" in m.group(1) and (known_set is None or m.group(1) not in known_set):
            name = _snake(m.group(1))
            if known_set is None or name in known_set:
                tok = f"--{name}{m.group(2) or ''}"
        out.append(tok)
    return out


def _checked_names(prog: str, names: tuple, kwargs: dict) -> tuple:
    """The project's rules for one option: snake-case long names (an alias given in both spellings
    collapses) and help text required (`argparse.SUPPRESS` counts as help for a positional)."""
    if names and all(n.startswith("-") for n in names):
        names = tuple(f"--{_snake(n[2:])}" if n.startswith("--") else n for n in names)
        names = tuple(dict.fromkeys(names))
        if not kwargs.get("help"):
            raise ValueError(f"{prog}: option {names[0]} has no help text")
    elif names and not kwargs.get("help") and kwargs.get("help") is not argparse.SUPPRESS:
        raise ValueError(f"{prog}: argument {names[0]} has no help text")
    return names


def _prog_of(container) -> str:
    return getattr(container, "prog", None) or getattr(container, "_prog", "")


class _Rules:
    """The project's option rules for a parser and for every group made from it (argparse has
    no public hook for its groups, hence the subclasses of its private ones)."""

    def add_argument(self, *names, **kwargs):
        return super().add_argument(*_checked_names(_prog_of(self), names, kwargs), **kwargs)

    def add_argument_group(self, *args, **kwargs):  # nesting (deprecated by argparse) keeps the rules
        group = _ArgumentGroup(self, *args, **kwargs)
        self._action_groups.append(group)
        return group

    def add_mutually_exclusive_group(self, **kwargs):
        group = _MutuallyExclusiveGroup(self, **kwargs)
        self._mutually_exclusive_groups.append(group)
        return group


class _ArgumentGroup(_Rules, argparse._ArgumentGroup):
    """An argument group whose options follow the same rules as the parser's own."""

    def __init__(self, container, *args, **kwargs):
        super().__init__(container, *args, **kwargs)
        self._prog = _prog_of(container)


class _MutuallyExclusiveGroup(_Rules, argparse._MutuallyExclusiveGroup):
    """A mutually exclusive group whose options follow the same rules as the parser's own."""

    def __init__(self, container, **kwargs):
        super().__init__(container, **kwargs)
        self._prog = _prog_of(container)


class ArgumentParser(_Rules, argparse.ArgumentParser):
    """argparse.ArgumentParser with the project's flag rules (see the module docstring).

    `module` ("flow3r_jax.reconstruct") sets the usage line to `python -m flow3r_jax.reconstruct`.
    """

    def __init__(self, *args, module: str | None = None, **kwargs):
        if module is not None and "prog" not in kwargs:
            kwargs["prog"] = f"python -m {module}"
        super().__init__(*args, **kwargs)
        quiet_platform_probing()

    def parse_known_args(self, args=None, namespace=None):
        import sys

        argv = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(normalize_flag_spelling(argv, option_spellings(self)), namespace)


def option_spellings(parser: argparse.ArgumentParser) -> set[str]:
    """The long option names of `parser` (and its subparsers), without the leading dashes."""
    names: set[str] = set()
    for action in parser._actions:  # argparse has no public accessor for its actions
        names.update(s[2:] for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                names |= option_spellings(sub)
    return names


def absl_flags_parser(argv: list[str]) -> list[str]:
    """An absl `flags_parser` that accepts the kebab-case spelling of every defined flag
    (and of its boolean negation, `--no-follow` for `--nofollow`)."""
    from absl import flags

    quiet_platform_probing()
    FLAGS = flags.FLAGS
    names = set(FLAGS)
    names |= {f"no{n}" for n in names} | {f"no_{n}" for n in names}
    argv = argv[:1] + [t.replace("--no_", "--no", 1) if t.startswith("--no_") and t[5:].split("=")[0] in FLAGS else t
                       for t in normalize_flag_spelling(argv[1:], names)]
    from absl import app

    return app.parse_flags_with_usage(argv)  # a bad flag: absl's one-line message and exit 1, no traceback
