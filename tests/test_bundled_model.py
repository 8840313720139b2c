"The bundled model meets its model card: held-out loss <= 60% of the unigram entropy, file size, greedy text that is text."
import pytest
import torch

from gpt2_learn.weights import bundled_model_path, load_bundled_model

pytestmark = pytest.mark.skipif(not bundled_model_path().is_file(), reason="the bundled model is not built")


@pytest.fixture(scope="module")
def model():
    return load_bundled_model()


def test_held_out_cross_entropy_is_at_most_60_percent_of_unigram_entropy(model, tmp_path_factory):
    "Rebuild the corpus from this Python, split it as training did, and measure on the held-out chunks."
    from gpt2_learn.train import SeenVocabLoss, build_python_corpus, evaluate, prepare_data, unigram_entropy
    tmp = tmp_path_factory.mktemp("corpus")
    corpus = build_python_corpus(tmp / "python_corpus")
    train, val, meta = prepare_data([corpus], tmp / "tokens")
    assert len(val) > 100_000                      # the whole held-out split, not a sample
    seen, wte = SeenVocabLoss(train), model.wte.weight
    tied = torch.equal(wte[seen.unseen], wte[seen.unseen[:1]].expand(len(seen.unseen), -1))   # as trained (this Python's corpus):
    if tied:                                                                                  # the small softmax is exact...
        first = dict(block_size=256, max_tokens=16 * 256 + 1)                                 # ...and checked: the full softmax
        assert abs(evaluate(model, val, **first, seen=seen) - evaluate(model, val, **first)) < 1e-4
    ce, h1 = evaluate(model, val, block_size=256, seen=seen if tied else None), unigram_entropy(val)
    assert 0 < ce <= 0.60 * h1, (ce, h1, ce / h1)


def test_file_and_shape(model):
    assert bundled_model_path().stat().st_size <= 16_000_000
    assert model.config.vocab_size == 50257 and model.config.n_positions == 256
    assert all(v.dtype == torch.float16 for v in torch.load(bundled_model_path(), weights_only=True)["model"].values()
               if v.is_floating_point())


@pytest.mark.parametrize("prompt", ["def fibonacci(n):", "The algorithm works by"])
def test_greedy_continuation_is_not_a_wall_of_whitespace(model, prompt):
    "The model card's greedy samples (48 new tokens at most): at least a third of them more than spaces and newlines."
    from gpt2_learn.config import InferenceConfig
    from gpt2_learn.generation import generate_ids
    from gpt2_learn.tokenizer import load_tokenizer
    tok = load_tokenizer()
    ids = torch.tensor([tok.encode(prompt)])
    new = generate_ids(model, ids, 48, InferenceConfig(do_sample=False, repetition_penalty=1.0))[0, ids.shape[1]:].tolist()
    words = [t for t in new if tok.decode([t]).strip()]
    assert len(new) >= 8 and len(words) >= len(new) / 3, repr(tok.decode(new))
