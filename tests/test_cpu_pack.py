"The CPU's packed weights (oneDNN) against transformers (the oracle) and against the unpacked model."
import copy

import pytest
import torch
import torch.nn as nn

from conftest import make_hf_model, ours_from_hf
from gpt2_learn.config import InferenceConfig
from gpt2_learn.cpu import (PackedLinear, count_weights, cpu_packing_available, pack_for_cpu, packable_dtypes,
                            unpack_for_cpu)
from gpt2_learn.generation import generate_ids, pad_left

pytestmark = pytest.mark.skipif(not cpu_packing_available(), reason="this PyTorch has no oneDNN packed linear operators")
BF16_PACKS = torch.bfloat16 in packable_dtypes()                           # oneDNN needs AVX-512 or AVX-NE-CONVERT for it
needs_bf16_packing = pytest.mark.skipif(not BF16_PACKS, reason="oneDNN cannot pack bfloat16 on this CPU")
PROMPT = torch.randint(0, 50257, (1, 16), generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def packed_124m(hf_124m):
    return pack_for_cpu(ours_from_hf(hf_124m))


def hf_generate(hf, ids, **kw):
    with torch.no_grad():
        return hf.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=50256, max_new_tokens=100, **kw)


def linears(model):
    return [m for m in model.modules() if isinstance(m, (nn.Linear, PackedLinear))]


def test_every_linear_is_packed(packed_124m):
    assert all(isinstance(m, PackedLinear) for m in linears(packed_124m)) and len(linears(packed_124m)) == 12 * 4 + 1


def test_logits_equal_transformers(hf_124m, packed_124m):
    ids = torch.randint(0, 50257, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(): theirs, ours = hf_124m(ids).logits, packed_124m(ids)
    assert (ours - theirs).abs().max() < 1e-4


@pytest.mark.parametrize("penalty", [1.0, 1.2])
def test_greedy_100_tokens_equal_transformers(hf_124m, packed_124m, penalty):
    expected = hf_generate(hf_124m, PROMPT, do_sample=False, repetition_penalty=penalty)
    assert torch.equal(generate_ids(packed_124m, PROMPT, 100, do_sample=False, repetition_penalty=penalty), expected)


def test_sampling_guide_defaults_equal_transformers(hf_124m, packed_124m):
    cfg = InferenceConfig()
    torch.manual_seed(1234)
    expected = hf_generate(hf_124m, PROMPT, do_sample=True, temperature=cfg.temperature, top_k=cfg.top_k,
                           top_p=cfg.top_p, repetition_penalty=cfg.repetition_penalty)
    assert torch.equal(generate_ids(packed_124m, PROMPT, 100, cfg.replace(seed=1234)), expected)


def test_padded_batch_equals_transformers(hf_124m, packed_124m):
    ids, mask = pad_left([PROMPT[0].tolist(), PROMPT[0, :5].tolist(), PROMPT[0, 3:12].tolist()])
    with torch.no_grad():
        expected = hf_124m.generate(ids, attention_mask=mask, pad_token_id=50256, max_new_tokens=30, do_sample=False)
    assert torch.equal(generate_ids(packed_124m, ids, 30, attention_mask=mask, do_sample=False, repetition_penalty=1.0), expected)


def test_state_dict_checkpoint_and_unpack_are_exact(hf_small, tmp_path):
    from gpt2_learn.cpu import stream_friendly_layout
    from gpt2_learn.model import GPT2Model
    model = stream_friendly_layout(ours_from_hf(hf_small))                  # laid out, as the loaders leave it
    before = {k: v.clone() for k, v in model.state_dict().items()}
    strides = {n: p.stride() for n, p in model.named_parameters()}
    pack_for_cpu(model, min_weights=0)
    sd = model.state_dict()
    assert list(sd) == list(before) and all(torch.equal(sd[k], before[k]) for k in before)
    model.save_checkpoint(tmp_path / "packed.pth")                          # saving a packed model writes plain weights
    loaded = GPT2Model.from_checkpoint(tmp_path / "packed.pth")
    assert all(torch.equal(loaded.state_dict()[k], before[k]) for k in before)
    unpack_for_cpu(model)
    assert all(type(m) is nn.Linear for m in linears(model))
    assert model.lm_head.weight is model.wte.weight                          # tied again
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)
    assert {n: p.stride() for n, p in model.named_parameters()} == strides   # the same layout as before packing
    assert all(p.requires_grad for p in model.parameters())                  # trainable again, as nn.Linear's are


def test_moving_and_loading_a_packed_model(hf_small):
    model = pack_for_cpu(ours_from_hf(hf_small), min_weights=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = PROMPT[:, :10]
    with torch.no_grad(): want = model(ids)
    fc = model.h[0].mlp.c_fc
    model.to(torch.float64)                                                  # not packable: plain float64 weights
    assert fc.packed is None and fc.weight.dtype == torch.float64
    with torch.no_grad(): assert (model(ids).float() - want).abs().max() < 1e-4
    model.float()                                                            # packed again
    assert fc.packed is not None and all(torch.equal(model.state_dict()[k], before[k]) for k in before)
    model.bfloat16()                                                         # packed again where this CPU packs bfloat16
    assert (fc.packed is not None and fc.packed.dtype == torch.bfloat16) if BF16_PACKS else (fc.packed is None and fc.weight.dtype == torch.bfloat16)
    model.float().load_state_dict(before)                                    # loading repacks
    with torch.no_grad(): assert torch.equal(model(ids), want)
    with pytest.raises(RuntimeError, match="Missing key"): model.load_state_dict({k: v for k, v in before.items() if "c_fc" not in k})


def test_packs_only_big_weights_by_default(hf_124m, hf_small):
    small = pack_for_cpu(ours_from_hf(hf_small))                             # n_embd 64: only the head is big enough
    assert [n for n, m in small.named_modules() if isinstance(m, PackedLinear)] == ["lm_head"]


def test_a_packed_model_can_be_deep_copied(hf_small):
    model = pack_for_cpu(ours_from_hf(hf_small), min_weights=0)
    with torch.no_grad(): before = model(PROMPT)
    twin = copy.deepcopy(model)
    assert all(isinstance(m, PackedLinear) and m.packed is not None for m in linears(twin))
    assert twin.lm_head.packed is not model.lm_head.packed
    with torch.no_grad():
        assert torch.equal(twin(PROMPT), before)
        twin.h[0].mlp.c_fc.bias.add_(1.0)                                    # its own tensors: the original is untouched
        assert not torch.equal(twin(PROMPT), before) and torch.equal(model(PROMPT), before)


def test_a_packed_model_counts_the_same_weights_as_transformers(packed_124m, hf_124m, hf_small):
    "Packed weights are buffers: `count_weights` counts them (`num_params` counts parameters only)."
    assert count_weights(packed_124m) == hf_124m.num_parameters() == 124_439_808       # head tied: counted once
    every = pack_for_cpu(ours_from_hf(hf_small), min_weights=0)              # biases packed too
    assert count_weights(every) == hf_small.num_parameters()
    assert count_weights(ours_from_hf(hf_small)) == ours_from_hf(hf_small).num_params() == hf_small.num_parameters()


@needs_bf16_packing
def test_bfloat16(hf_small):
    plain = ours_from_hf(hf_small).to(torch.bfloat16)
    packed = pack_for_cpu(ours_from_hf(hf_small).to(torch.bfloat16), min_weights=0)
    ids = PROMPT[:, :10]
    with torch.no_grad(): a, b = plain(ids).float(), packed(ids).float()
    assert (a - b).abs().max() <= 0.05 * a.abs().max()


def test_bfloat16_is_as_close_to_float32_as_transformers_own_bfloat16(hf_124m):
    "bf16 rounds, so the oracle is transformers in float32: ours in bf16 (plain and packed) errs no more than transformers in bf16."
    ids = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ref = hf_124m(ids).logits
        theirs = copy.deepcopy(hf_124m).to(torch.bfloat16)(ids).logits.float()
        plain = ours_from_hf(hf_124m).to(torch.bfloat16)
        packed = [pack_for_cpu(ours_from_hf(hf_124m).to(torch.bfloat16))] if BF16_PACKS else []
        err_theirs = (theirs - ref).abs().mean()
        for ours in [plain] + packed:
            err = (ours(ids).float() - ref).abs()
            assert err.mean() <= 1.1 * err_theirs and err.max() <= 2 * (theirs - ref).abs().max(), (err.mean(), err_theirs)
            assert 0 < err.mean()                                                      # really bf16: it does round


def test_other_dtypes_and_devices_are_refused(hf_small):
    model = ours_from_hf(hf_small).half()
    with pytest.raises(ValueError, match="only float32.* weights on the CPU can be packed here, not torch.float16"): pack_for_cpu(model, min_weights=0)
    assert all(type(m) is nn.Linear for m in linears(model))                 # all or nothing


def test_a_failed_check_leaves_the_model_plain(hf_small, monkeypatch):
    model = ours_from_hf(hf_small)
    real = PackedLinear.forward
    calls = []
    def wrong_after_three(self, x):                                          # the 4th packed product is wrong
        calls.append(1)
        y = real(self, x)
        return y + 1 if len(calls) == 4 else y
    monkeypatch.setattr(PackedLinear, "forward", wrong_after_three)
    with pytest.raises(RuntimeError, match="differs from F.linear"): pack_for_cpu(model, min_weights=0)
    monkeypatch.setattr(PackedLinear, "forward", real)
    assert all(type(m) is nn.Linear for m in linears(model)) and model.lm_head.weight is model.wte.weight
    hf_ids = torch.randint(0, 50257, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): assert (model(hf_ids) - hf_small(hf_ids).logits).abs().max() < 1e-4


def test_text_generator_packs_only_its_own_cpu_model(monkeypatch):
    from gpt2_learn import inference
    from gpt2_learn.weights import bundled_model_path
    if not bundled_model_path().is_file(): pytest.skip("no bundled model")
    gen = inference.TextGenerator(device="cpu")                              # the small bundled model: its head is big enough
    assert isinstance(gen.model.lm_head, PackedLinear) and type(gen.model.h[0].mlp.c_fc) is nn.Linear
    wrapped = inference.TextGenerator.from_model(ours_from_hf(make_hf_model()))
    assert type(wrapped.model.lm_head) is nn.Linear
    assert type(inference.TextGenerator(device="cpu", pack=False).model.lm_head) is nn.Linear
    monkeypatch.setattr("gpt2_learn.cpu.cpu_packing_available", lambda: False)
    assert type(inference.TextGenerator(device="cpu").model.lm_head) is nn.Linear


def test_a_cpu_that_cannot_pack_bfloat16_keeps_it_plain(hf_small, monkeypatch):
    "Without AVX-512, oneDNN refuses to pack bfloat16: a bfloat16 model stays plain, with no warning, and still runs."
    import warnings
    from gpt2_learn import cpu, inference
    monkeypatch.setattr(cpu, "_bfloat16_packs", lambda: False)
    assert packable_dtypes() == (torch.float32,)
    model = pack_for_cpu(ours_from_hf(hf_small), min_weights=0)
    model.bfloat16()                                                         # was packed in float32: now plain bfloat16
    assert all(m.packed is None and m.weight.dtype == torch.bfloat16 for m in linears(model))
    model.float()                                                            # and packed again in float32
    assert all(m.packed is not None for m in linears(model))
    with pytest.raises(ValueError, match="only float32 weights on the CPU can be packed here, not torch.bfloat16"):
        pack_for_cpu(ours_from_hf(hf_small).bfloat16(), min_weights=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = inference._pack_if_cpu(ours_from_hf(hf_small).bfloat16())
    assert not any(isinstance(m, PackedLinear) for m in model.modules())
    with torch.no_grad(): assert torch.isfinite(model(PROMPT).float()).all()
