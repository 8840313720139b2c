"""Speculative decoding (gpt2_learn.speculative): greedy output identical to the target's own and to transformers'
assisted generation; sampled output distributed as the target's (chi-square tests, false-alarm rate 1e-3 each)."""
import os, tempfile, warnings
import pytest
import torch
from gpt2_learn.config import GPT2Config, InferenceConfig
from gpt2_learn.generation import generate, pad_left
from gpt2_learn.model import GPT2Model
from gpt2_learn.sampling import process_logits
from gpt2_learn.speculative import (accept_or_resample, acceptance_by_position, draft_model_path, load_draft_model,
                                    speculative_generate)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ALPHA = 1e-3    # each statistical test's false-alarm rate: a correct implementation fails it once in 1,000 seeds


def tiny(seed: int, n_embd: int = 16, n_layer: int = 1, vocab: int = 48, n_positions: int = 40, scale: float = 8.0):
    "A random GPT-2; its embedding scaled up so that its next-token distributions are far from uniform."
    torch.manual_seed(seed)
    model = GPT2Model(GPT2Config(vocab_size=vocab, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=2))
    with torch.no_grad():
        model.wte.weight.mul_(scale)
    return model.eval()


@pytest.fixture(scope="module")
def pair():
    return tiny(0, n_embd=32, n_layer=2), tiny(1)


def tokens(stream) -> list[int]:
    return [int(t) for t in stream]


def chi_square_p_value(counts: dict, probs: dict, n: int) -> float:
    "Pearson's chi-square test of `counts` (n draws) against `probs`; cells expecting fewer than 5 are pooled."
    assert sum(counts.values()) == n and set(counts) <= set(probs), "a draw outside the target's support"
    expected, observed, pooled_e, pooled_o = [], [], 0.0, 0
    for key, p in probs.items():
        if p * n >= 5:
            expected.append(p * n)
            observed.append(counts.get(key, 0))
        else:
            pooled_e += p * n
            pooled_o += counts.get(key, 0)
    if pooled_e > 0:
        expected.append(pooled_e)
        observed.append(pooled_o)
    e, o = torch.tensor(expected, dtype=torch.float64), torch.tensor(observed, dtype=torch.float64)
    e = e * n / e.sum()
    stat, dof = float(((o - e) ** 2 / e).sum()), len(e) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


@torch.no_grad()
def exact_joint(model, prompt: torch.Tensor, config: InferenceConfig, n: int) -> dict:
    "The exact probability of every possible first n tokens under `model` and `config`'s pipeline (no EOS)."
    out = {}
    def walk(ids, prob):
        if ids.shape[1] - prompt.shape[1] == n:
            out[tuple(ids[0, prompt.shape[1]:].tolist())] = prob
            return
        logits = model(ids)[0, -1].float()[None]
        probs = process_logits(logits, ids, config, prompt_len=prompt.shape[1])[0].softmax(-1)
        for t in probs.nonzero()[:, 0].tolist():
            walk(torch.cat([ids, torch.tensor([[t]])], dim=1), prob * float(probs[t]))
    walk(prompt, 1.0)
    return out


def test_greedy_is_the_targets_greedy(pair):
    target, draft = pair
    for seed, rp in ((0, 1.0), (1, 1.3), (2, 1.2)):
        ids = torch.randint(0, 48, (1, 2 + 2 * seed), generator=torch.Generator().manual_seed(seed))
        ref = tokens(generate(target, ids, 16, do_sample=False, repetition_penalty=rp, eos_token_id=None))
        for k in range(1, 9):
            stats = {}
            out = tokens(speculative_generate(target, draft, ids, 16, do_sample=False, repetition_penalty=rp,
                                              eos_token_id=None, draft_k=k, stats=stats))
            assert out == ref, (seed, k)
            assert sum(stats["accepted"]) + stats["rounds"] == 16          # every token: a kept proposal or a target's
    # a draft that is the target itself is always right: k + 1 tokens a round
    stats = {}
    tokens(speculative_generate(target, target, ids, 15, do_sample=False, eos_token_id=None, draft_k=4, stats=stats))
    assert stats == {"proposed": [3, 3, 3, 3], "accepted": [3, 3, 3, 3], "rounds": 3}
    assert acceptance_by_position(stats) == [1.0] * 4


def test_greedy_equals_transformers_assisted_generation(pair):
    transformers = pytest.importorskip("transformers")
    from gpt2_learn.weights import save_pretrained
    transformers.logging.set_verbosity_error()
    target, draft = pair
    with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2, warnings.catch_warnings():
        warnings.simplefilter("ignore")                                    # no tokenizer files for a 48-token model
        hf_target = transformers.GPT2LMHeadModel.from_pretrained(save_pretrained(target, d1)).eval()
        hf_draft = transformers.GPT2LMHeadModel.from_pretrained(save_pretrained(draft, d2)).eval()
    for seed, k, rp in ((0, 1, 1.0), (1, 3, 1.3)):
        ids = torch.randint(0, 48, (1, 3 + seed), generator=torch.Generator().manual_seed(seed))
        theirs = hf_target.generate(ids, attention_mask=torch.ones_like(ids), assistant_model=hf_draft, do_sample=False,
                                    num_assistant_tokens=k, num_assistant_tokens_schedule="constant", max_new_tokens=20,
                                    repetition_penalty=rp, pad_token_id=0, eos_token_id=None)
        ours = tokens(speculative_generate(target, draft, ids, 20, do_sample=False, repetition_penalty=rp,
                                           eos_token_id=None, draft_k=k))
        assert ours == theirs[0, ids.shape[1]:].tolist(), (seed, k, rp)


def test_accept_or_resample_gives_p():
    p = torch.tensor([0.40, 0.25, 0.15, 0.10, 0.06, 0.04, 0.0], dtype=torch.float64)
    q = torch.tensor([0.05, 0.10, 0.40, 0.05, 0.25, 0.10, 0.05], dtype=torch.float64)
    g, n = torch.Generator().manual_seed(0), 20_000
    counts, kept = {}, 0
    for _ in range(n):
        ok, t = accept_or_resample(p, q, int(torch.multinomial(q, 1, generator=g)), g)
        counts[t] = counts.get(t, 0) + 1
        kept += ok
    assert chi_square_p_value(counts, {i: float(v) for i, v in enumerate(p) if v > 0}, n) > ALPHA
    assert abs(kept / n - float(torch.minimum(p, q).sum())) < 0.02      # acceptance = sum of min(p, q)
    # the same test rejects the draft's own distribution: it has the power to tell q from p
    draws = torch.multinomial(q, n, replacement=True, generator=g).tolist()
    q_counts = {i: draws.count(i) for i in set(draws) if p[i] > 0}
    assert chi_square_p_value(q_counts, {i: float(v) for i, v in enumerate(p) if v > 0}, sum(q_counts.values())) < ALPHA


def test_sampled_text_is_distributed_as_the_targets(pair):
    "The first 3 tokens of 500 seeded runs (k=2: acceptances, rejections, bonus tokens and rollbacks) vs exact p."
    target, draft = pair
    config = InferenceConfig(top_k=4, top_p=1.0, temperature=0.9, repetition_penalty=1.3, eos_token_id=None)
    prompt, n_tokens, runs = torch.tensor([[3, 7, 11]]), 3, 500
    p = exact_joint(target, prompt, config, n_tokens)
    counts, stats = {}, {}
    for seed in range(runs):
        key = tuple(tokens(speculative_generate(target, draft, prompt, n_tokens, config, draft_k=2, seed=seed,
                                                stats=stats)))
        counts[key] = counts.get(key, 0) + 1
    assert 0 < stats["accepted"][0] < stats["proposed"][0] and stats["accepted"][1] > 0   # every path was taken
    assert chi_square_p_value(counts, p, runs) > ALPHA
    # power: 500 draws from the draft's own joint distribution fail the same test
    q = exact_joint(draft, prompt, config, n_tokens)
    keys = list(q)
    draws = torch.multinomial(torch.tensor([q[k] for k in keys]), runs, replacement=True,
                              generator=torch.Generator().manual_seed(0)).tolist()
    q_counts = {}
    for d in draws:
        q_counts[keys[d]] = q_counts.get(keys[d], 0) + 1
    outside = sum(v for key, v in q_counts.items() if key not in p)
    inside = {key: v for key, v in q_counts.items() if key in p}
    assert outside > 0 or chi_square_p_value(inside, p, sum(inside.values())) < ALPHA


def test_seeded_runs_repeat(pair):
    target, draft = pair
    ids = torch.tensor([[5, 6, 7]])
    a = tokens(speculative_generate(target, draft, ids, 12, seed=3, draft_k=3, eos_token_id=None))
    assert a == tokens(speculative_generate(target, draft, ids, 12, seed=3, draft_k=3, eos_token_id=None))


def test_eos_max_new_tokens_and_window(pair):
    target, draft = pair
    ids = torch.tensor([[1, 2, 3]])
    ref = tokens(generate(target, ids, 12, do_sample=False, eos_token_id=None))
    stop = ref[4]
    info = {}
    out = tokens(speculative_generate(target, draft, ids, 12, do_sample=False, eos_token_id=stop, draft_k=5, info=info))
    assert out == ref[:ref.index(stop) + 1] and info["stop_reason"] == "eos" and info["new_tokens"] == len(out)
    info = {}
    assert len(tokens(speculative_generate(target, draft, ids, 7, eos_token_id=None, draft_k=8, info=info))) == 7
    assert info == {"prompt_tokens": 3, "new_tokens": 7, "stop_reason": "max_new_tokens"}
    long = torch.randint(0, 48, (1, 36), generator=torch.Generator().manual_seed(0))    # window 40: 4 tokens fit
    with pytest.warns(UserWarning, match="clipped to 4"):
        out = tokens(speculative_generate(target, draft, long, 10, do_sample=False, eos_token_id=None, draft_k=3))
    assert out == tokens(generate(target, long, 4, do_sample=False, eos_token_id=None))


def test_draft_with_a_shorter_window(pair):
    "Past the draft's window the target goes on alone (k = 0), with the same greedy tokens."
    target, _ = pair
    draft = tiny(2, n_positions=8)
    ids = torch.tensor([[1, 2, 3, 4]])
    stats = {}
    out = tokens(speculative_generate(target, draft, ids, 14, do_sample=False, eos_token_id=None, stats=stats))
    assert out == tokens(generate(target, ids, 14, do_sample=False, eos_token_id=None))


def test_padded_single_row(pair):
    target, draft = pair
    padded, mask = pad_left([[9, 9, 4, 5, 6], [4, 5, 6]], pad_id=0)
    a = tokens(speculative_generate(target, draft, padded[1:], 8, attention_mask=mask[1:], seed=2, eos_token_id=None))
    assert a == tokens(speculative_generate(target, draft, [[4, 5, 6]], 8, seed=2, eos_token_id=None))


def test_bad_input_one_line_messages(pair):
    target, draft = pair
    with pytest.raises(ValueError, match="one prompt at a time"):
        next(speculative_generate(target, draft, [[1, 2], [3, 4]], 4, eos_token_id=None))
    for k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="draft_k must be"):
            next(speculative_generate(target, draft, [[1, 2]], 4, draft_k=k, eos_token_id=None))
    with pytest.raises(ValueError, match="draft model has 50 tokens, the target 48"):
        next(speculative_generate(target, tiny(3, vocab=50), [[1, 2]], 4, eos_token_id=None))
    with pytest.raises(ValueError, match="num_beams"):
        next(speculative_generate(target, draft, [[1, 2]], 4, num_beams=2, eos_token_id=None))
    with pytest.raises(TypeError, match="no field"):
        next(speculative_generate(target, draft, [[1, 2]], temprature=0.5))


def test_shipped_draft_fits_the_bundled_model():
    from gpt2_learn.weights import load_bundled_model
    assert draft_model_path().is_file() and draft_model_path().stat().st_size <= 4_000_000
    draft, target = load_draft_model(), load_bundled_model()
    assert draft.config.vocab_size == target.config.vocab_size
    assert draft.config.n_positions >= target.config.n_positions
    assert draft.num_params() < target.num_params() / 2
    from gpt2_learn.tokenizer import load_tokenizer
    ids = torch.tensor([load_tokenizer().encode("def fibonacci(n):")])
    out = tokens(speculative_generate(target, draft, ids, 16, do_sample=False, draft_k=4))
    assert out == tokens(generate(target, ids, 16, do_sample=False))
