# Sourced by scripts/run and scripts/test: makes .venv exactly as uv.lock says.
# Usage: setup_venv run|test
#   run   the runtime dependencies (packages that are already there are left alone)
#   test  the runtime and development dependencies, exactly the lock's (others removed)
set -euo pipefail

_need_root_or_say() {
  # $1: Debian package, $2: what it is for
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "optionsfeed: installing Debian package $1 ($2)" >&2
    if [ ! -f /tmp/.optionsfeed-apt-updated ]; then
      apt-get update -qq >&2 && touch /tmp/.optionsfeed-apt-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >&2
  else
    echo "optionsfeed: $2 is missing. Install the Debian package '$1' (sudo apt-get install $1) and run this again." >&2
    exit 1
  fi
}

# uv itself lives in .uv/ (a small venv of its own), installed by pip from pinned hashes,
# so that no machine depends on whichever uv happens to be on its PATH.
_setup_uv() {
  local py="$1" want
  want="$(sha256sum scripts/uv-requirements.txt | cut -c1-16)"
  if [ -x .uv/bin/uv ] && [ "$(cat .uv/.stamp 2>/dev/null)" = "$want" ]; then
    return
  fi
  rm -rf .uv
  if ! "$py" -m venv .uv >/dev/null 2>&1; then
    rm -rf .uv
    local ver
    ver=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    _need_root_or_say "python${ver}-venv" "Python's venv module"
    "$py" -m venv .uv
  fi
  echo "optionsfeed: installing uv (pinned, from hashes) into .uv" >&2
  .uv/bin/python -m pip install -q --disable-pip-version-check --require-hashes \
    --only-binary :all: -r scripts/uv-requirements.txt >&2
  echo "$want" > .uv/.stamp
}

setup_venv() {
  local mode="${1:-run}"
  local py="${PYTHON:-python3}"
  command -v "$py" >/dev/null 2>&1 || _need_root_or_say python3 "Python 3.11 or newer"
  if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "optionsfeed: needs Python 3.11 or newer; $("$py" --version) found. Set PYTHON=/path/to/python3.11+." >&2
    exit 1
  fi
  _setup_uv "$py"
  # Never a Python that uv downloads itself: the one found above, or PYTHON.
  export UV_PYTHON_DOWNLOADS=never UV_PYTHON="$py"
  # --locked: install exactly uv.lock, and fail (rather than re-resolve) when pyproject.toml
  # no longer matches it. A no-op in well under a second when .venv is already right.
  if [ "$mode" = test ]; then
    .uv/bin/uv sync --quiet --locked
  else
    .uv/bin/uv sync --quiet --locked --no-dev --inexact
  fi
}
