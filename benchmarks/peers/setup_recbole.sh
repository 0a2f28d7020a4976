#!/usr/bin/env bash
# Create the RecBole peer-benchmark virtual environment (idempotent).
#
#   bash benchmarks/peers/setup_recbole.sh
#
# The venv lives in benchmarks/peers/.venv-recbole (git-ignored) and is separate from recstack's own
# environment: recstack never imports RecBole. Torch is the CPU build (torch==2.13.0+cpu, found through
# pip's configured find-links); it is pinned in a constraints file so no later step can swap in a CUDA
# build. RecBole is installed with --no-deps: its requirements pull in ray (only used by
# recbole.quick_start / hyper-parameter tuning, which we do not use), so we install the packages the
# API path (config, data, model, trainer, utils) imports ourselves.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${HERE}/.venv-recbole"
PY="${PYTHON:-python3}"

TORCH_VERSION="2.13.0"
RECBOLE_VERSION="1.2.1"

if [[ ! -x "${VENV}/bin/python" ]]; then
    echo "[setup_recbole] creating ${VENV}"
    "${PY}" -m venv "${VENV}"
fi
VPY="${VENV}/bin/python"

# Fast path: everything already importable at the right versions.
if "${VPY}" - <<EOF 2>/dev/null
import torch, recbole, numpy, pandas
assert torch.__version__.split("+")[0] == "${TORCH_VERSION}" and not torch.version.cuda, torch.__version__
assert recbole.__version__ == "${RECBOLE_VERSION}", recbole.__version__
assert int(numpy.__version__.split(".")[0]) < 2, numpy.__version__
import recbole.config, recbole.data, recbole.trainer, recbole.utils  # noqa: F401
import recbole.model.sequential_recommender.sasrec  # noqa: F401
EOF
then
    echo "[setup_recbole] ${VENV} is already set up"
    exit 0
fi

CONSTRAINTS="$(mktemp)"
trap 'rm -f "${CONSTRAINTS}"' EXIT
cat > "${CONSTRAINTS}" <<EOF
torch==${TORCH_VERSION}+cpu
numpy<2
pandas<2.3
setuptools<81
EOF

PIP=("${VPY}" -m pip install --disable-pip-version-check -c "${CONSTRAINTS}")

"${PIP[@]}" "setuptools<81" wheel
# CPU torch only: the '+cpu' local version cannot be satisfied by a CUDA wheel from PyPI.
"${PIP[@]}" "torch==${TORCH_VERSION}+cpu"
# What RecBole's API path imports (recbole/utils, trainer, data, evaluator), minus ray.
"${PIP[@]}" \
    "numpy<2" "pandas<2.3" "scipy>=1.6" "scikit-learn>=0.23.2" "tqdm>=4.48.2" "pyyaml>=5.1" \
    "colorlog==4.7.2" "colorama==0.4.4" "tensorboard>=2.5" "texttable>=0.9" "tabulate>=0.8.10" \
    "psutil>=5.9" "thop>=0.1.1.post2207130030"
"${PIP[@]}" --no-deps "recbole==${RECBOLE_VERSION}"

"${VPY}" - <<'EOF'
import numpy, pandas, torch, recbole
import recbole.config, recbole.data, recbole.trainer, recbole.utils  # noqa: F401
import recbole.model.sequential_recommender.sasrec  # noqa: F401
assert not torch.version.cuda, f"CUDA torch installed: {torch.__version__}"
print(f"[setup_recbole] ok: recbole {recbole.__version__}, torch {torch.__version__}, "
      f"numpy {numpy.__version__}, pandas {pandas.__version__}")
EOF
