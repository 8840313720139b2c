"Beam search: token for token and score for score as transformers' generate(num_beams=...), on the KV cache."
import os
import tempfile
import pytest
import torch
import transformers
from gpt2_learn.beam import beam_search, distinct_ngrams, mean_logprob
from gpt2_learn.config import InferenceConfig
from gpt2_learn.generation import pad_left
from conftest import ours_from_hf

EOS = 7


@pytest.fixture(scope="module")
def eos_pair():
    "A tiny random GPT-2 (vocab 300) pushed towards token 7 (its EOS) by ln_f's bias: beams end at many lengths."
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=300, n_positions=64, n_embd=64, n_layer=2, n_head=2,
                                  bos_token_id=EOS, eos_token_id=EOS, pad_token_id=EOS)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        hf.transformer.wte.weight.mul_(4)
        w = hf.transformer.wte.weight[EOS]
        hf.transformer.ln_f.bias.copy_(5.0 * w / w.dot(w))          # + 5 on the EOS logit
    return hf, ours_from_hf(hf)


def _hf(hf, ids, mask, cfg, eos=EOS, pad=EOS):
    out = hf.generate(ids, attention_mask=mask, num_beams=cfg.num_beams, length_penalty=cfg.length_penalty,
                      early_stopping=cfg.early_stopping, num_return_sequences=cfg.num_return_sequences,
                      max_new_tokens=cfg.max_new_tokens, do_sample=False, repetition_penalty=cfg.repetition_penalty,
                      no_repeat_ngram_size=cfg.no_repeat_ngram_size, eos_token_id=eos, pad_token_id=pad,
                      output_scores=True, return_dict_in_generate=True)
    return out.sequences, out.sequences_scores


SETTINGS = [  # num_beams, length_penalty, early_stopping, num_return_sequences, max_new_tokens, repetition, no-repeat n
    (2, 1.0, False, 2, 12, 1.0, 0), (3, 0.5, True, 2, 15, 1.0, 0), (4, 2.0, "never", 4, 15, 1.0, 0),
    (5, 1.0, False, 3, 10, 1.0, 0), (3, 1.0, "never", 3, 12, 1.0, 0), (4, 0.0, True, 2, 12, 1.0, 0),
    (3, 1.0, False, 2, 12, 1.3, 2), (4, -1.0, "never", 1, 8, 1.0, 3),
    (3, 0.0, "never", 3, 10, 1.0, 0), (4, 0.0, True, 4, 10, 1.0, 0)]   # an EOS ranked K..2K-1 may not finish


def test_matches_transformers_on_a_model_that_likes_eos(eos_pair):
    hf, ours = eos_pair
    torch.manual_seed(1)
    lengths = set()
    for K, lp, es, R, n, rp, ng in SETTINGS:
        ids = torch.randint(8, 300, (1, 5))
        cfg = InferenceConfig(max_new_tokens=n, num_beams=K, length_penalty=lp, early_stopping=es,
                              num_return_sequences=R, eos_token_id=EOS, repetition_penalty=rp, no_repeat_ngram_size=ng)
        res = beam_search(ours, ids, config=cfg)
        seqs, scores = _hf(hf, ids, torch.ones_like(ids), cfg)
        assert torch.equal(res.sequences, seqs), (K, lp, es, R)
        torch.testing.assert_close(res.scores, scores, atol=1e-5, rtol=1e-5)
        lengths |= {int((s[5:] != EOS).sum()) for s in res.sequences}
    assert len(lengths) >= 5 and min(lengths) < 8, lengths          # beams really did end at many lengths


def test_left_padded_batch_and_no_eos(eos_pair):
    hf, ours = eos_pair
    torch.manual_seed(2)
    ids, mask = pad_left([torch.randint(8, 300, (L,)).tolist() for L in (3, 6, 4)], pad_id=EOS)
    cfg = InferenceConfig(max_new_tokens=10, num_beams=3, num_return_sequences=2, eos_token_id=EOS,
                          repetition_penalty=1.0)
    res = beam_search(ours, ids, mask, cfg)
    seqs, scores = _hf(hf, ids, mask, cfg)
    assert torch.equal(res.sequences, seqs) and res.sequences.shape[0] == 6
    torch.testing.assert_close(res.scores, scores, atol=1e-5, rtol=1e-5)
    full = cfg.replace(num_beams=4, num_return_sequences=4, early_stopping=True)   # a full prompt takes no more
    res = beam_search(ours, ids, mask, full)                                       # finished beams, the others go on
    seqs, scores = _hf(hf, ids, mask, full)
    assert torch.equal(res.sequences, seqs)
    torch.testing.assert_close(res.scores, scores, atol=1e-5, rtol=1e-5)
    cfg = cfg.replace(eos_token_id=None, length_penalty=0.5)            # nothing ends early: every beam is 10 long
    res = beam_search(ours, ids, mask, cfg)
    seqs, scores = _hf(hf, ids, mask, cfg, eos=None, pad=0)
    assert torch.equal(res.sequences, seqs) and res.sequences.shape == (6, 16)
    torch.testing.assert_close(res.scores, scores, atol=1e-5, rtol=1e-5)


def test_the_cache_is_reordered_not_recomputed(eos_pair):
    _, ours = eos_pair
    ids = torch.randint(8, 300, (2, 5))
    shapes = []
    hook = ours.register_forward_pre_hook(lambda m, args, kw: shapes.append(tuple(args[0].shape)), with_kwargs=True)
    try: res = beam_search(ours, ids, max_new_tokens=9, num_beams=4, eos_token_id=None, repetition_penalty=1.0)
    finally: hook.remove()
    assert shapes[0] == (2, 5) and shapes[1:] == [(8, 1)] * 8, shapes   # the prompts once, then one token per beam
    assert res.sequences.shape == (2, 14)


def test_bundled_model_matches_transformers():
    from gpt2_learn.tokenizer import load_tokenizer
    from gpt2_learn.weights import load_bundled_model, save_pretrained
    ours, tok = load_bundled_model().eval(), load_tokenizer()
    with tempfile.TemporaryDirectory() as d:
        hf = transformers.GPT2LMHeadModel.from_pretrained(save_pretrained(ours, d)).eval()
    ids, mask = pad_left([tok.encode(p) for p in ["Once upon a time", "The algorithm works by", "def fibonacci(n):"]])
    for cfg in (InferenceConfig(max_new_tokens=16, num_beams=4, num_return_sequences=2, repetition_penalty=1.2,
                                no_repeat_ngram_size=3),
                InferenceConfig(max_new_tokens=16, num_beams=3, length_penalty=2.0, early_stopping=True,
                                repetition_penalty=1.0)):
        res = beam_search(ours, ids, mask, cfg)
        seqs, scores = _hf(hf, ids, mask, cfg, eos=50256, pad=50256)
        assert torch.equal(res.sequences, seqs)
        torch.testing.assert_close(res.scores, scores, atol=1e-5, rtol=1e-5)


def test_bad_input_says_what_to_do(eos_pair):
    _, ours = eos_pair
    ids = torch.tensor([[1, 2, 3]])
    for kw, msg in [(dict(num_beams=0), "num_beams must be an integer in [1, 1024]"),
                    (dict(num_beams=2, num_return_sequences=3),
                     "num_return_sequences must be an integer in [1, num_beams=2]"),
                    (dict(early_stopping="sometimes"), "early_stopping must be True, False or \"never\""),
                    (dict(length_penalty=float("inf")), "length_penalty must be a number"),
                    (dict(eos_token_id=300), "eos_token_id=300 is not a token of this model"),
                    (dict(pad_token_id=-1, eos_token_id=EOS), "pad_token_id must be a token id >= 0")]:
        with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("]", r"\]")):
            beam_search(ours, ids, max_new_tokens=3, **kw)
    with pytest.raises(TypeError, match="InferenceConfig has no field 'beams'"):
        beam_search(ours, ids, beams=3)
    with pytest.raises(ValueError, match="the prompt is empty"):
        beam_search(ours, torch.zeros((1, 0), dtype=torch.long), num_beams=2, eos_token_id=EOS)


def test_measures():
    assert distinct_ngrams([[1, 2, 3, 1, 2, 3]], 3) == 3 / 4
    assert distinct_ngrams([[1, 2]], 3) != distinct_ngrams([[1, 2]], 3)      # nan: no 3-gram
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=300, n_positions=32, n_embd=32, n_layer=2,
                                                              n_head=2)).eval()
    ids = torch.randint(0, 300, (1, 9))
    with torch.no_grad(): loss = hf(ids[:, 3:], labels=ids[:, 3:]).loss      # transformers' mean NLL of tokens 2..
    assert abs(mean_logprob(ours_from_hf(hf), ids[0, 3:], 1) + float(loss)) < 1e-5
    with pytest.raises(ValueError, match="prompt_len must be in"):
        mean_logprob(ours_from_hf(hf), ids[0], 9)
