"""Refresh the outputs of chosen cells of a notebook, keeping every other cell's committed outputs.

    python tools/refresh_outputs.py nbs/15_performance.ipynb                 # code cells that have no output yet
    python tools/refresh_outputs.py nbs/18_train.ipynb --cells 1a2b3c4d ...  # these cells (their ids)

For a notebook whose other outputs must stay as they were made: timings measured on another machine, or the results
of cells flagged in settings.ini's tst_flags (training, GPU runs), which are skipped here as `nbdev_test` skips them.
The notebook runs top to bottom (flagged cells skipped) and only the chosen cells take the new outputs; then
`nbdev_clean` and `nbdev_export`, as tools/run_notebook.sh does.
"""
import argparse, configparser, copy, os, re, subprocess, sys
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ExecutePreprocessor
sys.path.insert(0, str(Path(__file__).parent)); from nb_outputs import merge_streams

root = Path(__file__).resolve().parent.parent
ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("notebook", type=Path)
ap.add_argument("--cells", nargs="*", default=None, help="ids of the cells to refresh (default: code cells with no output)")
a = ap.parse_args()

ini = configparser.ConfigParser(); ini.read(root / "settings.ini")
flags = set(ini["DEFAULT"].get("tst_flags", "").replace("|", " ").split())
flagged = lambda src: any(re.match(rf"#\|\s*{re.escape(f)}\s*$", line.strip()) for line in src.splitlines() for f in flags)

nb = nbformat.read(a.notebook, as_version=4)
code = [c for c in nb.cells if c.cell_type == "code"]
chosen = {c.id for c in code if (c.id in a.cells if a.cells is not None else not c.outputs) and not flagged(c.source)}
if a.cells and (unknown := set(a.cells) - {c.id for c in code}): sys.exit(f"no code cell with id {', '.join(sorted(unknown))}")
if a.cells and (skipped := sorted(c.id for c in code if c.id in a.cells and flagged(c.source))):
    print(f"not refreshed (flagged in tst_flags, so skipped here): {', '.join(skipped)}")
if not chosen: sys.exit("nothing to refresh")

work = copy.deepcopy(nb)
for c in work.cells:
    if c.cell_type == "code" and flagged(c.source): c.source = ""         # skipped, as nbdev_test skips it
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("OMP_NUM_THREADS", "2")
ExecutePreprocessor(timeout=1200).preprocess(work, {"metadata": {"path": str(a.notebook.parent.resolve())}})

fresh = {c.id: c for c in work.cells if c.cell_type == "code"}
for c in code:
    if c.id not in chosen: continue
    c.outputs = merge_streams(fresh[c.id].outputs)
nbformat.write(nb, a.notebook)
print(f"refreshed {len(chosen)} cell(s): {', '.join(sorted(chosen))}")
subprocess.run(["nbdev_clean", "--fname", str(a.notebook)], check=True, cwd=root)
subprocess.run(["nbdev_export"], check=True, cwd=root)
if a.notebook.resolve() == (root / "nbs" / "index.ipynb").resolve(): subprocess.run([sys.executable, "tools/make_readme.py"], check=True, cwd=root)
