"Every sampling strategy against transformers' own logits processors (the oracle), plus the edge cases."
import os
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from torch.testing import assert_close
from transformers.generation.logits_process import (
    LogitsProcessorList, MinPLogitsWarper, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, TypicalLogitsWarper)

from conftest import hf_processors
from gpt2_learn.config import InferenceConfig
from gpt2_learn.sampling import (
    apply_presence_frequency_penalty, apply_repetition_penalty, apply_temperature, distribution_stats, min_p_filter,
    no_repeat_ngram_filter, process_logits, select_next_token, top_k_filter, top_p_filter, typical_filter)

SHAPES = [(1, 50257), (3, 100), (2, 7)]
SEEDS = [0, 1]
INF = float("-inf")


def rand_logits(shape, seed, ties=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 3
    return x.round() if ties else x  # rounding makes many exact ties


def rand_ids(B, V, T, seed):
    g = torch.Generator().manual_seed(seed + 100)
    return torch.randint(0, min(V, 12), (B, T), generator=g)  # small id range: repeats and n-gram hits


def same(ours, theirs):
    "Bitwise-equal values and identical -inf masks."
    assert torch.equal(ours == INF, theirs == INF)
    assert_close(ours, theirs, rtol=0, atol=0)


cases = pytest.mark.parametrize("shape", SHAPES)
seeds = pytest.mark.parametrize("seed", SEEDS)
ties = pytest.mark.parametrize("tie", [False, True])


@cases
@seeds
@pytest.mark.parametrize("penalty", [0.8, 1.2, 2.0])
def test_repetition_penalty(shape, seed, penalty):
    x, ids = rand_logits(shape, seed), rand_ids(shape[0], shape[1], 9, seed)
    same(apply_repetition_penalty(x, ids, penalty), RepetitionPenaltyLogitsProcessor(penalty)(ids, x.clone()))


@cases
@seeds
@pytest.mark.parametrize("t", [0.3, 0.7, 1.5])
def test_temperature(shape, seed, t):
    x = rand_logits(shape, seed)
    same(apply_temperature(x, t), TemperatureLogitsWarper(t)(None, x.clone()))


@cases
@seeds
@ties
@pytest.mark.parametrize("k", [1, 3, 50, 100_000])
def test_top_k(shape, seed, tie, k):
    x = rand_logits(shape, seed, tie)
    same(top_k_filter(x, k), TopKLogitsWarper(k)(None, x.clone()))


@cases
@seeds
@ties
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 0.95, 0.999])
def test_top_p(shape, seed, tie, p):
    x = rand_logits(shape, seed, tie)
    same(top_p_filter(x, p), TopPLogitsWarper(p)(None, x.clone()))


@seeds
@ties
@pytest.mark.parametrize("k", [1, 2, 50, 400])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.9, 0.95, 0.999])
def test_top_p_after_top_k_full_vocabulary(seed, tie, k, p):
    "After top-k only k logits are finite: the CPU shortcut (sorting those only) must give transformers' bits."
    x = rand_logits((3, 50257), seed, tie)
    x = torch.cat([top_k_filter(x[:1], k), top_k_filter(x[1:2], max(1, k // 3)), top_k_filter(x[2:], 1)])   # rows: k, k/3, 1 finite
    same(top_p_filter(x, p), TopPLogitsWarper(p)(None, x.clone()))


@cases
@seeds
@ties
@pytest.mark.parametrize("m", [0.01, 0.1, 0.5, 1.0])
def test_min_p(shape, seed, tie, m):
    x = rand_logits(shape, seed, tie)
    same(min_p_filter(x, m), MinPLogitsWarper(m)(None, x.clone()))


@cases
@seeds
@ties
@pytest.mark.parametrize("mass", [0.05, 0.2, 0.5, 0.9, 0.99])
def test_typical(shape, seed, tie, mass):
    x = rand_logits(shape, seed, tie)
    same(typical_filter(x, mass), TypicalLogitsWarper(mass)(None, x.clone()))


@pytest.mark.parametrize("mass", [0.25, 0.75])
def test_typical_mass_landing_exactly_on_a_running_total(mass):
    "Exact probabilities whose running totals (in typical order: .25, .75, .875, 1) hit the mass: kept as transformers keeps."
    x = torch.tensor([[0.5, 0.25, 0.125, 0.125]]).log()
    same(typical_filter(x, mass), TypicalLogitsWarper(mass)(None, x.clone()))


@cases
@seeds
@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("T", [1, 3, 12])
def test_no_repeat_ngram(shape, seed, n, T):
    x, ids = rand_logits(shape, seed), rand_ids(shape[0], shape[1], T, seed)
    same(no_repeat_ngram_filter(x, ids, n), NoRepeatNGramLogitsProcessor(n)(ids, x.clone()))


CONFIGS = [
    InferenceConfig(),  # the guide's defaults: rep 1.2, T 1.0, top_k 50, top_p 0.95
    InferenceConfig(temperature=0.7, top_k=0, top_p=0.9, repetition_penalty=1.3, min_p=0.05),
    InferenceConfig(temperature=1.5, top_k=20, top_p=1.0, typical_p=0.9, no_repeat_ngram_size=2),
    InferenceConfig(temperature=0.8, top_k=5, top_p=0.0, repetition_penalty=1.0),
    InferenceConfig(do_sample=False, repetition_penalty=1.2, no_repeat_ngram_size=3),
    InferenceConfig(temperature=0, repetition_penalty=1.5),
]


@cases
@seeds
@pytest.mark.parametrize("cfg", CONFIGS, ids=range(len(CONFIGS)))
def test_pipeline_matches_transformers(shape, seed, cfg):
    x, ids = rand_logits(shape, seed), rand_ids(shape[0], shape[1], 10, seed)
    ours = process_logits(x, ids, cfg, prompt_len=4)
    same(ours, hf_processors(cfg)(ids, x.clone()))
    # seeded draw == torch.multinomial on transformers-processed probabilities with the same seed
    tok = select_next_token(ours, cfg, generator=torch.Generator().manual_seed(seed))
    theirs = hf_processors(cfg)(ids, x.clone())
    if cfg.greedy: ref = theirs.argmax(-1)
    else: ref = torch.multinomial(theirs.softmax(-1), 1, generator=torch.Generator().manual_seed(seed)).squeeze(1)
    assert torch.equal(tok, ref) and tok.shape == (shape[0],) and tok.dtype == torch.long


def test_select_uses_global_seed_like_transformers():
    x, cfg = rand_logits((4, 300), 3), InferenceConfig()
    torch.manual_seed(11); ours = select_next_token(process_logits(x, rand_ids(4, 300, 5, 0), cfg), cfg)
    torch.manual_seed(11); ref = torch.multinomial(hf_processors(cfg)(rand_ids(4, 300, 5, 0), x.clone()).softmax(-1), 1).squeeze(1)
    assert torch.equal(ours, ref)


def test_generate_token_for_token():
    "A loop of our process_logits + select_next_token over transformers' own GPT-2 reproduces generate(do_sample=True)."
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=2)).eval()
    with torch.no_grad(): model.transformer.wte.weight.mul_(10)  # peaky, GPT-2-like distributions (the head is tied)
    cfg = InferenceConfig(max_new_tokens=12, temperature=0.9, top_k=50, top_p=0.95, repetition_penalty=1.2, min_p=0.02)
    prompt = torch.tensor([[5, 17, 17, 42, 7]])
    torch.manual_seed(123)
    ref = model.generate(prompt, do_sample=True, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                         top_k=cfg.top_k, top_p=cfg.top_p, repetition_penalty=cfg.repetition_penalty, min_p=cfg.min_p,
                         pad_token_id=0, eos_token_id=None)
    torch.manual_seed(123)
    seq = prompt
    with torch.no_grad():
        for _ in range(cfg.max_new_tokens):
            logits = model(seq).logits[:, -1].float()
            tok = select_next_token(process_logits(logits, seq, cfg, prompt_len=prompt.shape[1]), cfg)
            seq = torch.cat([seq, tok[:, None]], 1)
    assert seq.tolist() == ref.tolist()


# --- edge cases ---------------------------------------------------------------------------------

def test_temperature_zero_is_greedy():
    x, ids = rand_logits((3, 100), 0), rand_ids(3, 100, 6, 0)
    cfg = InferenceConfig(temperature=0, repetition_penalty=1.0)
    assert cfg.greedy
    out = process_logits(x, ids, cfg)
    assert out is x  # no warper runs, nothing removed
    assert torch.equal(select_next_token(out, cfg), x.argmax(-1))
    with pytest.raises(ValueError, match="temperature must be > 0"): apply_temperature(x, 0)


def test_off_values_are_noops():
    x, ids = rand_logits((2, 50), 0), rand_ids(2, 50, 6, 0)
    assert top_k_filter(x, 0) is x and top_p_filter(x, 1.0) is x and min_p_filter(x, 0.0) is x
    assert typical_filter(x, 1.0) is x and apply_repetition_penalty(x, ids, 1.0) is x
    assert no_repeat_ngram_filter(x, ids, 0) is x and apply_presence_frequency_penalty(x, ids, 0.0, 0.0) is x
    off = InferenceConfig(top_k=0, top_p=1.0, repetition_penalty=1.0)
    assert process_logits(x, ids, off) is x


def test_inputs_not_modified():
    x, ids = rand_logits((2, 50), 0), rand_ids(2, 50, 6, 0)
    x0 = x.clone()
    cfg = InferenceConfig(temperature=0.7, min_p=0.1, typical_p=0.9, no_repeat_ngram_size=2, presence_penalty=0.5, frequency_penalty=0.3)
    process_logits(x, ids, cfg, prompt_len=2)
    assert torch.equal(x, x0)


def test_top_k_ties_kept():
    x = torch.tensor([[3., 1., 2., 2., 0.]])
    assert (top_k_filter(x, 2) > INF).sum() == 3
    assert (top_k_filter(x, 1) > INF).sum() == 1


def test_top_token_always_kept():
    x = rand_logits((3, 100), 0)
    for out in (top_p_filter(x, 0.0), min_p_filter(x, 1.0), top_k_filter(x, 1)):
        assert torch.equal(out.argmax(-1), x.argmax(-1))
        assert ((out > INF).sum(-1) >= 1).all()


def one_left(B=2, V=7):
    x = torch.full((B, V), INF)
    x[:, 3] = 1.5
    return x


@pytest.mark.parametrize("f", [
    lambda z: top_k_filter(z, 3), lambda z: top_p_filter(z, 0.5), lambda z: top_p_filter(z, 0.0),
    lambda z: min_p_filter(z, 0.3), lambda z: typical_filter(z, 0.5), lambda z: apply_temperature(z, 0.3),
    lambda z: apply_repetition_penalty(z, torch.tensor([[3, 1], [0, 3]]), 1.3),
    lambda z: apply_presence_frequency_penalty(z, torch.tensor([[3, 3], [0, 1]]), 0.5, 0.5),
    lambda z: no_repeat_ngram_filter(z, torch.tensor([[1, 2, 1], [0, 0, 0]]), 2),
    lambda z: process_logits(z, torch.tensor([[3, 1], [0, 3]]), InferenceConfig(min_p=0.1, typical_p=0.9)),
], ids=["top_k", "top_p", "top_p0", "min_p", "typical", "temperature", "rep", "presence", "ngram", "pipeline"])
def test_all_inf_but_one_no_nan(f):
    out = f(one_left())
    assert not out.isnan().any() and not out.softmax(-1).isnan().any()
    assert (out[:, 3] > INF).all()
    assert torch.equal(select_next_token(out, InferenceConfig(), torch.Generator().manual_seed(0)), torch.tensor([3, 3]))


def presence_frequency_reference(logits, generated, presence, frequency):
    out = logits.clone()
    for b, row in enumerate(generated.tolist()):
        for tok in set(row): out[b, tok] -= frequency * row.count(tok) + presence
    return out


@cases
@seeds
@pytest.mark.parametrize("presence,frequency", [(0.5, 0.0), (0.0, 0.7), (1.2, -0.4), (-2.0, 2.0)])
@pytest.mark.parametrize("G", [0, 1, 15])
def test_presence_frequency(shape, seed, presence, frequency, G):
    x, gen = rand_logits(shape, seed), rand_ids(shape[0], shape[1], G, seed)
    assert_close(apply_presence_frequency_penalty(x, gen, presence, frequency),
                 presence_frequency_reference(x, gen, presence, frequency))


def test_presence_frequency_only_generated_in_pipeline():
    x = rand_logits((1, 20), 0)
    ids = torch.tensor([[1, 2, 3, 4, 4]])  # prompt 1, 2, 3; generated 4, 4
    cfg = InferenceConfig(do_sample=False, repetition_penalty=1.0, presence_penalty=0.5, frequency_penalty=0.25)
    out = process_logits(x, ids, cfg, prompt_len=3)
    assert_close(out, presence_frequency_reference(x, ids[:, 3:], 0.5, 0.25))
    with pytest.raises(ValueError, match="prompt_len"): process_logits(x, ids, cfg)


def test_padding_excluded_from_repetition_penalty():
    x = rand_logits((2, 30), 0).abs() + 1  # positive logits
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 6, 7]])  # row 1 is left-padded with token 0
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    out = apply_repetition_penalty(x, ids, 2.0, mask=mask)
    assert out[1, 0] == x[1, 0]  # the pad token is not penalised
    assert_close(out[1, 6], x[1, 6] / 2) and assert_close(out[0, 5], x[0, 5] / 2)
    # transformers' generate does the same for leading padding through prompt_ignore_length
    same(out, RepetitionPenaltyLogitsProcessor(2.0, prompt_ignore_length=torch.tensor([0, 2]))(ids, x.clone()))
    # ... while the bare processor penalises the pad token
    assert RepetitionPenaltyLogitsProcessor(2.0)(ids, x.clone())[1, 0] == x[1, 0] / 2
    # and the pipeline passes the mask through
    same(process_logits(x, ids, InferenceConfig(do_sample=False, repetition_penalty=2.0), mask=mask), out)


def test_temperature_last_order():
    x, ids = rand_logits((2, 200), 0), rand_ids(2, 200, 5, 0)
    cfg = InferenceConfig(temperature=2.0, top_k=0, top_p=0.6, repetition_penalty=1.0)
    last = process_logits(x, ids, cfg, order="temperature_last")
    same(last, LogitsProcessorList([TopPLogitsWarper(0.6), TemperatureLogitsWarper(2.0)])(ids, x.clone()))   # transformers, in that order
    assert ((last > INF).sum(-1) < (process_logits(x, ids, cfg) > INF).sum(-1)).all()  # hot first keeps more
    with pytest.raises(ValueError, match="order"): process_logits(x, ids, cfg, order="nope")


def test_distribution_stats():
    x = torch.tensor([[0., 0., 0., 0., INF, INF]])
    s = distribution_stats(x)
    assert s["kept"] == 4 and abs(s["entropy"] - torch.log(torch.tensor(4.)).item()) < 1e-6 and abs(s["perplexity"] - 4) < 1e-4
    s = distribution_stats(x, reference=torch.zeros(1, 6), top=2)
    assert abs(s["kept_mass"] - 4 / 6) < 1e-6 and len(s["top_ids"]) == 2
    with pytest.raises(ValueError, match="one distribution"): distribution_stats(torch.zeros(2, 6))


@pytest.mark.parametrize("call,msg", [
    (lambda x: top_k_filter(x, -1), "top_k"), (lambda x: top_p_filter(x, 1.5), "top_p"),
    (lambda x: min_p_filter(x, -0.1), "min_p"), (lambda x: typical_filter(x, 0.0), "typical_p"),
    (lambda x: apply_repetition_penalty(x, torch.zeros(1, 1, dtype=torch.long), 0.0), "repetition_penalty"),
    (lambda x: no_repeat_ngram_filter(x, torch.zeros(1, 1, dtype=torch.long), -1), "no_repeat_ngram_size"),
])
def test_bad_values_raise(call, msg):
    with pytest.raises(ValueError, match=msg): call(torch.zeros(1, 5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes(dtype):
    x, ids = rand_logits((2, 64), 0).to(dtype), rand_ids(2, 64, 6, 0)
    cfg = InferenceConfig(temperature=0.8, min_p=0.05, typical_p=0.95, no_repeat_ngram_size=2, presence_penalty=0.3)
    out = process_logits(x, ids, cfg, prompt_len=2)
    assert out.dtype == dtype and not out.isnan().any()
    same(process_logits(x, ids, cfg.replace(presence_penalty=0.0)), hf_processors(cfg)(ids, x.clone()))


def test_generate_left_padded_batch():
    "With left padding, our mask-aware repetition penalty matches generate's (prompt_ignore_length), token for token."
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=2)).eval()
    with torch.no_grad(): model.transformer.wte.weight.mul_(10)  # peaky, GPT-2-like distributions (the head is tied)
    cfg = InferenceConfig(max_new_tokens=10, temperature=0.5, top_k=40, top_p=0.9, repetition_penalty=3.0)
    with torch.no_grad(): nxt = model(torch.tensor([[9, 9, 31]])).logits[0, -1].topk(3).indices.tolist()
    pad = [t for t in nxt if t not in (9, 31)][0]  # a pad token the model likes next, not in the prompt
    prompt = torch.tensor([[pad, pad, 9, 9, 31], [4, 9, 17, 17, 42]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    torch.manual_seed(7)
    ref = model.generate(prompt, attention_mask=mask, do_sample=True, max_new_tokens=cfg.max_new_tokens,
                         temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                         repetition_penalty=cfg.repetition_penalty, pad_token_id=pad, eos_token_id=None)
    torch.manual_seed(7)
    seq, m = prompt, mask
    with torch.no_grad():
        for _ in range(cfg.max_new_tokens):
            pos = (m.cumsum(-1) - 1).clamp(min=0)
            logits = model(seq, attention_mask=m, position_ids=pos).logits[:, -1].float()
            tok = select_next_token(process_logits(logits, seq, cfg, prompt_len=prompt.shape[1], mask=m), cfg)
            seq, m = torch.cat([seq, tok[:, None]], 1), torch.cat([m, torch.ones_like(m[:, :1])], 1)
    assert seq.tolist() == ref.tolist()


# --- one draw: multinomial_one is torch.multinomial, bit for bit --------------------------------

import gpt2_learn.sampling as sampling_module
from gpt2_learn.sampling import multinomial_one


def kept_probs(B, seed, k=50, p=1.0, V=50257):
    "Softmax of GPT-2-sized logits after top-k / top-p, as the sampling pipeline hands them over."
    x = top_p_filter(top_k_filter(rand_logits((B, V), seed), k), p)
    return x.softmax(-1)


@pytest.fixture
def race_calls(monkeypatch):
    "Counts the calls of the fast path, so that a test can tell it ran (and did not just fall back)."
    calls = []
    real = sampling_module._race
    monkeypatch.setattr(sampling_module, "_race", lambda probs, g: calls.append(probs.shape) or real(probs, g))
    return calls


@pytest.mark.parametrize("B", [1, 3, 8])
@pytest.mark.parametrize("k,p", [(1, 1.0), (50, 1.0), (50, 0.9), (0, 0.5), (3000, 1.0)])
def test_multinomial_one_is_torch_multinomial(B, k, p, race_calls):
    probs = kept_probs(B, B + k, k, p)
    for seed in range(40):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        ours, theirs = multinomial_one(probs, g2), torch.multinomial(probs, 1, generator=g1)[:, 0]
        assert torch.equal(ours, theirs) and ours.dtype == torch.long and ours.shape == (B,)
        assert torch.equal(g2.get_state(), g1.get_state())                     # the next draw is the same too
    kept = int(probs.count_nonzero())
    assert bool(race_calls) == (kept * 16 <= probs.numel())                    # fast path when few are kept (3000: not)


def test_multinomial_one_global_generator(race_calls):
    probs = kept_probs(2, 5)
    torch.manual_seed(3); ours = multinomial_one(probs); ours_next = torch.rand(4)
    torch.manual_seed(3); theirs = torch.multinomial(probs, 1)[:, 0]; theirs_next = torch.rand(4)
    assert torch.equal(ours, theirs) and torch.equal(ours_next, theirs_next) and race_calls


def test_multinomial_one_float64_and_small_vocab(race_calls):
    probs = kept_probs(2, 6).double()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(multinomial_one(probs, g2), torch.multinomial(probs, 1, generator=g1)[:, 0]) and race_calls
    small = kept_probs(1, 7, k=5, V=300)                                       # nothing to gain: torch.multinomial itself
    race_calls.clear()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(multinomial_one(small, g2), torch.multinomial(small, 1, generator=g1)[:, 0]) and not race_calls


def test_multinomial_one_falls_back_cleanly(monkeypatch):
    "A uniform of exactly 0 (the race returns None) and a PyTorch that draws differently both end in torch.multinomial."
    probs = kept_probs(2, 8)
    real = sampling_module._race
    monkeypatch.setattr(sampling_module, "_race", lambda probs, g: (real(probs, g), None)[1])   # draws, then gives up
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert torch.equal(multinomial_one(probs, g2), torch.multinomial(probs, 1, generator=g1)[:, 0])
    assert torch.equal(g2.get_state(), g1.get_state())                         # the generator was restored first
    monkeypatch.setattr(sampling_module, "_race", real)
    monkeypatch.setattr(sampling_module, "_RACE_IS_MULTINOMIAL", False)
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert torch.equal(multinomial_one(probs, g2), torch.multinomial(probs, 1, generator=g1)[:, 0])


def test_multinomial_one_self_check_passes_here():
    sampling_module._RACE_IS_MULTINOMIAL = None
    assert sampling_module._race_is_multinomial() is True


@pytest.mark.parametrize("bad", [[[0.5, -0.1, 0.6]], [[float("nan"), 1.0]], [[0.0, 0.0]], [[float("inf"), 0.0]]])
def test_multinomial_one_bad_probabilities_raise_like_torch(bad):
    probs = torch.tensor(bad).repeat(1, 5000)                                  # large enough for the fast path
    with pytest.raises(RuntimeError) as theirs: torch.multinomial(probs, 1)
    with pytest.raises(RuntimeError) as ours: multinomial_one(probs)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("name, f", [("top_k", lambda x: top_k_filter(x, 20)), ("top_p", lambda x: top_p_filter(x, 0.8)),
                                     ("top_p after top_k", lambda x: top_p_filter(top_k_filter(x, 20), 0.8)),
                                     ("min_p", lambda x: min_p_filter(x, 0.05)), ("typical", lambda x: typical_filter(x, 0.9))])
def test_filters_take_one_row_as_well_as_a_batch(name, f):
    "A single distribution (V,), as a learner passes it in a notebook, is filtered as the same row of a (1, V) batch."
    row = rand_logits((50257,), 3)
    assert torch.equal(f(row), f(row[None])[0]), name                      # (the batch form is checked against transformers above)


IDS = torch.tensor([5, 9, 5, 17, 9, 40, 5])                     # ends in 5: 5 9 and 5 17 are bigrams to ban
@pytest.mark.parametrize("name, f", [
    ("repetition", lambda x, ids: apply_repetition_penalty(x, ids, 1.3)),
    ("repetition, masked", lambda x, ids: apply_repetition_penalty(x, ids, 1.3, mask=(ids != 9).long())),
    ("presence/frequency", lambda x, ids: apply_presence_frequency_penalty(x, ids, presence=0.4, frequency=0.7)),
    ("n-gram", lambda x, ids: no_repeat_ngram_filter(x, ids, 2)),
    ("process_logits", lambda x, ids: process_logits(x, ids, InferenceConfig(temperature=0.8, top_k=30, top_p=0.9, repetition_penalty=1.2,
                                                                          no_repeat_ngram_size=2, presence_penalty=0.3, frequency_penalty=0.2),
                                                    prompt_len=3, mask=(ids != 9).long()))])
def test_penalties_take_one_row_as_well_as_a_batch(name, f):
    "Logits (V,) with their ids (T,) are penalised as the same row of a (1, V) batch with ids (1, T); and something changed."
    row = rand_logits((50257,), 4)
    one, batch = f(row, IDS), f(row[None], IDS[None])[0]
    assert one.shape == row.shape and torch.equal(one, batch), name
    assert not torch.equal(one, row), name


def test_presence_frequency_penalty_needs_one_row_of_ids_per_row():
    with pytest.raises(ValueError, match="one row of ids per row"):
        apply_presence_frequency_penalty(torch.zeros(50), torch.tensor([[1, 2], [3, 4]]), presence=0.5)


def layouts(probs):
    "The same probabilities stored other ways: column-major, a strided view, every other row of a bigger tensor, expanded."
    wide = torch.zeros(probs.shape[0], 2 * probs.shape[1], dtype=probs.dtype)
    wide[:, ::2] = probs
    tall = torch.zeros(2 * probs.shape[0], probs.shape[1], dtype=probs.dtype)
    tall[::2] = probs
    return {"column-major": probs.t().contiguous().t(), "strided": wide[:, ::2], "rows": tall[::2],
            "expanded": probs[:1].expand(probs.shape[0], -1)}


@pytest.mark.parametrize("layout", ["column-major", "strided", "rows", "expanded"])
def test_multinomial_one_is_torch_multinomial_for_any_layout(layout):
    "Issue 18.2: 3 x 10,000, top-20 kept, column-major: [1472, 7880, 1770] where torch.multinomial drew [9656, 9355, 8009]."
    probs = top_k_filter(rand_logits((3, 10_000), 0), 20).softmax(-1)
    probs = layouts(probs)[layout]
    assert not probs.is_contiguous()
    for seed in range(5):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        ours, theirs = multinomial_one(probs, g2), torch.multinomial(probs, 1, generator=g1)[:, 0]
        assert torch.equal(ours, theirs), (seed, ours.tolist(), theirs.tolist())
        assert torch.equal(g2.get_state(), g1.get_state())


# --- the top-p shortcut and the finite-logits check (moved here from the lesson) ---------------

@pytest.mark.parametrize("p", [0.0, 0.3, 0.9, 0.999])
def test_top_p_shortcut_gives_the_full_sorts_bits(p):
    "`_top_p_few` (sort only the finite logits) is `_top_p_sorted` bit for bit, and gives way to it on ties."
    from gpt2_learn.sampling import _top_p_few, _top_p_sorted
    few = top_k_filter(torch.randn(3, 50257, generator=torch.Generator().manual_seed(0)) * 4, 60)
    same(_top_p_few(few, p), _top_p_sorted(few, p))
    same(top_p_filter(few, p), _top_p_sorted(few, p))
    tied = few.clone()
    tied[0, tied[0].argmax()] = tied[0].topk(2).values[1]                 # a tie: torch.sort's order decides
    assert _top_p_few(tied, p) is None
    assert _top_p_few(torch.randn(2, 100), p) is None                     # most logits finite: nothing to gain


def test_check_logits_names_nan_and_inf():
    from gpt2_learn.sampling import NonFiniteLogitsError, check_logits
    from gpt2_learn.generation import NonFiniteLogitsError as from_generation, check_logits as check_from_generation
    assert from_generation is NonFiniteLogitsError and check_from_generation is check_logits
    ok = torch.randn(2, 50257)
    assert check_logits(ok) is ok
    assert check_logits(ok.half()) is not None                             # float16 summed in float32: no overflow
    for bad in (float("nan"), float("inf"), float("-inf")):
        broken = ok.clone()
        broken[1, 7] = bad
        with pytest.raises(NonFiniteLogitsError, match="NaN or inf"):
            check_logits(broken)
