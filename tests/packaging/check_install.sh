#!/usr/bin/env bash
# Install check (make check-install, run by CI after the test suite):
# `pip install .` (a built wheel, not editable, dependencies resolved from pyproject's ranges)
# into a fresh virtual environment that already holds other scientific packages at versions
# other than requirements.lock's. It must
#   * keep every pre-installed package at its version (kernelfield's ranges admit them),
#   * leave a consistent environment (pip check),
#   * import, report its version, ship py.typed, run its CLI and solve a tiny model.
# Uses pip's cache; about 2 minutes with a warm cache.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Other scientific packages, each at a release other than the lock's (lock: numpy 2.4.6,
# scipy 1.17.1, pandas 3.1.1, matplotlib 3.11.2, scikit-learn 1.9.1), plus one kernelfield
# does not use at all.
preinstalled=(
    "numpy==2.3.5"
    "scipy==1.16.3"
    "pandas==2.3.3"
    "matplotlib==3.10.8"
    "scikit-learn==1.8.0"
    "networkx==3.5"
)

echo "check-install: fresh venv in $work"
"$python" -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
"$py" -m pip install --quiet "${preinstalled[@]}"
"$py" -m pip freeze --all > "$work/before.txt"

echo "check-install: pip install $root"
"$py" -m pip install --quiet "$root"
"$py" -m pip freeze --all > "$work/after.txt"

status=0
for pin in "${preinstalled[@]}"; do
    name="${pin%%==*}"
    before="$(grep -i "^${name}==" "$work/before.txt" || true)"
    after="$(grep -i "^${name}==" "$work/after.txt" || true)"
    if [[ "$before" != "$pin" || "$after" != "$pin" ]]; then
        echo "check-install: FAIL $name changed: wanted $pin, before '$before', after '$after'"
        status=1
    fi
done
"$py" -m pip check || status=1

# Run outside the source tree so the installed wheel, not src/, is imported.
cd "$work"
"$py" - "$root" <<'PY' || status=1
import sys, pathlib, tomllib
import numpy as np
import kernelfield as kf

root = pathlib.Path(sys.argv[1])
package = pathlib.Path(kf.__file__).resolve().parent
assert root not in package.parents, f"imported from the source tree: {package}"
expected = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
assert kf.__version__ == expected, (kf.__version__, expected)
assert (package / "py.typed").is_file(), "py.typed missing from the installed package"

task = kf.tasks.endpoint_patterns(P=2, T=3, D=3, target_scale=1.0, seed=0)
sol = kf.solve(kf.Architecture.rnn(3), task, prior=kf.Prior(g=1.0), phi="linear", kappa=0.1)
C = np.asarray(sol.C)
assert sol.converged and C.dtype == np.float64 and np.all(np.isfinite(C)), (sol.converged, C.dtype)
print(f"check-install: kernelfield {kf.__version__} from {package}, numpy {np.__version__}, "
      f"linear RNN solved (S = {float(sol.S):.6f}, C {C.shape})")
PY
"$work/venv/bin/kernelfield" --version || status=1

if [[ $status -ne 0 ]]; then
    echo "check-install: FAILED"
    exit 1
fi
echo "check-install: passed"
