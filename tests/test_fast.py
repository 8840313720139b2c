"The fast path's fixed-shape decode step, run eagerly on the CPU (the GPU check runs it in CUDA graphs)."
import pytest
import torch

from conftest import ours_from_hf
from gpt2_learn.config import InferenceConfig
from gpt2_learn.fast import fast_generate, fast_path_supports, get_decoder, sample_exponential, decode_floor_ms
from gpt2_learn.generation import generate_ids, pad_left
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


def test_static_step_stops_at_eos(hf_small):
    ours = ours_from_hf(hf_small)
    with torch.no_grad(): ours.ln_f.bias.copy_(ours.wte.weight[50256] * 50)     # make <|endoftext|> the argmax
    info = {}
    toks = list(fast_generate(ours, P, 10, InferenceConfig(do_sample=False, repetition_penalty=1.0), info=info))
    assert [int(t) for t in toks] == [50256] and info["stop_reason"] == "eos"


def test_sampled_tokens_are_seeded_and_follow_the_pipeline(hf_small):
    ours = ours_from_hf(hf_small)
    cfg = InferenceConfig(top_k=5, seed=3)
    a = torch.stack(list(fast_generate(ours, P, 20, cfg)), 1)
    b = torch.stack(list(fast_generate(ours, P, 20, cfg)), 1)
    assert torch.equal(a, b)
    assert not torch.equal(a, torch.stack(list(fast_generate(ours, P, 20, cfg.replace(seed=4))), 1))
    # every sampled token survived its step's pipeline (penalty, then top-5), checked by replaying the sequence
    seq = torch.cat([P, a], 1)
    with torch.no_grad(): logits = ours(seq)[0, 15:-1]
    from gpt2_learn.sampling import process_logits
    for i, t in enumerate(a[0]):
        scores = process_logits(logits[i:i + 1].float(), seq[:, :16 + i], cfg)
        assert torch.isfinite(scores[0, t])


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


def test_memory_floor():
    ms = decode_floor_ms(GPT2Config(), bandwidth_gb_s=1000, seq_len=0)
    assert ms == pytest.approx(124_439_808 * 2 / 1e12 * 1e3)
