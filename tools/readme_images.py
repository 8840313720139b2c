"""Draw the README's plots with the bundled model (nbs/images/*.png); the visualize notebook shows the same.

    python tools/readme_images.py
"""
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("MPLBACKEND", "Agg")
from pathlib import Path
from gpt2_learn.weights import load_bundled_model
from gpt2_learn.tokenizer import load_tokenizer
from gpt2_learn import viz

out = Path(__file__).resolve().parents[1] / "nbs" / "images"
model, tok = load_bundled_model(), load_tokenizer()
ids, logits = viz.next_token_logits(model, tok, "def fibonacci(n):\n    ")
viz.plot_strategy_grid(logits, tok, ids).savefig(out / "strategy_grid.png", dpi=80, bbox_inches="tight")
viz.plot_temperature_sweep(logits, tok).savefig(out / "temperature_sweep.png", dpi=80, bbox_inches="tight")
