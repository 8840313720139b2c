"Generation against transformers' generate (random weights, 124M shape): greedy, sampled, batched, streamed."
import pytest
import torch

from conftest import ours_from_hf, peaky_hf
from gpt2_learn.config import InferenceConfig
from gpt2_learn.generation import TextStream, generate, generate_ids, pad_left
from gpt2_learn.tokenizer import load_tokenizer

PROMPT = torch.randint(0, 50257, (1, 16), generator=torch.Generator().manual_seed(5))


def hf_generate(hf, ids, **kw):
    with torch.no_grad():
        return hf.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=50256, max_new_tokens=100, **kw)


@pytest.mark.parametrize("penalty", [1.0, 1.2])
def test_greedy_100_tokens_equals_transformers(hf_124m, ours_124m, penalty):
    expected = hf_generate(hf_124m, PROMPT, do_sample=False, repetition_penalty=penalty)
    ours = generate_ids(ours_124m, PROMPT, 100, do_sample=False, repetition_penalty=penalty)
    assert expected.shape[1] == PROMPT.shape[1] + 100            # no early EOS, so the comparison is long
    assert torch.equal(ours, expected)


def test_sampling_guide_defaults_equals_transformers(hf_124m, ours_124m):
    cfg = InferenceConfig()                                       # temperature 1.0, top_k 50, top_p 0.95, rep 1.2
    torch.manual_seed(1234)
    expected = hf_generate(hf_124m, PROMPT, do_sample=True, temperature=cfg.temperature, top_k=cfg.top_k,
                           top_p=cfg.top_p, repetition_penalty=cfg.repetition_penalty)
    ours = generate_ids(ours_124m, PROMPT, 100, cfg.replace(seed=1234))
    assert torch.equal(ours, expected)
    assert not torch.equal(ours, generate_ids(ours_124m, PROMPT, 100, cfg.replace(seed=4321)))


def test_sampling_other_settings_equal_transformers(hf_small):
    ours = ours_from_hf(hf_small)
    ids = PROMPT[:, :8]
    torch.manual_seed(7)
    expected = hf_generate(hf_small, ids, do_sample=True, temperature=0.7, top_k=0, top_p=0.9, min_p=0.05,
                           repetition_penalty=1.3)
    got = generate_ids(ours, ids, 100, InferenceConfig(temperature=0.7, top_k=0, top_p=0.9, min_p=0.05,
                                                        repetition_penalty=1.3, seed=7))
    assert torch.equal(got, expected)


def test_cached_equals_uncached(hf_small):
    ours = ours_from_hf(hf_small)
    for kw in (dict(do_sample=False), dict(seed=11)):
        assert torch.equal(generate_ids(ours, PROMPT, 40, **kw), generate_ids(ours, PROMPT, 40, use_cache=False, **kw))


def test_padded_batch_equals_each_prompt_alone(hf_124m, ours_124m):
    prompts = [PROMPT[0, :16].tolist(), PROMPT[0, :3].tolist(), PROMPT[0, 5:12].tolist()]
    ids, mask = pad_left(prompts)
    batch = generate_ids(ours_124m, ids, 30, attention_mask=mask, do_sample=False)[:, ids.shape[1]:]
    for row, p in zip(batch, prompts):
        alone = generate_ids(ours_124m, torch.tensor([p]), 30, do_sample=False)[0, len(p):]
        assert torch.equal(row, alone)


def test_padded_batch_equals_transformers(hf_small):
    ours = ours_from_hf(hf_small)
    ids, mask = pad_left([PROMPT[0, :10].tolist(), PROMPT[0, :4].tolist()])
    with torch.no_grad():
        expected = hf_small.generate(ids, attention_mask=mask, pad_token_id=50256, max_new_tokens=30, do_sample=False,
                                     repetition_penalty=1.2)
    assert torch.equal(generate_ids(ours, ids, 30, attention_mask=mask, do_sample=False), expected)


def test_yields_one_token_per_row_per_step(hf_small):
    ours = ours_from_hf(hf_small)
    steps = list(ours.generate(PROMPT.repeat(3, 1), max_new_tokens=5, do_sample=False))
    assert len(steps) == 5 and all(t.shape == (3,) and t.dtype == torch.long for t in steps)


def test_prompt_longer_than_context_is_an_error(hf_small):
    ours = ours_from_hf(hf_small)
    with pytest.raises(ValueError, match="context window"):
        next(generate(ours, torch.zeros(1, 200, dtype=torch.long)))


def test_max_new_tokens_clipped_with_warning(hf_small):
    ours = ours_from_hf(hf_small)
    info = {}
    with pytest.warns(UserWarning, match="clipped"):
        out = generate_ids(ours, torch.zeros(1, 120, dtype=torch.long), 50, do_sample=False, eos_token_id=None, info=info)
    assert out.shape[1] == 128 and info["stop_reason"] == "context window"


def test_invalid_config_names_the_field(hf_small):
    ours = ours_from_hf(hf_small)
    with pytest.raises(ValueError, match="top_p"):
        next(generate(ours, PROMPT, 5, top_p=1.5))


@pytest.mark.parametrize("text", ["🦄🌈 emoji first", "日本語のテキストと中文", "mixed: café ñ 😀 — 你好 👩‍👩‍👧"])
def test_streamed_text_equals_full_decode_without_broken_chars(hf_small, text):
    "The prompt mixes emoji and CJK; random weights emit arbitrary byte tokens, the hard case for streaming."
    tok = load_tokenizer()
    ours = ours_from_hf(hf_small)
    for seed in range(3):
        stream = TextStream(ours, tok, text, max_new_tokens=40, seed=seed, eos_token_id=None)
        pieces = list(stream)
        full = tok.decode(stream.token_ids)
        assert "".join(pieces) == full
        # random tokens can form truly invalid UTF-8 (that is U+FFFD in the full decode too); the stream adds none
        assert sum(p.count("\ufffd") for p in pieces) == full.count("\ufffd")


@pytest.mark.parametrize("text", ["I ❤️ 🦄 and 你好世界 👩‍👩‍👧", "🇫🇷🇯🇵 flags, ñandú, Ελληνικά, 한국어 텍스트", "def f():\n    return '😀' * 3  # 中文"])
def test_streaming_emoji_tokens_one_at_a_time(text):
    from gpt2_learn.tokenizer import StreamDecoder
    tok = load_tokenizer()
    ids = tok.encode(text)
    dec = StreamDecoder(tok)
    pieces = [dec.put(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)


# ---------------------------------------------------------------- the pipeline inside the loop, against transformers

@pytest.mark.parametrize("kw", [dict(typical_p=0.9, temperature=0.8, top_k=0, top_p=1.0),
                                dict(no_repeat_ngram_size=2, temperature=1.3),
                                dict(do_sample=False, no_repeat_ngram_size=2, repetition_penalty=1.0)])
def test_typical_and_ngram_bans_in_generate_equal_transformers(kw):
    "typical_p and no_repeat_ngram_size through our whole decode loop: the same tokens as generate, seeded."
    hf = peaky_hf(); ours = ours_from_hf(hf)
    cfg = InferenceConfig(max_new_tokens=30, eos_token_id=None, seed=5, **kw)
    prompt = torch.tensor([[5, 17, 17, 42, 7, 5, 17]])
    torch.manual_seed(5)
    with torch.no_grad():
        ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=30, pad_token_id=0, eos_token_id=None,
                          do_sample=cfg.do_sample, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                          typical_p=cfg.typical_p, no_repeat_ngram_size=cfg.no_repeat_ngram_size,
                          repetition_penalty=cfg.repetition_penalty)
    assert torch.equal(generate_ids(ours, prompt, config=cfg), ref)


def test_sampled_padded_batch_in_generate_equals_transformers():
    "Left padding with a pad token the model likes: our loop masks it out of the repetition penalty as generate does."
    hf = peaky_hf(); ours = ours_from_hf(hf)
    with torch.no_grad(): nxt = hf(torch.tensor([[9, 9, 31]])).logits[0, -1].topk(3).indices.tolist()
    pad = [t for t in nxt if t not in (9, 31)][0]
    prompt = torch.tensor([[pad, pad, 9, 9, 31], [4, 9, 17, 17, 42]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    cfg = InferenceConfig(max_new_tokens=10, temperature=0.5, top_k=40, top_p=0.9, repetition_penalty=3.0, eos_token_id=None, seed=7)
    torch.manual_seed(7)
    with torch.no_grad():
        ref = hf.generate(prompt, attention_mask=mask, do_sample=True, max_new_tokens=10, temperature=0.5, top_k=40, top_p=0.9,
                          repetition_penalty=3.0, pad_token_id=pad, eos_token_id=None)
    assert torch.equal(generate_ids(ours, prompt, config=cfg, attention_mask=mask), ref)


@pytest.mark.parametrize("seed", range(4))
def test_sampled_batch_stops_at_eos_as_transformers_does(seed):
    "EOS a token the model emits: rows stop one by one and pad with EOS after it, as generate does (same seed, same tokens)."
    hf = peaky_hf(); ours = ours_from_hf(hf)
    prompt = torch.tensor([[5, 17, 17, 42, 7], [4, 9, 17, 17, 42]])
    kw = dict(attention_mask=torch.ones_like(prompt), do_sample=True, max_new_tokens=20, top_k=50, top_p=0.95, repetition_penalty=1.2)
    torch.manual_seed(seed)
    with torch.no_grad(): probe = hf.generate(prompt, pad_token_id=0, eos_token_id=None, **kw)
    eos = int(probe[0, 5 + 3])                                              # the 4th token row 0 samples under this seed
    torch.manual_seed(seed)
    with torch.no_grad(): ref = hf.generate(prompt, pad_token_id=eos, eos_token_id=eos, **kw)
    got = generate_ids(ours, prompt, 20, InferenceConfig(seed=seed, eos_token_id=eos, top_k=50, top_p=0.95, repetition_penalty=1.2))
    assert (ref[0, 5 + 4:] == eos).all() and (ref[1, 5 + 4:] != eos).any(), "row 0 should stop at EOS while row 1 goes on"
    assert torch.equal(got, ref)


def test_presence_and_frequency_penalties_in_generate_count_generated_tokens_only():
    "OpenAI's penalties through our loop, against a plain reference loop over transformers' logits (no processor exists)."
    hf = peaky_hf(); ours = ours_from_hf(hf)
    prompt = torch.tensor([[3, 8, 8, 8, 21, 3, 8]])                    # repeats: penalising the prompt would change choices
    with torch.no_grad(): likes = hf(prompt).logits[0, -1].topk(5).indices
    prompt = torch.cat([prompt, likes[None]], 1)                        # the tokens the model wants next, in the prompt
    presence, frequency = 1.5, 0.8
    seq = prompt
    for _ in range(20):                                                 # greedy, penalties over seq[:, T0:] only
        with torch.no_grad(): logits = hf(seq).logits[:, -1].float()
        for tok in set(seq[0, prompt.shape[1]:].tolist()):
            logits[0, tok] -= presence + frequency * seq[0, prompt.shape[1]:].tolist().count(tok)
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], 1)
    got = generate_ids(ours, prompt, 20, do_sample=False, repetition_penalty=1.0, presence_penalty=presence,
                       frequency_penalty=frequency, eos_token_id=None)
    assert torch.equal(got, seq)


def test_stop_string_across_token_boundaries():
    "A stop string that spans tokens is caught whole: nothing of it is streamed, however the pieces fall."
    tok = load_tokenizer()
    continuation = " there, general Kenobi. More text after it"
    ids = tok.encode(continuation)
    def scripted(input_ids, config=None, trace=None, info=None):
        for t in ids:
            yield torch.tensor([t])
    for stop in ("e, ge", "re, general K", ", g", "Kenobi."):
        assert not any(stop in tok.decode([t]) for t in ids)         # no single token holds it
        ts = TextStream(None, tok, "Hello", InferenceConfig(stop=(stop,)), generate_fn=scripted)
        pieces = list(ts)
        assert "".join(pieces) == continuation[:continuation.index(stop)], (stop, pieces)
        assert ts.stop_reason == "stop string"


def test_config_as_a_dict_and_trace_top_checked(hf_small):
    "generate(config={...}) works as TextGenerator's does; a wrong config or trace_top is a sentence naming it."
    ours = ours_from_hf(hf_small)
    as_dict = torch.stack(list(generate(ours, PROMPT, config={"max_new_tokens": 4, "do_sample": False})), 1)
    assert torch.equal(as_dict, torch.stack(list(generate(ours, PROMPT, config=InferenceConfig(max_new_tokens=4, do_sample=False))), 1))
    with pytest.raises(TypeError, match="config must be an InferenceConfig"): next(generate(ours, PROMPT, config=0.7))
    with pytest.raises(TypeError, match="no field 'temp'"): next(generate(ours, PROMPT, config={"temp": 0.7}))
    for bad in (-1, 0, 2.5, True):
        with pytest.raises(ValueError, match="trace_top must be an integer >= 1"): next(generate(ours, PROMPT, 3, trace=[], trace_top=bad))
    with pytest.raises(ValueError, match="num_beams=3 is beam search.*beam_search"):       # never a silent sampled run
        next(generate(ours, PROMPT, 3, num_beams=3))
    tok = load_tokenizer()
    assert TextStream(ours, tok, "Hello", {"max_new_tokens": 2}).config.max_new_tokens == 2
