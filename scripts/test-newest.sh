#!/usr/bin/env bash
# The tests against the newest releases pyproject.toml allows (not the pinned constraints.txt),
# in a throwaway virtual environment: to learn whether newer releases still work before
# constraints.txt moves to them. Not part of CI. Arguments go to pytest (e.g. -n 2, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3.11 -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install -q --no-cache-dir -e ".[test]"
echo "Releases that differ from constraints.txt (< pinned, > newest):"
diff <(grep -v '^#' constraints.txt) <("$scratch/venv/bin/pip" freeze --exclude-editable) \
    | grep '^[<>]' || echo "  none: constraints.txt already has the newest"
"$scratch/venv/bin/ruff" check .
"$scratch/venv/bin/python" -m pytest -q "$@"
