"""int8 (gpt2_learn.quant): per-channel quantization against PyTorch's quantizer, both matmul modes against the float
product, int8 models against transformers' float32 logits (random weights) and against the bundled model in float32
(logit error, held-out cross-entropy within 1%, greedy tokens equal for 32 new tokens)."""
import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import make_hf_model, ours_from_hf
from gpt2_learn import quant
from gpt2_learn.config import InferenceConfig
from gpt2_learn.generation import generate, generate_ids
from gpt2_learn.quant import (Int8Embedding, Int8Linear, dequantize, int8_activations_available, quantize_int8,
                              quantize_per_channel, weight_bytes)
from gpt2_learn.weights import bundled_model_path, load_bundled_model

GREEDY = InferenceConfig(do_sample=False, repetition_penalty=1.0, eos_token_id=None)
MODES = ["int8", "float"]


def test_quantize_per_channel_matches_pytorch_and_stays_within_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(300, 200) * torch.rand(300, 1)                     # rows of different sizes
    q, scale = quantize_per_channel(w, rows=64)                        # in blocks: the same as all at once
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = torch.quantize_per_channel(w, scale.double(), torch.zeros(300, dtype=torch.long), 0, torch.qint8)
    assert torch.equal(q, theirs.int_repr())
    assert torch.equal(scale, w.abs().amax(1) / 127)
    assert ((w - dequantize(q, scale)).abs() <= scale[:, None] / 2 + 1e-7).all()
    assert q.abs().max() == 127 and q.dtype == torch.int8


@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_modes_against_the_float_product(bias):
    torch.manual_seed(0)
    lin = nn.Linear(96, 160, bias=bias)
    x = torch.randn(3, 5, 96)
    q, scale = quantize_per_channel(lin.weight)
    exact = F.linear(x, dequantize(q, scale), lin.bias)
    torch.testing.assert_close(Int8Linear.from_linear(lin, "float")(x), exact, atol=1e-5, rtol=1e-5)
    if int8_activations_available():
        layer = Int8Linear.from_linear(lin, "int8")
        xq = torch.quantize_per_tensor_dynamic(x, torch.quint8, layer.reduce_range).dequantize()
        torch.testing.assert_close(layer(x), F.linear(xq, dequantize(q, scale), lin.bias), atol=1e-4, rtol=1e-4)
        assert (layer(x) - exact).abs().max() < 0.02 * exact.abs().max()


@pytest.fixture(scope="module")
def random_pair():
    hf = make_hf_model(n_layer=2, n_head=2, n_embd=64, n_positions=64)
    return hf, ours_from_hf(hf)


@pytest.mark.parametrize("activations", MODES)
def test_random_weights_logits_close_to_transformers_float32(random_pair, activations):
    hf, ours = random_pair
    int8 = quantize_int8(copy.deepcopy(ours), activations)
    ids = torch.randint(0, 50257, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference, logits = hf(ids).logits, int8(ids)
    err = (logits - reference).abs()
    assert err.max() < 0.15 * reference.std() and err.mean() < 0.03 * reference.std(), (err.max(), reference.std())
    assert int8.dtype == torch.float32 and int8.device.type == "cpu"


@pytest.mark.parametrize("activations", MODES)
def test_generation_runs_unchanged_and_copies_work(random_pair, activations):
    _, ours = random_pair
    int8 = quantize_int8(copy.deepcopy(ours), activations)
    ids = torch.randint(0, 50257, (3, 5), generator=torch.Generator().manual_seed(1))
    steps = list(generate(int8, ids, 6, GREEDY))
    assert len(steps) == 6 and all(s.shape == (3,) for s in steps)
    out = generate_ids(int8, ids, 6, GREEDY)
    assert torch.equal(out[:, 5:], torch.stack(steps, 1))
    assert torch.equal(generate_ids(copy.deepcopy(int8), ids, 6, GREEDY), out)      # a copy keeps the packed weights


def test_no_float_copy_of_any_matrix_and_memory(random_pair):
    _, ours = random_pair
    for activations, most in (("int8", 0.55), ("float", 0.3)):
        int8 = quantize_int8(copy.deepcopy(ours), activations)
        tensors = [*int8.named_parameters(), *int8.named_buffers()]
        floats = [n for n, t in tensors if t.is_floating_point() and t.dim() == 2]
        assert floats == ["wpe.weight"]
        assert isinstance(int8.wte, Int8Embedding) and isinstance(int8.lm_head, Int8Linear)
        assert int8.num_params() == ours.num_params()
        assert weight_bytes(int8) < most * weight_bytes(ours), (activations, weight_bytes(int8), weight_bytes(ours))
    shared = quantize_int8(copy.deepcopy(ours), "float")
    assert shared.lm_head.weight_int8 is shared.wte.weight_int8                    # weight-only: one int8 matrix


def test_bad_input_one_line_messages(random_pair):
    _, ours = random_pair
    with pytest.raises(ValueError, match="activations must be one of int8, float"):
        quantize_int8(copy.deepcopy(ours), "int4")
    m = copy.deepcopy(ours)
    m.h[0].mlp.c_fc = nn.Identity()                                      # e.g. a layer already packed or replaced
    with pytest.raises(ValueError, match="call it before packing"):
        quantize_int8(m)
    once = quantize_int8(copy.deepcopy(ours))
    assert quantize_int8(once) is once                                   # quantizing twice: nothing to do
    with pytest.raises(ValueError, match="an int8 model is not saved"):
        once.save_checkpoint("int8.pth")


def test_falls_back_to_weight_only_without_a_quantized_engine(random_pair, monkeypatch):
    _, ours = random_pair
    monkeypatch.setattr(quant, "int8_activations_available", lambda: False)
    int8 = quantize_int8(copy.deepcopy(ours), "int8")
    assert all(m.activations == "float" for m in int8.modules() if isinstance(m, Int8Linear))
    assert generate_ids(int8, torch.tensor([[1, 2, 3]]), 4, GREEDY).shape == (1, 7)


# The bundled model: the quality figures the lesson prints.
bundled = pytest.mark.skipif(not bundled_model_path().is_file(), reason="the bundled model is not built")


@pytest.fixture(scope="module")
def bundled_pair():
    model = load_bundled_model().eval()
    return model, quantize_int8(copy.deepcopy(model))


@bundled
@pytest.mark.parametrize("prompt", ["def fibonacci(n):", "The algorithm works by", "class Stack:", "import os\n"])
def test_bundled_greedy_equals_float32_for_32_tokens(bundled_pair, prompt):
    from gpt2_learn.tokenizer import load_tokenizer
    model, int8 = bundled_pair
    ids = torch.tensor([load_tokenizer().encode(prompt)])
    assert torch.equal(generate_ids(int8, ids, 32, GREEDY), generate_ids(model, ids, 32, GREEDY))


@bundled
@pytest.mark.parametrize("topic", ["assert", "for", "class"])
def test_bundled_logit_error_on_text(bundled_pair, topic):
    "On text like the training text (a pydoc topic, 128 tokens): small errors, the same top token almost everywhere."
    import pydoc_data.topics
    from gpt2_learn.tokenizer import load_tokenizer
    model, int8 = bundled_pair
    ids = torch.tensor([load_tokenizer().encode(pydoc_data.topics.topics[topic])[:128]])
    with torch.no_grad():
        reference, logits = model(ids), int8(ids)
    err = (logits - reference).abs()
    assert err.max() < 0.6 * reference.std() and err.mean() < 0.12 * reference.std(), (err.max(), err.mean())
    assert (logits.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.95


def held_out_chunks(n: int, folder, chunk: int = 2048, val_every: int = 20) -> np.ndarray:
    "The first `n` held-out chunks of the bundled model's split (model card): only the files that reach them."
    from gpt2_learn.train import build_python_corpus, collect_files, split_tokens, tokenize_files
    files = collect_files([build_python_corpus(folder / "corpus")])
    size, k = 0, 0
    while size < 4 * val_every * max(n, 2) * chunk and k < len(files):
        size, k = size + files[k].stat().st_size, k + 1
    tokenize_files(files[:k], folder / "all.bin")
    split_tokens(folder / "all.bin", folder / "train.bin", folder / "val.bin", val_every, chunk)
    val = np.fromfile(folder / "val.bin", dtype=np.uint16)
    assert len(val) >= n * chunk
    return val[:n * chunk]


@bundled
def test_bundled_held_out_cross_entropy_within_one_percent(bundled_pair, tmp_path):
    from gpt2_learn.train import evaluate
    model, int8 = bundled_pair
    val = held_out_chunks(4, tmp_path)
    ce32, ce8 = evaluate(model, val, block_size=256), evaluate(int8, val, block_size=256)
    assert abs(ce8 / ce32 - 1) < 0.01, (ce32, ce8)
