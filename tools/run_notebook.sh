#!/usr/bin/env bash
# Execute a notebook in place, clean it for committing (nbdev_clean, no widget state) and export the package.
# usage: tools/run_notebook.sh nbs/06_generation.ipynb [more notebooks...]
set -euo pipefail
cd "$(dirname "$0")/.."
for nb in "$@"; do
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} HF_HUB_OFFLINE=1 jupyter nbconvert --to notebook --execute --inplace \
    --ExecutePreprocessor.timeout=1200 "$nb"
  python3 - "$nb" <<'PY'
import json, sys
sys.path.insert(0, "tools"); from nb_outputs import merge_streams
p = sys.argv[1]; nb = json.load(open(p)); changed = nb.get("metadata", {}).pop("widgets", None) is not None
for cell in nb["cells"]:
    if "outputs" in cell:
        merged = merge_streams(cell["outputs"]); changed |= len(merged) != len(cell["outputs"]); cell["outputs"] = merged
if changed: open(p, "w").write(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
PY
  nbdev_clean --fname "$nb"
done
nbdev_export
[ -f nbs/index.ipynb ] && python3 tools/make_readme.py
