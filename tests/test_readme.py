"README.md is generated from nbs/index.ipynb, and holds the test command that CI runs."
import re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_in_step_with_index():
    r = subprocess.run([sys.executable, "tools/make_readme.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_readme_test_command_is_the_one_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    cmd = re.search(r"TEST_CMD='([^']+)'", ci).group(1)
    assert cmd in (ROOT / "README.md").read_text()
