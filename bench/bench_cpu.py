"""Ours against transformers and CTranslate2 on the CPU: GPT-2 124M shape, random weights, greedy, tokens/s.

    python bench/bench_cpu.py [--new_tokens 64] [--repeats 3] [--batches 1 8] [--prompts 16] [--threads 2]
                              [--engines ...] [--json out.json]

Every engine runs the same random-weight GPT-2 124M folder (written once by transformers' `save_pretrained`, with
GPT-2's tokenizer files):

    transformers   GPT2LMHeadModel.generate
    ours default   the model as `TextGenerator(folder)` loads and prepares it (what the CLI runs), through generate
    ours unpacked  the same weights in a plain GPT2Model, through `gpt2_learn.generation.generate`
    ours int8      `gpt2_learn.quant.quantize_int8` of the plain model (int8 weights and activations)
    ct2 float32    CTranslate2's Generator, the folder converted by its own TransformersConverter
    ct2 int8       the same converter with quantization="int8"

CTranslate2 is a benchmark-only extra (`pip install ctranslate2`); the package never imports it, and without it the
two ct2 rows are skipped. Each repeat times every engine once, in turn (interleaved), so that load from other
processes falls on all of them alike; the table gives the median and, in brackets, the best of the repeats, and each
engine's median against transformers' and against CTranslate2's in the same precision. Greedy outputs: ours (default
and unpacked) must equal transformers' (asserted); for int8 and CTranslate2 the table says how many leading new
tokens equal transformers' (the mean over the batch's rows: random weights have near-ties that any rounding swaps).
"""
import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
import torch
import transformers

transformers.logging.disable_progress_bar()
from gpt2_learn.config import GPT2Config, InferenceConfig
from gpt2_learn.generation import generate_ids
from gpt2_learn.inference import TextGenerator
from gpt2_learn.model import GPT2Model
from gpt2_learn.quant import quantize_int8
from gpt2_learn.tokenizer import load_tokenizer
from gpt2_learn.weights import convert_hf_state_dict, load_state_dict_strict

ENGINES = ["transformers", "ours default", "ours unpacked", "ours int8", "ct2 float32", "ct2 int8"]


def write_folder(folder: str, name: str = "gpt2") -> transformers.GPT2LMHeadModel:
    "A random-weight GPT-2 (seed 0) saved with GPT-2's tokenizer files: the one source every engine loads."
    c = GPT2Config.from_name(name)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd,
                                                              pad_token_id=50256)).eval()
    hf.save_pretrained(folder)
    load_tokenizer().save_pretrained(folder)
    return hf


def ct2_generator(folder: str, out: str, quantization: str, threads: int):
    "CTranslate2's own conversion of the folder, and its Generator on the CPU."
    import ctranslate2
    ctranslate2.converters.TransformersConverter(folder).convert(out, quantization=quantization, force=True)
    return ctranslate2.Generator(out, device="cpu", compute_type=quantization, intra_threads=threads, inter_threads=1)


def build_engines(folder: str, hf, threads: int, wanted: list[str]) -> dict:
    "Engine name -> fn(ids (B, T), n) -> ids (B, T + n)."
    greedy = InferenceConfig(do_sample=False, repetition_penalty=1.0, eos_token_id=None)
    plain = GPT2Model(GPT2Config.from_name("gpt2"))
    plain = load_state_dict_strict(plain, convert_hf_state_dict(hf.state_dict())).eval()
    engines = {}

    def run_hf(ids, n):
        with torch.no_grad():
            return hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                               do_sample=False, pad_token_id=50256)
    engines["transformers"] = run_hf
    if "ours default" in wanted:
        default = TextGenerator(folder, device="cpu", dtype="float32", threads=threads).model
        engines["ours default"] = lambda ids, n: generate_ids(default, ids, n, greedy)
    engines["ours unpacked"] = lambda ids, n: generate_ids(plain, ids, n, greedy)
    if "ours int8" in wanted:
        int8 = quantize_int8(copy.deepcopy(plain))
        engines["ours int8"] = lambda ids, n: generate_ids(int8, ids, n, greedy)
    tok = load_tokenizer()
    for precision in ("float32", "int8"):
        if f"ct2 {precision}" not in wanted:
            continue
        try:
            gen = ct2_generator(folder, os.path.join(folder, f"ct2-{precision}"), precision, threads)
        except ImportError:
            print(f"# ct2 {precision}: skipped (pip install ctranslate2, a benchmark-only extra)")
            continue

        def run_ct2(ids, n, gen=gen):
            tokens = [tok.convert_ids_to_tokens(row) for row in ids.tolist()]
            res = gen.generate_batch(tokens, max_length=n, min_length=n, sampling_topk=1,
                                     include_prompt_in_result=False)
            return torch.cat([ids, torch.tensor([r.sequences_ids[0] for r in res])], dim=1)
        engines[f"ct2 {precision}"] = run_ct2
    return {k: engines[k] for k in ENGINES if k in engines and k in wanted}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new_tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--prompts", type=int, nargs="+", default=[16], help="prompt lengths")
    ap.add_argument("--threads", type=int, default=2, help="threads for every engine")
    ap.add_argument("--engines", nargs="+", default=ENGINES, choices=ENGINES)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n, rows = args.new_tokens, []
    with tempfile.TemporaryDirectory() as folder:
        hf = write_folder(folder)
        engines = build_engines(folder, hf, args.threads, args.engines)
        versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
        if any(k.startswith("ct2") for k in engines):
            import ctranslate2
            versions += f", ctranslate2 {ctranslate2.__version__}"
        print(f"# CPU: {platform.processor() or platform.machine()} ({torch.backends.cpu.get_cpu_capability()}), "
              f"{args.threads} threads each; {versions}; GPT-2 124M shape, random weights, greedy, {n} new tokens; "
              f"interleaved, median [best] of {args.repeats}; load average before: {os.getloadavg()[0]:.2f}")
        print(f"{'batch':>5} {'prompt':>6} {'engine':>14} {'tok/s median [best]':>20} {'x transformers':>15} "
              f"{'x ct2 same dtype':>17} {'greedy = transformers (mean of rows)':>37}")
        for B in args.batches:
            for T in args.prompts:
                ids = torch.randint(0, 50257, (B, T), generator=torch.Generator().manual_seed(B * 1000 + T))
                outs, times = {}, {k: [] for k in engines}
                for name, fn in engines.items():
                    outs[name] = fn(ids, 2)                                   # warm-up
                for _ in range(args.repeats):
                    for name, fn in engines.items():
                        t0 = time.perf_counter()
                        outs[name] = fn(ids, n)
                        times[name].append(time.perf_counter() - t0)
                ref = outs["transformers"]
                for name in engines:
                    assert outs[name].shape == (B, T + n), (name, outs[name].shape)
                    if name in ("ours default", "ours unpacked"):
                        assert torch.equal(outs[name], ref), f"greedy outputs differ: {name}"
                    lead = (outs[name][:, T:] == ref[:, T:]).long().cumprod(1).sum(1)    # leading equal tokens, per row
                    same = f"{lead.float().mean().item():.0f}" if B > 1 else str(lead.item())
                    med, best = B * n / statistics.median(times[name]), B * n / min(times[name])
                    peer = "ct2 int8" if "int8" in name else "ct2 float32"
                    r = dict(batch=B, prompt=T, engine=name, tok_s_median=med, tok_s_best=best,
                             x_transformers=statistics.median(times["transformers"]) / statistics.median(times[name]),
                             x_ct2=(statistics.median(times[peer]) / statistics.median(times[name])
                                    if peer in times and not name.startswith("ct2") else None),
                             greedy_equal_tokens=same, load=os.getloadavg()[0])
                    rows.append(r)
                    x_ct2 = f"{r['x_ct2']:.2f}x" if r["x_ct2"] is not None else "-"
                    print(f"{B:>5} {T:>6} {name:>14} {med:>10.1f} [{best:>7.1f}] {r['x_transformers']:>14.2f}x "
                          f"{x_ct2:>17} {same + ' of ' + str(n):>37}", flush=True)
                print(f"# load average after batch {B}, prompt {T}: {os.getloadavg()[0]:.2f}", flush=True)
                if args.json:
                    json.dump(rows, open(args.json, "w"), indent=1)   # after each group: a stopped run keeps rows


if __name__ == "__main__":
    main()
