#!/usr/bin/env bash
# Build the wheel and run the main job from it in a fresh virtual environment.
#
#   bash scripts/check_wheel.sh            # about 2-4 minutes on 2 CPU cores, network for PyPI
#
# Not part of .ci/run (it installs every dependency into a new environment). It checks:
# - `python -m build --wheel` builds rnnkit-VERSION-py3-none-any.whl, VERSION = rnnkit.__version__;
# - the wheel holds rnnkit/py.typed and the bundled corpus rnnkit/data/corpora/tinyshakespeare.txt;
# - in a plain venv (no system site-packages), `pip install torch==2.13.0 WHEEL` installs it, and
#   `rnnkit train charlm --steps 3` runs from a folder outside the checkout (so the source tree
#   cannot stand in for the installed package) and writes a checkpoint;
# - the installed package reports the same version and lies in the venv, not in the checkout.
# Set KEEP=1 to keep the temporary folder (printed at the start).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
if [[ "${KEEP:-0}" != 1 ]]; then trap 'rm -rf "$work"' EXIT; fi
echo "check_wheel: working in $work"

version="$(sed -n 's/^__version__ = "\([^"]*\)".*/\1/p' "$repo/rnnkit/__init__.py")"
[[ -n "$version" ]] || { echo "check_wheel: no __version__ in rnnkit/__init__.py" >&2; exit 1; }

# from $work: run in the checkout, the docs' build/ folder would shadow the `build` package
(cd "$work" && python -m build --wheel --outdir "$work/dist" "$repo") > "$work/build.log" 2>&1 \
    || { tail -20 "$work/build.log" >&2; exit 1; }
wheel="$work/dist/rnnkit-$version-py3-none-any.whl"
[[ -f "$wheel" ]] || { echo "check_wheel: expected $wheel, found: $(ls "$work/dist")" >&2; exit 1; }

contents="$(python -m zipfile -l "$wheel")"
for member in rnnkit/py.typed rnnkit/data/corpora/tinyshakespeare.txt rnnkit/cli.py; do
    grep -q "^$member " <<< "$contents" || { echo "check_wheel: $member missing from the wheel" >&2; exit 1; }
done
echo "check_wheel: $(basename "$wheel") holds py.typed and the bundled corpus"

python -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q torch==2.13.0 "$wheel"

cd "$work"
installed="$("$work/venv/bin/python" -c 'import rnnkit; print(rnnkit.__version__, rnnkit.__file__)')"
read -r installed_version installed_file <<< "$installed"
[[ "$installed_version" == "$version" ]] \
    || { echo "check_wheel: installed version $installed_version != $version" >&2; exit 1; }
[[ "$installed_file" == "$work/venv/"* ]] \
    || { echo "check_wheel: rnnkit imported from $installed_file, not the venv" >&2; exit 1; }

"$work/venv/bin/rnnkit" train charlm --steps 3 --run-dir "$work/run"
[[ -f "$work/run/checkpoint.json" ]] \
    || { echo "check_wheel: no checkpoint.json in the run folder" >&2; ls -R "$work/run" >&2; exit 1; }
echo "check_wheel: OK (rnnkit $version from the wheel trained charlm for 3 steps in a fresh venv)"
