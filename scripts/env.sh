#!/usr/bin/env bash
# Create (or reuse) the project's Python environment and print its folder.
#
#   scripts/env.sh [EXTRAS]     EXTRAS: dev (tests; default), book, "dev,vision", ...
#
# Where the environment lives:
#   $FROG_VENV if set; otherwise, under CI (CI=true), a cache folder outside the clone keyed by a hash
#   of the dependency spec (so clean clones reuse it); otherwise .venv/ at the repository root.
# It is (re)installed when the dependency spec (pyproject.toml, this script) changes.
# $FROG_TORCH picks the torch requirement installed first (default: the CPU wheel torch==2.13.0;
# with the `vision` extra: torch==2.14.1 torchvision==0.29.1).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
extras=${1:-dev}
python=${FROG_PYTHON:-python3}
spec_hash=$(cat "$root/pyproject.toml" "$root/scripts/env.sh" | sha256sum | cut -c1-16)
if [ -n "${FROG_VENV:-}" ]; then
  venv=$FROG_VENV
elif [ -n "${CI:-}" ]; then
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/frog-companion/venv-$spec_hash"
else
  venv="$root/.venv"
fi
case ",$extras," in
  *,vision,*) torch_req=${FROG_TORCH:-"torch==2.14.1 torchvision==0.29.1"} ;;
  *) torch_req=${FROG_TORCH:-"torch==2.13.0"} ;;
esac
stamp="$venv/.frog-env-$(echo "$extras" | tr ',' '_')-$spec_hash"
if [ ! -f "$stamp" ]; then
  echo "scripts/env.sh: preparing $venv [$extras]" >&2
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install -q $torch_req >&2
  "$venv/bin/python" -m pip install -q -e "$root[$extras]" >&2
  touch "$stamp"
else
  # the environment may have been made for another checkout: point frogcore at this one (~3 s).
  # Ask from / : run from here, `python -c` would find ./frogcore through the working directory and
  # hide an install that points at another checkout (what kernels and subprocesses really import).
  frogcore_home() {
    (cd / && "$venv/bin/python" -c 'import frogcore, os; print(os.path.dirname(os.path.dirname(frogcore.__file__)))' 2>/dev/null) || true
  }
  loc=$(frogcore_home)
  if [ "$loc" != "$root" ]; then
    "$venv/bin/python" -m pip install -q --no-deps -e "$root" >&2
    loc=$(frogcore_home)
    if [ "$loc" != "$root" ]; then
      echo "scripts/env.sh: $venv still imports frogcore from $loc, not $root; remove $venv and rerun" >&2
      exit 1
    fi
  fi
fi
echo "$venv"
