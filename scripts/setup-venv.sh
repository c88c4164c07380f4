# Sourced by scripts/run and scripts/test: makes .venv with the package installed.
# Usage: setup_venv EXTRAS   (EXTRAS is "" or "dev")
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

setup_venv() {
  local extras="${1:-}"
  local py="${PYTHON:-python3}"
  command -v "$py" >/dev/null 2>&1 || _need_root_or_say python3 "Python 3.11 or newer"
  if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "optionsfeed: needs Python 3.11 or newer; $("$py" --version) found. Set PYTHON=/path/to/python3.11+." >&2
    exit 1
  fi
  if [ ! -x .venv/bin/python ]; then
    if ! "$py" -m venv .venv >/dev/null 2>&1; then
      rm -rf .venv
      local ver
      ver=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      _need_root_or_say "python${ver}-venv" "Python's venv module"
      "$py" -m venv .venv
    fi
  fi
  # Reinstall only when pyproject.toml (the dependency list) changed.
  local want stamp=".venv/.optionsfeed-installed"
  want="$(sha256sum pyproject.toml | cut -c1-16)-${extras}"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "optionsfeed: installing dependencies into .venv" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >&2
    if [ -n "$extras" ]; then
      .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${extras}]" >&2
    else
      .venv/bin/python -m pip install -q --disable-pip-version-check -e . >&2
    fi
    echo "$want" > "$stamp"
  fi
}
