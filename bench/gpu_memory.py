"""Peak GPU memory of our generation, in a fresh process (nothing else on the GPU).

    python bench/gpu_memory.py gpt2 [--batch 1] [--new_tokens 100] [--compile auto] [--dtype float16]

The model (random weights, fp16 unless --dtype says otherwise) is built on the CPU and moved to the GPU; then `fast_generate` (what `generate`
uses on a GPU: static cache + CUDA graph, compiled as `--compile` says; "auto" is generate's default) produces
the tokens, greedy then sampled. Also prints what the whole device has in use at the end (CUDA context included,
as nvidia-smi would count it). Prints weights, peak allocated and peak reserved (MB).
"""
import argparse, json
import torch
from gpt2_learn.config import GPT2Config, InferenceConfig
from gpt2_learn.model import GPT2Model
from gpt2_learn.fast import fast_generate, resolve_compile

ap = argparse.ArgumentParser()
ap.add_argument("size"); ap.add_argument("--batch", type=int, default=1); ap.add_argument("--new_tokens", type=int, default=100)
ap.add_argument("--compile", default="auto"); ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
a = ap.parse_args()
free0, total = torch.cuda.mem_get_info()
model = GPT2Model(GPT2Config.from_name(a.size)).to("cuda", getattr(torch, a.dtype)).eval()
weights = torch.cuda.memory_allocated()
torch.cuda.reset_peak_memory_stats()
ids = torch.randint(0, 50257, (a.batch, 16), device="cuda")
for cfg in (InferenceConfig(do_sample=False), InferenceConfig()):               # greedy, then the guide's sampling
    for _ in fast_generate(model, ids, a.new_tokens, cfg.replace(eos_token_id=None), compile=a.compile): pass
torch.cuda.synchronize()
free1, _ = torch.cuda.mem_get_info()
r = dict(model=a.size, batch=a.batch, dtype=a.dtype, compile=str(resolve_compile(a.compile, torch.device("cuda"))), weights_mb=round(weights / 2**20, 1),
         peak_allocated_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1),
         peak_reserved_mb=round(torch.cuda.max_memory_reserved() / 2**20, 1),
         device_used_at_end_mb=round((total - free1) / 2**20, 1), device_used_before_model_mb=round((total - free0) / 2**20, 1))
print(json.dumps(r))
