# Sourced by scripts/serve and scripts/test: makes .venv and installs into it the dependencies
# pinned with their hashes (requirements.lock, or requirements-dev.lock with the `dev` extra:
# exported from uv.lock by scripts/lock), then the project itself. Re-installs only when
# pyproject.toml or that lock changed, so the commands stay quick after the first run.
set -euo pipefail
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "callback-ledger needs Python 3.11 or newer as '$PYTHON' (set PYTHON=...)" >&2
  exit 1
fi
extras=${1:-}
lock=requirements${extras:+-$extras}.lock
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=".venv/.installed-$(cat pyproject.toml "$lock" | sha256sum | cut -c1-16)${extras:+-$extras}"
if [ ! -f "$stamp" ]; then
  echo "installing callback-ledger${extras:+ [$extras]} into .venv from $lock ..." >&2
  pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
  "${pip[@]}" --require-hashes -r "$lock"
  # The project alone: its dependencies are the lock's, installed above.
  "${pip[@]}" --no-deps --config-settings editable_mode=compat -e .
  touch "$stamp"
fi
