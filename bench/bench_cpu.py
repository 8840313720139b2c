"""Ours vs transformers `generate`, side by side in one process (124M GPT-2 shape, random weights, CPU).

    python bench/bench_cpu.py [--new_tokens 64] [--repeats 2] [--quick] [--batches 1 8] [--prompts 16 512]
                               [--dtype float32|bfloat16|float16] [--json out.json]

Prints tokens/s of each and the ratio, for batch 1 and 8, prompts of 16 and 512 tokens, greedy and the
reference guide's sampling (temperature 1.0, top_k 50, top_p 0.95, repetition_penalty 1.2): ours as
`generate` runs a model handed to it, and ours with the weights packed for oneDNN (`pack_for_cpu`, what
the CLI and `TextGenerator` do with the model they load, where oneDNN packs the dtype); then our speedup from the KV cache (the same loop
recomputing the whole sequence every step). In float32 the greedy outputs of all three must be equal (asserted);
in bfloat16 and float16 different kernels round differently, so the table says at which new token ours first differs and, there,
by how much transformers in float32 prefers our token over transformers' (its logit minus theirs, same prefix; > 0: ours is float32's
choice).
"""
import argparse, copy, json, os, platform, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
import torch
import transformers
from gpt2_learn.config import GPT2Config, InferenceConfig
from gpt2_learn.generation import generate_ids
from gpt2_learn.weights import convert_hf_state_dict, load_state_dict_strict
from gpt2_learn.model import GPT2Model
from gpt2_learn.fast import cpu_packing_available, pack_for_cpu, packable_dtypes

GUIDE = dict(temperature=1.0, top_k=50, top_p=0.95, repetition_penalty=1.2)


def build(name="gpt2", device="cpu", dtype=torch.float32):
    "The oracle (transformers, random weights) and ours with the same weights."
    c = GPT2Config.from_name(name)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd,
                                                              pad_token_id=50256)).eval()
    ours = load_state_dict_strict(GPT2Model(c), convert_hf_state_dict(hf.state_dict())).eval()
    return hf.to(device, dtype), ours.to(device, dtype)


def timed(fn, repeats, sync=lambda: None):
    best = float("inf")
    for _ in range(repeats):
        sync(); t0 = time.perf_counter(); out = fn(); sync()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run_hf(hf, ids, n, sample):
    kw = dict(do_sample=True, **GUIDE) if sample else dict(do_sample=False)
    with torch.no_grad():
        return hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           pad_token_id=50256, **kw)


def run_ours(model, ids, n, sample, use_cache=True):
    cfg = InferenceConfig(max_new_tokens=n, eos_token_id=None, **(dict(do_sample=True, **GUIDE) if sample else
                                                                 dict(do_sample=False, repetition_penalty=1.0)))
    return generate_ids(model, ids, config=cfg, use_cache=use_cache)


def first_difference(theirs: torch.Tensor, ours: torch.Tensor, T: int, reference) -> str:
    "Where two greedy outputs first differ, and the float32 reference's logit of our token minus theirs there."
    diff = (theirs[:, T:] != ours[:, T:]).any(0).nonzero()
    if not len(diff): return "all"
    k = int(diff[0]); row = int((theirs[:, T + k] != ours[:, T + k]).nonzero()[0])
    with torch.no_grad(): logits = reference(ours[row:row + 1, :T + k]).logits[0, -1]   # the prefix both share
    return f"differs at new token {k} (float32 {float(logits[ours[row, T + k]] - logits[theirs[row, T + k]]):+.3f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--new_tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="batch 1, prompt 16 only")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--prompts", type=int, nargs="+", default=[16, 512], help="prompt lengths")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--json")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    exact = dtype == torch.float32                                                # bf16: greedy equality reported, not asserted
    hf, ours = build(dtype=dtype)
    reference = None if exact else build()[0]                       # transformers in float32, to judge bf16 ties
    packed = pack_for_cpu(copy.deepcopy(ours)) if cpu_packing_available() and dtype in packable_dtypes() else None   # as the CLI
    n = args.new_tokens
    print(f"# CPU: {platform.processor() or platform.machine()} ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads; "
          f"torch {torch.__version__}, transformers {transformers.__version__}; 124M shape, {args.dtype}, {n} new tokens, best of {args.repeats}"
          + ("" if packed is not None else f"; not packed: oneDNN packs {'/'.join(str(d)[6:] for d in packable_dtypes()) or 'nothing'} here"))
    print(f"{'batch':>5} {'prompt':>6} {'mode':>8} {'transformers tok/s':>19} {'ours tok/s':>11} {'ratio':>6}"
          + ("" if packed is None else f" {'packed tok/s':>13} {'ratio':>6}")
          + ("" if exact else "  greedy = transformers" + (" (ours)" if packed is None else " (ours, packed)")))
    rows = []
    for B in ([1] if args.quick else args.batches):
        for T in ([16] if args.quick else args.prompts):
            ids = torch.randint(0, 50257, (B, T), generator=torch.Generator().manual_seed(B * 1000 + T))
            for sample in (False, True):
                run_hf(hf, ids, 2, sample); run_ours(ours, ids, 2, sample)          # warm-up
                t_hf, out_hf = timed(lambda: (torch.manual_seed(0), run_hf(hf, ids, n, sample))[1], args.repeats)
                t_us, out_us = timed(lambda: run_ours(ours, ids, n, sample), args.repeats)
                assert out_hf.shape == out_us.shape == (B, T + n)
                if not sample and exact: assert torch.equal(out_hf, out_us), "greedy outputs differ"
                r = dict(batch=B, prompt=T, mode="sample" if sample else "greedy",
                         transformers_tok_s=B * n / t_hf, ours_tok_s=B * n / t_us, ratio=t_hf / t_us)
                line = f"{B:>5} {T:>6} {r['mode']:>8} {r['transformers_tok_s']:>19.1f} {r['ours_tok_s']:>11.1f} {r['ratio']:>5.2f}x"
                if packed is not None:
                    run_ours(packed, ids, 2, sample)
                    t_pk, out_pk = timed(lambda: run_ours(packed, ids, n, sample), args.repeats)
                    if not sample and exact: assert torch.equal(out_hf, out_pk), "greedy outputs differ (packed)"
                    r.update(packed_tok_s=B * n / t_pk, ratio_packed=t_hf / t_pk)
                    line += f" {r['packed_tok_s']:>13.1f} {r['ratio_packed']:>5.2f}x"
                if not sample and not exact:
                    outs = [out_us] + ([out_pk] if packed is not None else [])
                    r.update(greedy_same=[first_difference(out_hf, o, T, reference) for o in outs])
                    line += "  " + ", ".join(r["greedy_same"])
                rows.append(r)
                print(line, flush=True)
                if args.json: json.dump(rows, open(args.json, "w"), indent=1)     # after every row: a stopped run keeps its rows
    if not exact:                                                # the cache's speedup is measured in float32, outputs equal
        ids = torch.randint(0, 50257, (8, 16), generator=torch.Generator().manual_seed(8016))
        with torch.no_grad():
            ref = reference(ids).logits
            err = {name: (m(ids).logits if name == "transformers" else m(ids)).float().sub(ref).abs().max().item()
                   for name, m in (("transformers", hf), ("ours", ours), ("ours packed", packed)) if m is not None}
        print(f"\n# {args.dtype} rounding: the largest |logit - float32 logit| (transformers' float32; 8 x 16 tokens): "
              + ", ".join(f"{name} {e:.3f}" for name, e in err.items()))
        rows.append(dict(mode="rounding", max_abs_logit_error=err))
        if args.json: json.dump(rows, open(args.json, "w"), indent=1)
        return
    print("\n# KV cache: ours with vs without the cache (greedy, batch 1, 16 new tokens)")
    print(f"{'prompt':>6} {'no cache tok/s':>15} {'cache tok/s':>12} {'speedup':>8}")
    for T in ([16] if args.quick else args.prompts):
        ids = torch.randint(0, 50257, (1, T), generator=torch.Generator().manual_seed(T))
        t_nc, a = timed(lambda: run_ours(ours, ids, 16, False, use_cache=False), 1)
        t_c, b = timed(lambda: run_ours(ours, ids, 16, False), args.repeats)
        assert torch.equal(a, b)
        rows.append(dict(prompt=T, mode="kv_cache", no_cache_tok_s=16 / t_nc, cache_tok_s=16 / t_c, speedup=t_nc / t_c))
        print(f"{T:>6} {16 / t_nc:>15.1f} {16 / t_c:>12.1f} {t_nc / t_c:>7.1f}x", flush=True)
    if args.json: json.dump(rows, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
