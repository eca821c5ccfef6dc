# Sourced by scripts/serve and scripts/test: makes .venv and installs the project into it.
# Re-installs only when pyproject.toml changed, so the commands stay quick after the first run.
set -euo pipefail
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "callback-ledger needs Python 3.11 or newer as '$PYTHON' (set PYTHON=...)" >&2
  exit 1
fi
extras=${1:-}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)${extras:+-$extras}"
if [ ! -f "$stamp" ]; then
  echo "installing callback-ledger${extras:+ [$extras]} into .venv ..." >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --config-settings editable_mode=compat -e ".${extras:+[$extras]}"
  touch "$stamp"
fi
