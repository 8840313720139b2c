"""One thread or two? Tokens/s of greedy generation (KV cache, packed weights) at 1 and 2 threads, per model shape
and batch, with the 1-minute load average before and after each row (another process's load changes the answer).
What `gpt2_learn.inference.choose_threads` decides from: below THREADS_MIN_FLOP a step, one thread.

    python bench/bench_threads.py [--new_tokens 16] [--repeats 3]
"""
import argparse, os, time
import torch
from gpt2_learn.config import GPT2Config
from gpt2_learn.generation import generate
from gpt2_learn.inference import _pack_if_cpu, step_flop
from gpt2_learn.model import GPT2Model

SHAPES = [("bundled 128x6", dict(n_layer=6, n_head=4, n_embd=128, n_positions=256), (1, 4, 16)),
          ("mini 384x6", dict(n_layer=6, n_head=6, n_embd=384, n_positions=512), (1, 4)),
          ("gpt2 768x12", dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024), (1, 4))]


def tokens_per_second(model, ids, new_tokens: int, threads: int) -> float:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    for _ in generate(model, ids, new_tokens, do_sample=False, eos_token_id=None):
        pass
    return ids.shape[0] * new_tokens / (time.perf_counter() - start)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new_tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {os.cpu_count()} cores; best of {a.repeats}, threads interleaved")
    print("| model | batch | MFLOP a step | 1 thread tok/s | 2 threads tok/s | 2 / 1 | load before -> after |")
    print("|---|---|---|---|---|---|---|")
    for name, shape, batches in SHAPES:
        model = _pack_if_cpu(GPT2Model(GPT2Config(**shape)).eval())
        for batch in batches:
            ids = torch.randint(0, 50257, (batch, 16))
            load = os.getloadavg()[0]
            best = {1: 0.0, 2: 0.0}
            for _ in range(a.repeats):
                for threads in (1, 2):
                    best[threads] = max(best[threads], tokens_per_second(model, ids, a.new_tokens, threads))
            print(f"| {name} | {batch} | {step_flop(model, batch) / 1e6:.1f} | {best[1]:.1f} | {best[2]:.1f} | "
                  f"{best[2] / best[1]:.2f}x | {load:.2f} -> {os.getloadavg()[0]:.2f} |", flush=True)
