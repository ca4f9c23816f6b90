#!/usr/bin/env bash
# The two set-up commands of the README:
#   ./run.sh demo   creates .venv/ if missing, installs flow3r_jax, runs the main job on built-in data
#                   (the quickstart, launch/quickstart.py; `./run.sh demo reconstruct`: reconstruct alone)
#   ./run.sh test   creates .venv/ if missing, installs flow3r_jax[test,...], runs the test suite
# Extra arguments after `test` go to pytest (e.g. ./run.sh test -k procrustes -x).
# Set PYTHON to choose the interpreter (CPython 3.11 or 3.12 is required).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

find_python() {
  for cand in "${PYTHON:-}" python3.11 python3.12 python3 python; do
    [ -n "$cand" ] || continue
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' 2>/dev/null; then
      echo "$cand"; return 0
    fi
  done
  echo "run.sh: CPython 3.11 or 3.12 not found (set PYTHON=/path/to/python3.11 or python3.12)" >&2
  return 1
}

# Installs `.[extras]` into .venv unless the same setup.py and extras were installed already.
ensure_env() {
  local extras="$1"
  if [ ! -x .venv/bin/python ]; then
    local py; py=$(find_python)
    echo "run.sh: creating .venv with $py" >&2
    "$py" -m venv .venv
  fi
  local stamp_file=.venv/.flow3r-install-stamp
  local want; want="$(cat setup.py | sha256sum | cut -c1-16)"
  if [ -f "$stamp_file" ] && grep -q "^$want " "$stamp_file" && grep -qw -- "$extras" "$stamp_file"; then
    return 0
  fi
  echo "run.sh: installing flow3r_jax[$extras] (pinned versions, setup.py)" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[$extras]"
  .venv/bin/python -m pip check >&2
  .venv/bin/python -c "import flow3r_jax"
  echo "$want $extras" >> "$stamp_file"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  demo)
    ensure_env "viz"
    if [ "${1:-}" = "reconstruct" ]; then
      # reconstruct alone on a rendered video (no training): ./run.sh demo reconstruct [--demo-steps N]
      shift
      exec .venv/bin/python -m flow3r_jax.reconstruct --demo outputs/demo "$@"
    fi
    # the whole system: data -> two-stage training on 8 fake CPU devices -> eval -> reconstruct -> report
    exec .venv/bin/python -m launch.quickstart --out outputs/quickstart "$@"
    ;;
  test)
    ensure_env "test,convert,beam,viz"
    # --durations: the slowest tests are listed above the summary line (the suite must stay under 25 min);
    # --no-loadscope-reorder: files go to the workers longest first (tests/conftest.py, _LONGEST_FIRST)
    # OPENBLAS_NUM_THREADS=1: two workers share two cores, and OpenBLAS's threads spin while they
    # wait (the sparse solver's 48-frame test clip: 99 s with its default threads next to a busy
    # worker, 35 s with one; 23 s either way alone). Read when NumPy loads, so set here.
    export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
    exec .venv/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -q --durations=15 "$@"
    ;;
  *)
    echo "usage: ./run.sh demo [--fresh | --quick] | demo reconstruct [--demo-steps N] | test [pytest args]" >&2
    exit 2
    ;;
esac
