"""Speed and peak memory of the CLI's main job: load a model, generate 100 tokens on the CPU.

    python bench/bench_memory.py [--tokens 100] [--cases bundled gpt2-124m] [--json out.json]

Two models: (a) the small GPT-2 bundled with the package, (b) the 124M GPT-2 shape with random
weights (saved once as a .pth checkpoint in a temporary folder). Each case runs in a fresh process,
twice:
- through `TextGenerator` (what the CLI does: on the CPU it packs the weights for oneDNN, which keeps a
  packed copy of the head beside the token embedding), reading the resident set size (RSS) after the imports,
  after loading, after packing, the peak during loading and packing, and the peak during generation (Linux: VmHWM, reset after
  loading through /proc/self/clear_refs), and the tokens/s of 100 greedy tokens (EOS ignored);
- as the real command, `python -m gpt2_learn.inference ... --no_sample --max_new_tokens 100`, whose
  whole-process peak RSS comes from `getrusage` (ru_maxrss of the child), and its wall time from start to exit
  (imports, loading, packing, 100 tokens).
The reference guide claims ~500 MB for the model and ~700 MB in total (for the 124M model).
"""
import argparse, json, os, platform, resource, subprocess, sys, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
PROMPT = "The old man walked into the forest and found"
MB = 1024 * 1024


def proc_status(key: str) -> float | None:
    "A VmRSS/VmHWM line of /proc/self/status, in MB (None off Linux)."
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"): return int(line.split()[1]) * 1024 / MB
    except OSError: pass
    return None


def maxrss_mb(usage) -> float:
    return usage.ru_maxrss / (MB if sys.platform == "darwin" else 1024)   # bytes on macOS, KiB on Linux


def child(case: str, path: str | None, tokens: int) -> dict:
    "Runs in its own process: load like the CLI, generate, measure."
    import torch
    from gpt2_learn.config import InferenceConfig
    from gpt2_learn.inference import TextGenerator, _pack_if_cpu
    rss_import = proc_status("VmRSS")
    t = time.perf_counter()
    gen = TextGenerator(path, device="cpu", pack=False)                    # what TextGenerator(path) does, in two steps
    rss_plain = proc_status("VmRSS")
    _pack_if_cpu(gen.model)
    load_s = time.perf_counter() - t
    rss_loaded, hwm_load = proc_status("VmRSS"), proc_status("VmHWM")
    try: Path("/proc/self/clear_refs").write_text("5"); reset = True      # VmHWM := current RSS
    except OSError: reset = False
    cfg = InferenceConfig(max_new_tokens=tokens, do_sample=False, stream=False, eos_token_id=None)
    gen.generate_text(PROMPT, cfg)                                          # warm-up (first-call allocations)
    gen.generate_text(PROMPT, cfg)
    s = gen.last_stats
    m = gen.model
    from gpt2_learn.config import count_params                               # from the config: the CPU model is packed
    n_params = count_params(m.config)
    return {"case": case, "params_M": n_params / 1e6, "weights_MB": n_params * m.wte.weight.element_size() / MB,
            "config": m.config.to_dict(), "threads": torch.get_num_threads(), "load_s": load_s,
            "rss_after_import_MB": rss_import, "rss_after_load_unpacked_MB": rss_plain, "rss_after_load_MB": rss_loaded,
            "peak_during_load_MB": hwm_load,
            "peak_during_generation_MB": proc_status("VmHWM") if reset else None,
            "peak_process_MB": maxrss_mb(resource.getrusage(resource.RUSAGE_SELF)),
            "new_tokens": s.new_tokens, "gen_s": s.seconds, "tokens_per_s": s.tokens_per_s}


def cli_peak(path: str | None, tokens: int) -> dict:
    "The real command in a child process: its peak RSS and its own summary line."
    cmd = [sys.executable, "-m", "gpt2_learn.inference", "--prompt", PROMPT, "--no_sample", "--no_stream",
           "--max_new_tokens", str(tokens), "--device", "cpu"] + (["--model_path", path] if path else [])
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read().decode()
    _, status, usage = os.wait4(p.pid, 0)
    return {"cli_exit": os.waitstatus_to_exitcode(status), "cli_peak_MB": maxrss_mb(usage), "cli_wall_s": time.perf_counter() - t,
            "cli_summary": err.strip().splitlines()[-1:]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--cases", nargs="+", default=["bundled", "gpt2-124m"], choices=["bundled", "gpt2-124m"])
    ap.add_argument("--json")
    ap.add_argument("--child", nargs=2, metavar=("CASE", "PATH"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], None if a.child[1] == "-" else a.child[1], a.tokens))); return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in a.cases:
            if case == "bundled":
                from gpt2_learn.weights import bundled_model_path
                if not bundled_model_path().is_file(): print(f"skipping bundled: {bundled_model_path()} is missing", file=sys.stderr); continue
                path = None
            else:
                path = str(Path(tmp) / "gpt2-124m-random.pth")
                subprocess.run([sys.executable, "-c", "import torch, sys; from gpt2_learn.model import GPT2Model; from gpt2_learn.config import GPT2Config; "
                                "torch.manual_seed(0); GPT2Model(GPT2Config()).save_checkpoint(sys.argv[1])", path], check=True)
            out = subprocess.run([sys.executable, __file__, "--tokens", str(a.tokens), "--child", case, path or "-"],
                                 capture_output=True, text=True, check=True).stdout
            rows.append({**json.loads(out.strip().splitlines()[-1]), **cli_peak(path, a.tokens)})

    fmt = lambda x, f="{:.0f}": "n/a" if x is None else f.format(x)
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {rows[0]['threads'] if rows else '?'}; "
          f"fp32, greedy, prompt of 9 tokens, {a.tokens} new tokens\n")
    head = ["model", "params", "weights", "RSS after imports", "RSS after load", "RSS after packing", "peak while loading",
            "peak while generating", "CLI process peak", "tokens/s", "CLI wall time"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['case']} | {r['params_M']:.1f} M | {r['weights_MB']:.0f} MB | {fmt(r['rss_after_import_MB'])} MB | "
              f"{fmt(r['rss_after_load_unpacked_MB'])} MB | {fmt(r['rss_after_load_MB'])} MB | {fmt(r['peak_during_load_MB'])} MB | {fmt(r['peak_during_generation_MB'])} MB | "
              f"{r['cli_peak_MB']:.0f} MB | {r['tokens_per_s']:.1f} | {r['cli_wall_s']:.1f} s |")
    for r in rows: print(f"\n{r['case']} CLI (exit {r['cli_exit']}): {' '.join(r['cli_summary'])}")
    if a.json: Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
