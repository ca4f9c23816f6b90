#!/usr/bin/env bash
# Checks that the pinned dependency set of setup.py installs and works on each supported CPython.
#
#   tools/check_python_envs.sh                 # python3.11 and python3.12
#   tools/check_python_envs.sh python3.12      # one interpreter (a name on PATH or a path)
#
# For each interpreter: a fresh venv in a temporary directory, `pip install -e ".[EXTRAS]"` (the
# pins of setup.py), `pip check`, `import flow3r_jax` (printing the jax version and backend), then a
# quick pytest smoke run from the repository root. Prints one PASS / FAIL line per interpreter at
# the end and exits non-zero if any failed.
#
# Environment:
#   EXTRAS   extras to install                    (default: test,viz)
#   SMOKE    pytest arguments of the smoke run    (default: tests/geometry -q -x)
#   KEEP     a directory: keep the venvs there as KEEP/py3.11, KEEP/py3.12 instead of deleting them
#
# An interpreter that is not found is a failure, not a skip. With pyenv, one that is installed but
# not on PATH can be given as a path, e.g. /root/.pyenv/versions/3.12.1/bin/python3.12.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

EXTRAS="${EXTRAS:-test,viz}"
SMOKE="${SMOKE:-tests/geometry -q -x}"
[ "$#" -gt 0 ] || set -- python3.11 python3.12

# A name on PATH, else the newest pyenv installation of that version (pyenv shims answer "command
# not found" for versions that are installed but not selected).
resolve() {
  local want="$1"
  if [ -x "$want" ]; then echo "$want"; return 0; fi
  if command -v "$want" >/dev/null 2>&1 && "$want" -c 'import sys' >/dev/null 2>&1; then
    command -v "$want"; return 0
  fi
  local ver="${want#python}" root="${PYENV_ROOT:-$HOME/.pyenv}" found=""
  for d in "$root"/versions/"$ver".*; do
    [ -x "$d/bin/$want" ] && found="$d/bin/$want"
  done
  [ -n "$found" ] && echo "$found"
}

# check_one INTERPRETER BASE_DIR: the venv is BASE_DIR/pyX.Y.
check_one() {
  local want="$1" py
  py="$(resolve "$want")" || { echo "check_python_envs: $want not found" >&2; return 1; }
  local tag; tag="py$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  local venv="$2/$tag"
  rm -rf "$venv"
  echo "== $tag: $py -> $venv" >&2
  "$py" -m venv "$venv" || return 1
  "$venv/bin/python" -m pip install --quiet --upgrade pip || return 1
  echo "== $tag: pip install -e .[$EXTRAS]" >&2
  "$venv/bin/python" -m pip install --quiet -e ".[$EXTRAS]" || return 1
  echo "== $tag: pip check" >&2
  "$venv/bin/python" -m pip check || return 1
  "$venv/bin/python" -c 'import sys, jax, flow3r_jax; print(f"python {sys.version.split()[0]} flow3r_jax {flow3r_jax.__version__} jax {jax.__version__} backend {jax.default_backend()}")' || return 1
  echo "== $tag: pytest $SMOKE" >&2
  # shellcheck disable=SC2086  # SMOKE is a list of arguments
  "$venv/bin/python" -m pytest -p no:cacheprovider $SMOKE || return 1
}

results=()
status=0
for want in "$@"; do
  start=$SECONDS
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; base="$KEEP"; else base="$(mktemp -d)"; fi
  if check_one "$want" "$base"; then
    results+=("PASS $want ($((SECONDS - start)) s)")
  else
    results+=("FAIL $want ($((SECONDS - start)) s)"); status=1
  fi
  [ -n "${KEEP:-}" ] || rm -rf "$base"
done
printf '%s\n' "${results[@]}"
exit "$status"
