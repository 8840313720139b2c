"""Write README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which cannot be installed here).

    python tools/make_readme.py          # write README.md
    python tools/make_readme.py --check  # exit 1 if README.md is not what index.ipynb gives
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render(nb_path: Path = ROOT / "nbs" / "index.ipynb") -> str:
    "Markdown cells as they are; code cells as ```python blocks followed by their text output."
    nb, parts = json.loads(nb_path.read_text()), []
    for cell in nb["cells"]:
        src = "".join(cell["source"]).strip()
        if cell["cell_type"] == "markdown": parts.append(src)
        elif cell["cell_type"] == "code" and src and not src.startswith("#| hide"):
            parts.append(f"```python\n{src}\n```")
            text = "".join("".join(o.get("text", "")) or "".join(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", []))
            if text.strip(): parts.append(f"```\n{text.rstrip()}\n```")
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    readme = ROOT / "README.md"
    if "--check" in sys.argv:
        ok = readme.exists() and readme.read_text() == render()
        print("README.md is in step with nbs/index.ipynb" if ok else "README.md differs from nbs/index.ipynb: run python tools/make_readme.py")
        sys.exit(0 if ok else 1)
    readme.write_text(render())
