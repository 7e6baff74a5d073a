#!/usr/bin/env bash
# `make wheel-test`: installs the built abi3 wheel (dist/*.whl) into a fresh virtual environment
# under the oldest and the newest CPython the project supports, and runs, from outside the
# repository, tests/scripts/wheel_smoke.py and `kafka-ml demo` on the embedded cluster. Only
# numpy comes with the wheel: nothing of the source tree or the dev extras is importable.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
wheels=("$repo"/dist/*-abi3-*.whl)
[[ -f "${wheels[0]}" ]] || { echo "no abi3 wheel in $repo/dist: run make wheel" >&2; exit 1; }
[[ ${#wheels[@]} -eq 1 ]] || { echo "more than one wheel in $repo/dist: ${wheels[*]}" >&2; exit 1; }

interpreter() {  # the newest installed CPython $1.x: pyenv's, else one on PATH
    local found
    found="$(ls -d "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/"$1".*/bin/python"$1" 2>/dev/null | sort -V | tail -1 || true)"
    [[ -n "$found" ]] || found="$(command -v "python$1" || true)"
    [[ -n "$found" ]] || { echo "CPython $1 not found (pyenv install $1, or put python$1 on PATH)" >&2; exit 1; }
    echo "$found"
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for version in 3.10 3.13; do
    python="$(interpreter "$version")"
    echo "== $("$python" --version) ($python): ${wheels[0]##*/}"
    "$python" -m venv "$work/venv-$version"
    "$work/venv-$version/bin/pip" install -q --disable-pip-version-check "${wheels[0]}"
    (cd "$work" && "$work/venv-$version/bin/python" "$repo/tests/scripts/wheel_smoke.py" "$repo")
    (cd "$work" && "$work/venv-$version/bin/kafka-ml" demo)
done
