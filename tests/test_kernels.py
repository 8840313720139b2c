"The hand-written Triton kernels (run by Triton's interpreter on the CPU) against PyTorch, and the decode step built from them."

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")
from conftest import make_hf_model, ours_from_hf
from gpt2_learn.config import InferenceConfig
from gpt2_learn.fast import COMPILE_MODES, StaticDecoder, block_decode_step, fast_generate, resolve_compile
from gpt2_learn.generation import generate_ids, pad_left
from gpt2_learn.kernels import TritonStep, decode_attention, matvec, triton_supports
from gpt2_learn.kv_cache import KVCache

P = torch.randint(0, 50257, (1, 16), generator=torch.Generator().manual_seed(9))


@pytest.mark.parametrize("B", [1, 3, 17])                         # one row; several rows (tl.dot), two row blocks
@pytest.mark.parametrize("layout", ["row-major", "transposed"])
@pytest.mark.parametrize("ln,bias,gelu,res", [(False, False, False, False), (True, True, False, False),
                                              (False, True, False, True), (True, True, True, False), (True, False, False, False)])
def test_matvec_equals_torch(B, layout, ln, bias, gelu, res):
    g = torch.Generator().manual_seed(1)
    K, N = 200, 333                                        # not multiples of the block sizes
    x = torch.randn(B, K, generator=g) * 4 + 2
    w = torch.randn(N, K, generator=g) / 10
    if layout == "transposed": w = w.t().contiguous().t()
    b, r = torch.randn(N, generator=g), torch.randn(B, N, generator=g)
    lw, lb = torch.randn(K, generator=g), torch.randn(K, generator=g)
    got = matvec(x, w, b if bias else None, ln=(lw, lb) if ln else None, eps=1e-5, gelu=gelu, res=r if res else None)
    h = F.layer_norm(x, (K,), lw, lb, 1e-5) if ln else x
    exp = F.linear(h, w, b if bias else None)
    if gelu: exp = F.gelu(exp, approximate="tanh")
    if res: exp = exp + r
    torch.testing.assert_close(got, exp, rtol=1e-4, atol=1e-4)


def test_matvec_half_precision_output_and_out_buffer():
    g = torch.Generator().manual_seed(2)
    x, w = torch.randn(1, 64, generator=g).half(), (torch.randn(48, 64, generator=g) / 8).half()
    out = torch.empty(1, 48, dtype=torch.float16)
    assert matvec(x, w, out=out) is out and out.dtype == torch.float16
    torch.testing.assert_close(out.float(), x.float() @ w.float().T, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("pos", [0, 1, 23, 39])
def test_decode_attention_equals_sdpa_and_writes_the_cache(pos):
    g = torch.Generator().manual_seed(pos)
    B, H, L, D = 2, 3, 40, 16
    C = H * D
    k_cache, v_cache, qkv = torch.randn(B, H, L, D, generator=g), torch.randn(B, H, L, D, generator=g), torch.randn(B, 3 * C, generator=g)
    pad = torch.ones(B, L, dtype=torch.bool)
    pad[1, :min(pos, 5)] = False                            # left padding in row 1
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    got = decode_attention(qkv, k_cache, v_cache, pad, torch.tensor([pos]), torch.empty(B, C), H)
    q, k, v = qkv.view(B, 3, H, D).unbind(1)
    k_ref[:, :, pos], v_ref[:, :, pos] = k, v
    valid = pad & (torch.arange(L) <= pos)
    mask = torch.zeros(B, L).masked_fill(~valid, float("-inf"))[:, None, None]
    exp = F.scaled_dot_product_attention(q[:, :, None], k_ref, v_ref, attn_mask=mask)[:, :, 0].reshape(B, C)
    torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-5)
    assert torch.equal(k_cache, k_ref) and torch.equal(v_cache, v_ref)


def test_triton_step_logits_equal_the_model(hf_small):
    ours = ours_from_hf(hf_small)
    cache, ref = KVCache(ours.config, 1, 32), KVCache(ours.config, 1, 32)
    with torch.no_grad(): ours(P[:, :5], kv_cache=cache); ours(P[:, :5], kv_cache=ref)
    step = TritonStep(ours, cache, torch.ones(1, 32, dtype=torch.bool), 1)
    for i in range(3):
        tok = P[:, 5 + i]
        got = step(tok, torch.tensor([5 + i]), torch.tensor([5 + i]))
        with torch.no_grad(): exp = ours(tok[:, None], kv_cache=ref)[:, -1]
        torch.testing.assert_close(got, exp, rtol=1e-4, atol=1e-4)


def test_triton_decoder_greedy_equals_eager_padded_batch(hf_small):
    ours = ours_from_hf(hf_small)
    cfg = InferenceConfig(do_sample=False, repetition_penalty=1.2)
    prompts = [P[0, :7].tolist(), P[0, 2:5].tolist()]
    ids, mask = pad_left(prompts)
    got = torch.stack(list(fast_generate(ours, ids, 6, cfg, mask, compile="triton")), 1)
    assert torch.equal(got, generate_ids(ours, ids, 6, cfg, attention_mask=mask, fast=False)[:, 7:])


def test_block_step_matvec_and_math_attention_equal_the_default():
    g = torch.Generator().manual_seed(3)
    B, C, nh, L = 2, 32, 4, 16
    w = [torch.randn(*s, generator=g) / 4 for s in [(C,), (C,), (3 * C, C), (3 * C,), (C, C), (C,), (C,), (C,),
                                                     (4 * C, C), (4 * C,), (C, 4 * C), (C,)]]
    x = torch.randn(B, 1, C, generator=g)
    valid = torch.arange(L) <= 6
    mask = torch.zeros(B, L).masked_fill(~valid, float("-inf"))[:, None, None]
    outs = []
    for kw in ({}, {"matvec": True}, {"matvec": True, "attention": "math"}):
        k, v = torch.zeros(B, nh, L, C // nh), torch.zeros(B, nh, L, C // nh)
        outs.append((block_decode_step(x, k, v, torch.tensor([6]), mask, nh, 1e-5, *w, **kw), k, v))
    for y, k, v in outs[1:]:
        torch.testing.assert_close(y, outs[0][0], rtol=1e-5, atol=1e-5)
        assert torch.equal(k, outs[0][1]) and torch.equal(v, outs[0][2])


@pytest.mark.parametrize("mode", [m for m in COMPILE_MODES if m and m != "triton"])
def test_every_compile_mode_gives_the_eager_greedy_tokens(hf_small, mode):
    ours = ours_from_hf(hf_small)
    cfg = InferenceConfig(do_sample=False, repetition_penalty=1.3)
    got = torch.stack(list(fast_generate(ours, P, 12, cfg, compile=mode)), 1)
    assert torch.equal(got, generate_ids(ours, P, 12, cfg, fast=False)[:, 16:])


def test_resolve_compile():
    assert resolve_compile("auto", torch.device("cpu")) is False          # no compiling without a GPU
    assert resolve_compile(True, torch.device("cpu")) == "block"
    assert resolve_compile("triton", torch.device("cpu")) == "triton"
    with pytest.raises(ValueError, match="compile must be"): resolve_compile("fastest", torch.device("cpu"))


def test_triton_needs_a_power_of_two_head_size():
    odd = ours_from_hf(make_hf_model(n_head=4, n_embd=48))      # head size 12
    assert triton_supports(ours_from_hf(make_hf_model())) and not triton_supports(odd)
    with pytest.raises(ValueError, match="power-of-two"):
        StaticDecoder(odd, 1, 32, InferenceConfig(), compile="triton")


def test_kernels_compile_for_an_h100_without_a_gpu():
    "Triton's real compiler (and ptxas) accepts every kernel for sm_90; the interpreter above checks what they compute."
    import os, subprocess, sys
    from pathlib import Path
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "tools/compile_kernels.py", "--arch", "90"], cwd=root, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("ok ") == 54


def test_triton_step_of_a_wider_mlp_and_the_variants_it_refuses():
    "n_inner (a GPT-2 variant's MLP width) is honoured; another activation or attention scale is refused, naming it."
    from test_model import hf_variant
    wide = ours_from_hf(hf_variant(n_inner=96))
    cache, ref = KVCache(wide.config, 1, 16), KVCache(wide.config, 1, 16)
    ids = torch.randint(0, 257, (1, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): wide(ids, kv_cache=cache); wide(ids, kv_cache=ref)
    step = TritonStep(wide, cache, torch.ones(1, 16, dtype=torch.bool), 1)
    got = step(torch.tensor([7]), torch.tensor([5]), torch.tensor([5]))
    with torch.no_grad(): exp = wide(torch.tensor([[7]]), kv_cache=ref)[:, -1]
    torch.testing.assert_close(got, exp, rtol=1e-4, atol=1e-4)
    for option in (dict(activation_function="relu"), dict(scale_attn_by_inverse_layer_idx=True)):
        variant = ours_from_hf(hf_variant(**option))
        assert not triton_supports(variant)
        with pytest.raises(ValueError, match="tanh GELU and attention scale"):
            TritonStep(variant, KVCache(variant.config, 1, 16), torch.ones(1, 16, dtype=torch.bool), 1)
