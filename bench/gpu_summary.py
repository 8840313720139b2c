"""Summarise a GPU check run (bench/results/gpu.json or a path) as the README's table, and check issue 7's targets.

    python bench/gpu_summary.py [path/to/gpu.json]

Per model, batch and mode: transformers, our graph without compiling, the fastest compile mode, its ratio to
transformers and the fraction of the memory floor it reaches; then each target with the measured figure.
"""
import json, sys
from pathlib import Path

path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results" / "gpu.json")
run = json.loads(path.read_text())
rows = run["bench"]
meta = run["meta"]


def pick(model, batch, mode, impl=None, best_compiled=False):
    cands = [r for r in rows if (r["model"], r["batch"], r["mode"]) == (model, batch, mode) and "fell_back" not in r]
    if best_compiled: cands = sorted((r for r in cands if r["impl"].startswith("graph+compile")), key=lambda r: -r["tok_s"])
    else: cands = [r for r in cands if r["impl"] == impl]
    return cands[0] if cands else None


print(f"{meta['gpu']}, torch {meta['torch']}, transformers {meta['transformers']}, {meta['date']}; "
      f"copy bandwidth {meta['copy_bandwidth_gb_s']} GB/s; generate's default compile mode: {meta.get('default_compile', '?')}\n")
print("| model | batch | mode | transformers tok/s | ours: graph | ours: fastest compile mode | tok/s | x transformers | memory floor reached |")
print("|---|---|---|---|---|---|---|---|---|")
seen = []
for r in rows:
    k = (r["model"], r["batch"], r["mode"])
    if k in seen: continue
    seen.append(k)
    hf, graph, best = pick(*k, impl="transformers"), pick(*k, impl="graph"), pick(*k, best_compiled=True)
    top = max([x for x in (graph, best) if x], key=lambda x: x["tok_s"], default=None)
    fmt = lambda x: f"{x['tok_s']:,.0f}" if x else "-"
    ratio = f"{top['tok_s'] / hf['tok_s']:.1f}x" if top and hf else "-"
    name = best["impl"][len("graph+compile("):-1] if best and best["impl"].startswith("graph+compile(") else (best["impl"] if best else "-")
    print(f"| {k[0]} | {k[1]} | {k[2]} | {fmt(hf)} | {fmt(graph)} | {name} | {fmt(best)} | {ratio} | {top['floor_fraction']:.0%} |" if top else
          f"| {k[0]} | {k[1]} | {k[2]} | {fmt(hf)} | - | - | - | - | - |")

print()
for r in rows:                                   # each token read on the CPU as it comes (the CLI's way), both sides
    if r["impl"] != "stream" or "fell_back" in r: continue
    hf = pick(r["model"], r["batch"], r["mode"], impl="transformers-stream")
    print(f"streamed, every token read: {r['model']} batch {r['batch']} {r['mode']}: ours {r['tok_s']:,.0f} tok/s ({r['ms_per_step']} ms a step)"
          + (f", transformers {hf['tok_s']:,.0f} tok/s: {r['tok_s'] / hf['tok_s']:.1f}x" if hf else ""))
g1, gx = (pick(m, 1, "greedy", best_compiled=True) for m in ("gpt2", "gpt2-xl"))
hf1 = pick("gpt2", 1, "greedy", impl="transformers")
default = meta.get("default_compile")
mem = {m["model"]: m for m in run.get("memory", []) if m.get("compile", default) == default and m.get("dtype", "float16") == "float16"
       and "fell_back" not in m}
checks = [
    ("gpt2 b1 greedy >= 2000 tok/s", g1 and g1["tok_s"] >= 2000, g1 and f"{g1['tok_s']:,.0f} ({g1['impl']})"),
    ("gpt2 b1 greedy >= 20x transformers", g1 and hf1 and g1["tok_s"] >= 20 * hf1["tok_s"], g1 and hf1 and f"{g1['tok_s'] / hf1['tok_s']:.1f}x"),
    ("gpt2-xl b1 greedy >= 350 tok/s", gx and gx["tok_s"] >= 350, gx and f"{gx['tok_s']:,.0f} ({gx['impl']})"),
    ("gpt2 generation peak memory <= 700 MB", "gpt2" in mem and mem["gpt2"]["peak_reserved_mb"] <= 700,
     "gpt2" in mem and f"peak allocated {mem['gpt2']['peak_allocated_mb']} MB, reserved {mem['gpt2']['peak_reserved_mb']} MB"),
]
for name, ok, got in checks: print(f"{'MET ' if ok else 'NOT MET'}  {name}: {got or 'not measured'}")
for m in run.get("memory", []):
    print(f"memory: {m['model']} {m.get('dtype', 'float16')} batch {m['batch']}, compile {m.get('compile')}: weights {m['weights_mb']} MB, "
          f"peak allocated {m['peak_allocated_mb']} MB, peak reserved {m['peak_reserved_mb']} MB, "
          f"device in use at the end {m.get('device_used_at_end_mb', '?')} MB (before the model: {m.get('device_used_before_model_mb', '?')} MB)"
          + (f"; FELL BACK to a slower path: {m['fell_back'][0]}" if "fell_back" in m else ""))
tests = {t["name"]: t["ok"] for t in run["tests"]}
for m, best in (("gpt2", g1), ("gpt2-xl", gx)):
    if best:
        ok = tests.get(f"fast path vs eager (fp32): {best['impl']}")
        print(f"fastest mode for {m} (batch 1 greedy): {best['impl']}; its fp32 test against the eager loop: "
              f"{'PASS' if ok else 'FAIL' if ok is False else 'not run'}")
for r in rows:
    if "fell_back" in r: print(f"left out, fell back to a slower path: {r['model']} b{r['batch']} {r['mode']} {r['impl']}: {r['fell_back'][0]}")
print("tests:", ", ".join(f"{t['name']}: {'PASS' if t['ok'] else 'FAIL'}" for t in run["tests"]))
