"The fast path's fixed-shape decode step, run eagerly on the CPU (the GPU check runs it in CUDA graphs)."
import pytest
import torch

from conftest import hf_processors, make_hf_model, ours_from_hf, peaky_hf
from gpt2_learn.config import InferenceConfig
from gpt2_learn.fast import fast_generate, fast_path_supports, get_decoder, sample_exponential, decode_floor_ms
from gpt2_learn.fast import _DECODERS


def decoders_of(model) -> dict:
    "The captured decoders the fast module keeps for `model` ({} if none)."
    kept = _DECODERS.get(model)
    return {} if kept is None else kept[1]
from gpt2_learn.generation import NonFiniteLogitsError, generate, generate_ids, pad_left
from gpt2_learn.config import GPT2Config

P = torch.randint(0, 50257, (1, 16), generator=torch.Generator().manual_seed(9))


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_static_step_equals_generate_greedy(hf_small, penalty):
    ours = ours_from_hf(hf_small)
    cfg = InferenceConfig(do_sample=False, repetition_penalty=penalty)
    got = torch.stack(list(fast_generate(ours, P, 40, cfg)), 1)
    assert torch.equal(got, generate_ids(ours, P, 40, cfg, fast=False)[:, 16:])


def test_static_step_padded_batch_equals_each_alone(hf_small):
    ours = ours_from_hf(hf_small)
    cfg = InferenceConfig(do_sample=False)
    prompts = [P[0, :16].tolist(), P[0, :2].tolist(), P[0, 3:9].tolist()]
    ids, mask = pad_left(prompts)
    got = torch.stack(list(fast_generate(ours, ids, 25, cfg, mask)), 1)
    for row, p in zip(got, prompts):
        assert torch.equal(row, generate_ids(ours, torch.tensor([p]), 25, cfg)[0, len(p):])


def test_padded_batch_with_a_pad_the_model_likes_equals_transformers():
    "The repetition penalty over the fixed-size token history counts neither pads nor unwritten slots, as generate does."
    hf = peaky_hf(); ours = ours_from_hf(hf)
    with torch.no_grad(): nxt = hf(torch.tensor([[9, 9, 31]])).logits[0, -1].topk(3).indices.tolist()
    pad = [t for t in nxt if t not in (9, 31)][0]                           # a token the model would pick next
    prompt = torch.tensor([[pad, pad, 9, 9, 31], [4, 9, 17, 17, 42]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        ref = hf.generate(prompt, attention_mask=mask, do_sample=False, max_new_tokens=10, repetition_penalty=3.0,
                          pad_token_id=pad, eos_token_id=None)
    cfg = InferenceConfig(do_sample=False, repetition_penalty=3.0, eos_token_id=None)
    got = torch.stack(list(fast_generate(ours, prompt, 10, cfg, mask)), 1)
    assert torch.equal(got, ref[:, 5:])


def test_static_step_stops_at_eos(hf_small):
    ours = ours_from_hf(hf_small)
    with torch.no_grad(): ours.ln_f.bias.copy_(ours.wte.weight[50256] * 50)     # make <|endoftext|> the argmax
    info = {}
    toks = list(fast_generate(ours, P, 10, InferenceConfig(do_sample=False, repetition_penalty=1.0), info=info))
    assert [int(t) for t in toks] == [50256] and info["stop_reason"] == "eos"


def test_logits_turning_nan_mid_run_stop_both_loops_at_the_same_token(hf_small):
    "A NaN position embedding reached by one row of a padded batch at its 6th new token: no token from NaN is yielded."
    clean, poisoned = ours_from_hf(hf_small), ours_from_hf(hf_small)
    with torch.no_grad(): poisoned.wpe.weight[20] = float("nan")           # row 0 (16 tokens) reads position 20 with token 5
    ids, mask = pad_left([P[0].tolist(), P[0, :3].tolist()])
    for sampled in (False, True):
        cfg = InferenceConfig(do_sample=sampled, seed=1)
        for run in (lambda: fast_generate(poisoned, ids, 12, cfg, mask), lambda: generate(poisoned, ids, 12, cfg, mask, fast=False)):
            got = []
            with pytest.raises(NonFiniteLogitsError, match="NaN or inf"): got.extend(run())
            assert len(got) == 5
        if not sampled:                                                      # the tokens before it are the clean model's
            assert torch.equal(torch.stack(got, 1), generate_ids(clean, ids, 5, cfg, mask, fast=False)[:, 16:])
    with torch.no_grad(): poisoned.wpe.weight[20] = clean.wpe.weight[20]    # mended: the same decoder runs on, as the clean model
    cfg = InferenceConfig(do_sample=False)
    assert torch.equal(torch.stack(list(fast_generate(poisoned, ids, 12, cfg, mask)), 1), generate_ids(clean, ids, 12, cfg, mask)[:, 16:])


def test_rows_finish_at_eos_one_by_one_as_in_the_ordinary_loop(hf_small):
    ours = ours_from_hf(hf_small)
    ids, mask = pad_left([P[0].tolist(), P[0, :3].tolist(), P[0, 5:11].tolist()])
    plain = generate_ids(ours, ids, 30, InferenceConfig(do_sample=False, eos_token_id=None), mask, fast=False)[:, 16:]
    eos = int(plain[1, 4])                                                   # row 1 emits it at step 5: call it <|endoftext|>
    cfg = InferenceConfig(do_sample=False, eos_token_id=eos)
    info = {}
    got = torch.stack(list(fast_generate(ours, ids, 30, cfg, mask, info=info)), 1)
    want = generate_ids(ours, ids, 30, cfg, mask, fast=False)[:, 16:]
    assert torch.equal(got, want) and (got[1, 4:] == eos).all()
    assert info.get("stop_reason") == ("eos" if got.shape[1] < 30 else None)   # (generate sets the other reasons)


def test_a_run_overtaken_on_its_decoder_says_so(hf_small):
    "Two generators of the same shapes share one decoder: the older one, resumed after the newer started, must not yield garbage."
    ours, cfg = ours_from_hf(hf_small), InferenceConfig(do_sample=False)
    old = fast_generate(ours, P, 10, cfg)
    next(old)
    new = list(fast_generate(ours, P.flip(1), 10, cfg))
    with pytest.raises(RuntimeError, match="took over"): next(old)
    assert torch.equal(torch.stack(new, 1), generate_ids(ours, P.flip(1), 10, cfg, fast=False)[:, 16:])


def test_a_token_not_yet_written_is_never_read(hf_small):
    "Every column of the decoder's output starts as -2; a read of one the step has not written is an error, never a stale token."
    ours, cfg = ours_from_hf(hf_small), InferenceConfig(do_sample=False)
    list(fast_generate(ours, P, 10, cfg))
    dec = next(iter(decoders_of(ours).values()))
    real_step = dec.step
    dec.step = lambda: None                                                  # a step that never ran
    with pytest.raises(RuntimeError, match="before its step had run"): list(fast_generate(ours, P, 10, cfg))
    dec.step = real_step


def test_moving_a_model_drops_its_decoders(hf_small):
    "A captured decoder holds the weights it was made with: after .double().float() (new tensors) it must not be reused."
    ours, cfg = ours_from_hf(hf_small), InferenceConfig(do_sample=False)
    list(fast_generate(ours, P, 10, cfg))
    with torch.no_grad():
        ours.double().float()
        ours.h[0].mlp.c_fc.weight.mul_(2)                                    # new weights, in the new tensors
    assert torch.equal(torch.stack(list(fast_generate(ours, P, 10, cfg)), 1), generate_ids(ours, P, 10, cfg, fast=False)[:, 16:])


def test_yielded_tokens_are_copies(hf_small):
    "The decoder is reused by the next call with the same shapes: what an earlier call yielded must not change."
    ours, cfg = ours_from_hf(hf_small), InferenceConfig(do_sample=False)
    first = list(fast_generate(ours, P, 10, cfg))
    kept = [t.clone() for t in first]
    list(fast_generate(ours, P.flip(1), 10, cfg))
    assert all(torch.equal(a, b) for a, b in zip(first, kept))


def test_sampled_tokens_are_seeded_and_follow_the_pipeline(hf_small):
    ours = ours_from_hf(hf_small)
    cfg = InferenceConfig(top_k=5, seed=3)
    a = torch.stack(list(fast_generate(ours, P, 20, cfg)), 1)
    b = torch.stack(list(fast_generate(ours, P, 20, cfg)), 1)
    assert torch.equal(a, b)
    assert not torch.equal(a, torch.stack(list(fast_generate(ours, P, 20, cfg.replace(seed=4))), 1))


@pytest.mark.parametrize("cfg", [InferenceConfig(temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.3, seed=3),
                                 InferenceConfig(temperature=1.3, top_k=0, top_p=1.0, min_p=0.01, typical_p=0.98, seed=8)])
def test_sampled_tokens_equal_a_replay_with_transformers_processors(cfg):
    "Each sampled token is the exponential race (same seeded noise) over transformers' processors of transformers' logits."
    hf = make_hf_model(seed=2)
    with torch.no_grad(): hf.transformer.wte.weight.mul_(4)     # peaked enough that the knobs matter, flat enough to sample
    ours = ours_from_hf(hf)
    got = torch.stack(list(fast_generate(ours, P, 24, cfg.replace(eos_token_id=None))), 1)
    g, seq = torch.Generator().manual_seed(cfg.seed), P
    for _ in range(24):
        with torch.no_grad(): logits = hf(seq).logits[:, -1].float()
        probs = hf_processors(cfg)(seq, logits).softmax(-1)
        seq = torch.cat([seq, sample_exponential(probs, g)[:, None]], 1)
    assert torch.equal(got, seq[:, P.shape[1]:])


def test_exponential_race_matches_probabilities():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.6, 0.25, 0.1, 0.05, 0.0]]).expand(20000, -1)
    draws = sample_exponential(probs, g)
    freq = torch.bincount(draws, minlength=5).float() / 20000
    torch.testing.assert_close(freq, probs[0], atol=0.015, rtol=0)
    assert freq[4] == 0


def test_supported_configs_and_decoder_cache(hf_small):
    assert fast_path_supports(InferenceConfig()) and not fast_path_supports(InferenceConfig(no_repeat_ngram_size=2))
    assert not fast_path_supports(InferenceConfig(presence_penalty=0.5))
    ours = ours_from_hf(hf_small)
    d1 = get_decoder(ours, 1, 40, InferenceConfig())
    assert d1 is get_decoder(ours, 1, 100, InferenceConfig()) and d1.L == 128       # lengths rounded up to a power of two
    assert d1 is not get_decoder(ours, 1, 40, InferenceConfig(top_k=7))
    for knob in (dict(temperature=0.5), dict(top_p=0.5), dict(min_p=0.1), dict(typical_p=0.9), dict(repetition_penalty=1.5),
                 dict(do_sample=False), dict(eos_token_id=None)):
        assert get_decoder(ours, 1, 40, InferenceConfig(**knob)) is not d1, knob   # a captured step bakes its knobs in


def test_memory_floor():
    ms = decode_floor_ms(GPT2Config(), bandwidth_gb_s=1000, seq_len=0)
    assert ms == pytest.approx(124_439_808 * 2 / 1e12 * 1e3)


def test_copies_of_a_model_leave_its_decoders_behind(hf_small):
    "Captured decoders (CUDA graphs, streams) are kept per model in the fast module, not on it: copies and pickles never see them."
    import copy, gc, io, weakref
    ours, cfg = ours_from_hf(hf_small), InferenceConfig(do_sample=False)
    first = torch.stack(list(fast_generate(ours, P, 8, cfg)), 1)
    assert decoders_of(ours) and not any("decoder" in k for k in ours.__dict__)
    twin = copy.deepcopy(ours)
    assert not decoders_of(twin) and decoders_of(ours)
    assert torch.equal(torch.stack(list(fast_generate(twin, P, 8, cfg)), 1), first)
    assert decoders_of(twin) and all(d.model is twin for d in decoders_of(twin).values())
    buf = io.BytesIO()
    torch.save(ours, buf)
    buf.seek(0)
    assert not decoders_of(torch.load(buf, weights_only=False))
    gone = weakref.ref(twin)
    del twin
    gc.collect()
    assert gone() is None                                                    # its decoders do not keep it alive


@pytest.mark.parametrize("where", ["capture_end", "the step"])
def test_graph_capture_gives_the_callers_stream_back_when_a_capture_fails(monkeypatch, where):
    "torch leaves its capture stream current when capture_end raises; `graph_capture` makes the caller's current again (simulated: no GPU here)."
    from gpt2_learn import fast
    current = ["caller's stream"]
    class Capture:                                   # torch.cuda.graph's order: enter the stream, begin; end, then leave the stream
        def __init__(self, graph, stream): self.stream = stream
        def __enter__(self): current[0] = self.stream
        def __exit__(self, *exc):
            if where == "capture_end" or exc[0] is not None: raise RuntimeError("capture_end failed")   # before leaving the stream
            current[0] = "caller's stream"
    monkeypatch.setattr(torch.cuda, "graph", Capture)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: current[0])
    monkeypatch.setattr(torch.cuda, "set_stream", lambda s: current.__setitem__(0, s))
    with pytest.raises(RuntimeError):
        with fast.graph_capture("graph", "side stream"):
            assert current[0] == "side stream"
            if where == "the step": raise RuntimeError("operation not permitted when stream is capturing")
    assert current[0] == "caller's stream"


# --- GPT-2 variants on the fast paths (issue 18.1) ----------------------------------------------------------------------

FAST_VARIANTS = [dict(activation_function="relu"), dict(scale_attn_weights=False), dict(scale_attn_by_inverse_layer_idx=True),
                 dict(activation_function="silu", n_inner=96, reorder_and_upcast_attn=True)]


def variant_pair(**option):
    "transformers' GPT-2 with `option` (weights at std 0.12, where the option shows) and ours with the same weights."
    from test_model import hf_variant
    hf = hf_variant(**option)
    return hf, ours_from_hf(hf)


@pytest.mark.parametrize("option", FAST_VARIANTS, ids=lambda o: ",".join(o))
def test_static_step_of_a_variant_equals_transformers_greedy(option):
    "The graph-friendly step (CUDA graphs on a GPU), run eagerly here: a variant's activation and scalings honoured."
    hf, ours = variant_pair(**option)
    ids = torch.randint(0, 257, (2, 6), generator=torch.Generator().manual_seed(1))
    want = hf.generate(ids, max_new_tokens=14, do_sample=False, eos_token_id=None, pad_token_id=0)[:, 6:]
    cfg = InferenceConfig(do_sample=False, repetition_penalty=1.0, eos_token_id=None)
    assert torch.equal(torch.stack(list(fast_generate(ours, ids, 14, cfg, compile=False)), 1), want)


def test_a_variant_is_never_compiled_and_says_nothing(recwarn):
    "The compiled and Triton steps hard-code GPT-2's recipe: a variant quietly gets the eager kernels (still graph-captured)."
    from gpt2_learn.fast import resolve_compile, StaticDecoder
    _, relu = variant_pair(activation_function="relu")
    _, plain = variant_pair()
    assert plain.config.openai_recipe and not relu.config.openai_recipe
    for mode in ("block", "full", "gemv", "gemv+math", "triton", True):
        assert resolve_compile(mode, torch.device("cpu"), relu.config) is False
        assert resolve_compile(mode, torch.device("cpu"), plain.config) == ("block" if mode is True else mode)
    assert resolve_compile("auto", torch.device("cuda"), relu.config) is False
    dec = StaticDecoder(relu, 1, 32, InferenceConfig(do_sample=False), compile="block")
    assert dec.compile is False and dec._block.__name__ == "block_decode_step"
    assert get_decoder(relu, 1, 20, InferenceConfig(do_sample=False), compile="gemv").compile is False
    assert not [w for w in recwarn.list if "compile" in str(w.message)]


def test_cpu_packed_variant_equals_transformers():
    from gpt2_learn.fast import pack_for_cpu, cpu_packing_available
    if not cpu_packing_available(): pytest.skip("no oneDNN packed linear here")
    hf, ours = variant_pair(activation_function="relu", scale_attn_by_inverse_layer_idx=True)
    pack_for_cpu(ours, min_weights=1)
    assert type(ours.h[0].mlp.c_fc).__name__ == "PackedLinear"
    ids = torch.randint(0, 257, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): assert (ours(ids) - hf(ids).logits).abs().max() < 1e-4


# --- no compiler errors on stderr for a working run (issue 18.3) ---------------------------------------------------------

def test_top_p_and_typical_pipelines_are_not_compiled():
    "Their sort + cumsum over the vocabulary made inductor print 'Error in codegen ... SplitScan' on an H200: not attempted."
    from gpt2_learn.fast import StaticDecoder, scores_compilable
    _, ours = variant_pair()
    assert scores_compilable(InferenceConfig(do_sample=False)) and scores_compilable(InferenceConfig(top_p=1.0, top_k=20))
    assert not scores_compilable(InferenceConfig()) and not scores_compilable(InferenceConfig(top_p=1.0, typical_p=0.9))
    for cfg, eager in ((InferenceConfig(), True), (InferenceConfig(top_p=1.0), False), (InferenceConfig(do_sample=False), False)):
        dec = StaticDecoder(ours, 3, 32, cfg, compile="block")
        assert (dec._scores == dec._scores_eager) is eager, cfg


def torch_log_streams():
    "The streams torch's log handlers write to, each replaced by one StringIO (restore with the returned list)."
    import io, logging
    buf = io.StringIO()
    handlers = {h for n in ("torch", "torch._inductor", "torch._dynamo") for h in logging.getLogger(n).handlers}
    return buf, [(h, h.setStream(buf)) for h in handlers if isinstance(h, logging.StreamHandler)]


def test_a_compile_that_fails_while_choosing_is_quiet_and_falls_back(capfd):
    "What happened on the H200, simulated: inductor logs its error and raises; nothing reaches stderr, the tokens are eager's."
    import logging
    from gpt2_learn.fast import StaticDecoder, prefill
    _, ours = variant_pair()
    cfg = InferenceConfig(top_p=1.0, top_k=5, seed=3)
    ids = torch.randint(0, 257, (3, 4), generator=torch.Generator().manual_seed(0))
    dec = StaticDecoder(ours, 3, 32, cfg, compile="block")
    def failing(*args):
        logging.getLogger("torch._inductor.scheduler").fatal("Error in codegen for ComputedBuffer(SplitScan)")
        raise RuntimeError("codegen failed")
    dec._scores = failing
    buf, saved = torch_log_streams()
    try:
        first = prefill(dec, ids, None, 3)
        assert buf.getvalue() == ""
        logging.getLogger("torch._inductor.scheduler").fatal("Error in codegen outside")   # the filter is gone afterwards
        assert "Error in codegen outside" in buf.getvalue()
    finally:
        for h, stream in saved: h.setStream(stream)
    ref = StaticDecoder(ours, 3, 32, cfg)
    assert torch.equal(first, prefill(ref, ids, None, 3)) and dec._scores == dec._scores_eager
    assert capfd.readouterr().err == ""
