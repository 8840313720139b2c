"""Compile the hand-written Triton kernels for a GPU architecture without a GPU (Triton's own compiler and ptxas).

    TRITON_INTERPRET=0 python tools/compile_kernels.py [--arch 90] [--all-configs]

Catches what the CPU interpreter cannot: code that Triton's compiler rejects or ptxas fails on. Every flag combination
of the one-row and several-row kernels with both weight layouts, the attention kernel and the embedding kernel, in
fp16, bf16 and fp32.
Prints one line per kernel; exits 1 if any fails.
"""
import argparse, os, sys, time, traceback
if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"): sys.exit("run with TRITON_INTERPRET=0: the interpreter has no compiler")
os.environ["TRITON_INTERPRET"] = "0"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")      # the default; says so, which silences a warning
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import gpt2_learn.kernels as K

ap = argparse.ArgumentParser()
ap.add_argument("--arch", type=int, default=90, help="CUDA compute capability x10 (90: H100/H200)")
ap.add_argument("--all-configs", action="store_true", help="every MATVEC_CONFIGS entry, not only the first")
args = ap.parse_args()
target = GPUTarget("cuda", args.arch, 32)
failed = 0


def build(name, fn, signature, constexprs, num_warps=4, num_stages=3):
    global failed
    t0 = time.time()
    try:
        triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs), target=target,
                       options=dict(num_warps=num_warps, num_stages=num_stages))
        print(f"ok    {name} ({time.time() - t0:.1f}s)", flush=True)
    except Exception:
        failed += 1
        print(f"FAIL  {name}", flush=True); traceback.print_exc()


for dt in ("fp16", "bf16", "fp32"):
    p = "*" + dt
    for layout in ("K contiguous", "N contiguous"):
        for ln, bias, gelu, res in [(True, True, False, False), (False, True, False, True), (True, True, True, False), (True, False, False, False)]:
            for bn, bk, warps, stages in (K.MATVEC_CONFIGS if args.all_configs else K.MATVEC_CONFIGS[:1]):
                sig = dict(x_ptr=p, lnw_ptr=p, lnb_ptr=p, w_ptr=p, b_ptr=p, res_ptr=p, out_ptr=p, N="i32", K="i32",
                           stride_x="i32", stride_wn="i32", stride_wk="i32", stride_out="i32", eps="fp32", LN="constexpr",
                           BIAS="constexpr", GELU="constexpr", RES="constexpr", BLOCK_N="constexpr", BLOCK_K="constexpr")
                consts = dict(LN=ln, BIAS=bias, GELU=gelu, RES=res, BLOCK_N=bn, BLOCK_K=bk)
                unit = "stride_wk" if layout == "K contiguous" else "stride_wn"     # Triton specialises strides equal to 1
                sig[unit] = "constexpr"; consts[unit] = 1
                build(f"matvec {dt} {layout} ln={ln} bias={bias} gelu={gelu} res={res} {bn}x{bk}", K.matvec_kernel, sig, consts, warps, stages)
            for bn, bk, warps, stages in (K.ROWS_CONFIGS if args.all_configs else K.ROWS_CONFIGS[:1]):
                sig = dict(x_ptr=p, lnw_ptr=p, lnb_ptr=p, w_ptr=p, b_ptr=p, res_ptr=p, out_ptr=p, B="i32", N="i32", K="i32",
                           stride_x="i32", stride_wn="i32", stride_wk="i32", stride_out="i32", eps="fp32", LN="constexpr",
                           BIAS="constexpr", GELU="constexpr", RES="constexpr", BLOCK_B="constexpr", BLOCK_N="constexpr",
                           BLOCK_K="constexpr")
                consts = dict(LN=ln, BIAS=bias, GELU=gelu, RES=res, BLOCK_B=16, BLOCK_N=bn, BLOCK_K=bk)
                unit = "stride_wk" if layout == "K contiguous" else "stride_wn"
                sig[unit] = "constexpr"; consts[unit] = 1
                build(f"matmul_rows {dt} {layout} ln={ln} bias={bias} gelu={gelu} res={res} {bn}x{bk}", K.matmul_rows_kernel, sig, consts, warps, stages)
    sig = dict(qkv_ptr=p, k_ptr=p, v_ptr=p, valid_ptr="*u8", pos_ptr="*i64", out_ptr=p, C="i32", stride_qkv="i32",
               stride_cb="i32", stride_ch="i32", stride_cl="i32", stride_valid="i32", stride_out="i32", scale="fp32",
               D="constexpr", BLOCK_L="constexpr")
    build(f"decode_attention {dt}", K.decode_attention_kernel, sig, dict(D=64, BLOCK_L=64))
    sig = dict(tok_ptr="*i64", pos_ptr="*i64", wte_ptr=p, wpe_ptr=p, out_ptr=p, C="i32", stride_te_v="i32", stride_te_c="i32",
               stride_pe_p="i32", stride_pe_c="i32", stride_out="i32", BLOCK_C="constexpr")
    build(f"embed {dt}", K.embed_kernel, sig, dict(BLOCK_C=2048))
sys.exit(1 if failed else 0)
