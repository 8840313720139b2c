"Our GPT2Model against transformers.GPT2LMHeadModel (random weights): logits, loading paths, checkpoints."
import pytest
import torch

from conftest import make_hf_model, ours_from_hf
from gpt2_learn.config import GPT2Config, count_params
from gpt2_learn.model import GPT2Model
from gpt2_learn.weights import CheckpointError, save_checkpoint


def max_diff(ours, hf, ids, **kw):
    with torch.no_grad():
        return (ours(ids, **kw) - hf(ids, **kw).logits).abs().max().item()


def test_param_count_matches_transformers(hf_124m, ours_124m):
    hf_count = sum(p.numel() for p in hf_124m.parameters())        # transformers counts the tied head once
    assert ours_124m.num_params() == hf_count == count_params(GPT2Config()) == 124_439_808


def test_logits_small_bare_state_dict(hf_small):
    ours = ours_from_hf(hf_small)
    ids = torch.randint(0, 50257, (3, 40), generator=torch.Generator().manual_seed(1))
    assert max_diff(ours, hf_small, ids) < 1e-4


def test_logits_124m_bare_state_dict(hf_124m, ours_124m):
    ids = torch.randint(0, 50257, (2, 64), generator=torch.Generator().manual_seed(2))
    assert max_diff(ours_124m, hf_124m, ids) < 1e-4


@pytest.mark.parametrize("safe", [True, False])
def test_logits_from_save_pretrained_folder(tmp_path, hf_small, safe):
    if safe: hf_small.save_pretrained(tmp_path)
    else:  # transformers 5 writes only safetensors; an older-style folder holds a pickled state dict
        hf_small.config.save_pretrained(tmp_path)
        torch.save(hf_small.state_dict(), tmp_path / "pytorch_model.bin")
    assert (tmp_path / ("model.safetensors" if safe else "pytorch_model.bin")).exists()
    ours = GPT2Model.from_pretrained(tmp_path)
    assert ours.config.n_head == hf_small.config.n_head            # read from config.json, not guessed
    ids = torch.randint(0, 50257, (2, 30), generator=torch.Generator().manual_seed(3))
    assert max_diff(ours, hf_small, ids) < 1e-4


def test_logits_124m_from_safetensors_file(tmp_path, hf_124m):
    hf_124m.save_pretrained(tmp_path)
    ours = GPT2Model.from_pretrained(tmp_path / "model.safetensors")  # a single file: config from the folder
    ids = torch.randint(0, 50257, (1, 32), generator=torch.Generator().manual_seed(4))
    assert max_diff(ours, hf_124m, ids) < 1e-4


def test_single_file_without_config_infers_shape(tmp_path):
    hf = make_hf_model(n_layer=3, n_head=2, n_embd=128, n_positions=64)   # head_dim 64: inferable
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}, str(tmp_path / "w.safetensors"))
    ours = GPT2Model.from_pretrained(tmp_path / "w.safetensors")
    assert (ours.config.n_layer, ours.config.n_head, ours.config.n_positions) == (3, 2, 64)
    assert max_diff(ours, hf, torch.randint(0, 50257, (1, 20), generator=torch.Generator().manual_seed(0))) < 1e-4


def test_hub_style_keys_without_prefix_and_with_buffers(hf_small):
    from gpt2_learn.weights import convert_hf_state_dict, load_state_dict_strict
    sd = {k.removeprefix("transformer."): v for k, v in hf_small.state_dict().items()}
    sd["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 128, 128))      # the hub files carry these buffers
    sd["h.0.attn.masked_bias"] = torch.tensor(-1e4)
    ours = load_state_dict_strict(GPT2Model(GPT2Config.from_dict(hf_small.config.to_dict())), convert_hf_state_dict(sd))
    assert max_diff(ours.eval(), hf_small, torch.randint(0, 50257, (1, 16), generator=torch.Generator().manual_seed(0))) < 1e-4


def test_missing_or_unexpected_keys_fail_loudly(hf_small):
    from gpt2_learn.weights import convert_hf_state_dict, load_state_dict_strict
    sd = convert_hf_state_dict(hf_small.state_dict())
    model = GPT2Model(GPT2Config.from_dict(hf_small.config.to_dict()))
    with pytest.raises(ValueError, match="missing"):
        load_state_dict_strict(model, {k: v for k, v in sd.items() if not k.startswith("h.1.")})
    with pytest.raises(ValueError, match="unexpected"):
        load_state_dict_strict(model, {**sd, "h.2.attn.c_attn.weight": sd["h.0.attn.c_attn.weight"]})


def test_offline_hub_id_gives_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError) as e:
        GPT2Model.from_pretrained("openai-community/gpt2-this-does-not-exist")
    msg = str(e.value)
    assert "\n" not in msg and "hub" in msg and "folder" in msg


def test_checkpoint_round_trip_identical_logits(tmp_path, hf_small):
    ours = ours_from_hf(hf_small)
    path = save_checkpoint(ours, tmp_path / "sub" / "best_model.pth", step=7)
    back = GPT2Model.from_checkpoint(path)
    ids = torch.randint(0, 50257, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(back(ids), ours(ids))
    assert not list((tmp_path / "sub").glob("*.tmp"))                 # no temporary file left behind


def test_save_pretrained_is_read_by_transformers(tmp_path, hf_small):
    import transformers
    ours = ours_from_hf(hf_small)
    ours.save_pretrained(tmp_path / "out")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    assert max_diff(ours, back, torch.randint(0, 50257, (1, 24), generator=torch.Generator().manual_seed(0))) < 1e-4


@pytest.mark.parametrize("kind", ["missing", "truncated", "text", "other_dict"])
def test_bad_checkpoint_one_line_error_naming_file(tmp_path, hf_small, kind):
    path = tmp_path / f"{kind}.pth"
    if kind == "truncated":
        good = save_checkpoint(ours_from_hf(hf_small), tmp_path / "good.pth").read_bytes()
        path.write_bytes(good[: len(good) // 3])
    elif kind == "text": path.write_text("hello")
    elif kind == "other_dict": torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError) as e:
        GPT2Model.from_checkpoint(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_checkpoint_refuses_code_execution(tmp_path):
    class Evil:
        def __reduce__(self): return (print, ("pwned",))
    path = tmp_path / "evil.pth"
    torch.save({"config": {}, "model": Evil()}, path)
    with pytest.raises(CheckpointError):
        GPT2Model.from_checkpoint(path)


def test_context_window_error(hf_small):
    ours = ours_from_hf(hf_small)
    with pytest.raises(ValueError, match="context window"):
        ours(torch.zeros(1, 129, dtype=torch.long))


def test_padded_batch_logits_match_transformers(hf_small):
    ours = ours_from_hf(hf_small)
    ids = torch.randint(0, 50257, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids); mask[0, :5] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        a = ours(ids, attention_mask=mask)
        b = hf_small(ids, attention_mask=mask, position_ids=pos).logits
    assert (a - b)[mask.bool()].abs().max() < 1e-4


def test_several_tokens_onto_a_filled_cache_match_transformers(hf_small):
    "10 tokens cached, then 5 in one call (a chunked prefill): causal inside the chunk, the same logits as one full pass."
    from gpt2_learn.kv_cache import KVCache
    ours = ours_from_hf(hf_small)
    ids = torch.randint(0, 50257, (2, 15), generator=torch.Generator().manual_seed(0))
    cache = KVCache(ours.config, 2, 15)
    with torch.no_grad():
        ours(ids[:, :10], kv_cache=cache)
        chunk = ours(ids[:, 10:], kv_cache=cache)
        full = hf_small(ids).logits[:, 10:]
    torch.testing.assert_close(chunk, full, atol=1e-4, rtol=0)


def test_attention_mask_4d_hides_pads_and_keeps_each_query_on_itself():
    "A padded row's pad queries see only themselves (no row of all -inf, which some kernels turn into NaN)."
    from gpt2_learn.model import attention_mask_4d
    m = attention_mask_4d(torch.tensor([[0, 0, 1, 1, 1]]), 5, 0)[0, 0]
    expected = torch.tensor([[1, 0, 0, 0, 0],
                             [0, 1, 0, 0, 0],
                             [0, 0, 1, 0, 0],
                             [0, 0, 1, 1, 0],
                             [0, 0, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(m, expected)
    step = attention_mask_4d(torch.tensor([[0, 0, 1, 1, 1, 1]]), 1, 5)[0, 0]   # a decode step after the prompt
    assert torch.equal(step, torch.tensor([[0, 0, 1, 1, 1, 1]], dtype=torch.bool))


def test_sharded_folder_of_links_loads_and_an_index_pointing_outside_is_refused(tmp_path, hf_small):
    "The hub's cache keeps each shard as a link to a blob outside the snapshot folder: that loads; a name with .. does not."
    import json
    from safetensors.torch import save_file
    sd = {k: v.contiguous() for k, v in hf_small.state_dict().items() if k != "lm_head.weight"}
    keys = sorted(sd); halves = {"a.safetensors": keys[:len(keys) // 2], "b.safetensors": keys[len(keys) // 2:]}
    (tmp_path / "blobs").mkdir(); snap = tmp_path / "snapshot"; snap.mkdir()
    for name, ks in halves.items():
        save_file({k: sd[k] for k in ks}, str(tmp_path / "blobs" / name)); (snap / name).symlink_to(tmp_path / "blobs" / name)
    index = {"weight_map": {k: name for name, ks in halves.items() for k in ks}}
    (snap / "model.safetensors.index.json").write_text(json.dumps(index))
    (snap / "config.json").write_text(hf_small.config.to_json_string())
    ids = torch.randint(0, 50257, (1, 8), generator=torch.Generator().manual_seed(0))
    assert max_diff(GPT2Model.from_pretrained(snap), hf_small, ids) < 1e-4
    index["weight_map"][keys[0]] = "../blobs/a.safetensors"
    (snap / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="points outside its folder"): GPT2Model.from_pretrained(snap)


# --- GPT-2 variants (issue 18.1): every option transformers' GPT-2 computes with, against transformers itself -----------

REFUSED_ACTIVATIONS = ("prelu", "xielu")     # activations with learned parameters of their own (not in a GPT-2 state dict)


def hf_variant(std=0.12, eager=False, **option):
    "transformers' GPT-2 with `option`, weights re-drawn at `std` (where an option's effect shows), in a fresh folder's config."
    import transformers
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=257, n_positions=64, n_embd=64, n_layer=3, n_head=4, **option)
    if eager: cfg._attn_implementation = "eager"      # reorder_and_upcast_attn runs only in transformers' eager attention
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if p.dim() == 2: p.normal_(0.0, std)      # embeddings and Conv1D weights; LayerNorms stay as they are
            elif name.endswith(".bias"): p.normal_(0.0, std / 4)
    return hf


def hf_activation_names():
    from transformers.activations import ACT2FN
    return sorted(ACT2FN)


VARIANTS = ([dict(activation_function=a) for a in hf_activation_names() if a not in REFUSED_ACTIVATIONS]
            + [dict(scale_attn_weights=False), dict(scale_attn_by_inverse_layer_idx=True), dict(n_inner=80),
               dict(scale_attn_weights=False, scale_attn_by_inverse_layer_idx=True, activation_function="relu", n_inner=48),
               dict(reorder_and_upcast_attn=True)])


@pytest.mark.parametrize("option", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_variant_logits_equal_transformers(tmp_path, option):
    hf = hf_variant(eager="reorder_and_upcast_attn" in option, **option)
    hf.save_pretrained(tmp_path)
    ours = GPT2Model.from_pretrained(tmp_path)
    for k, v in option.items(): assert getattr(ours.config, k) == v
    ids = torch.randint(0, 257, (2, 20), generator=torch.Generator().manual_seed(0))
    assert max_diff(ours, hf, ids) < 1e-4
    assert ours.num_params() == count_params(ours.config) == sum(p.numel() for p in hf.parameters())


@pytest.mark.parametrize("option", [o for o in VARIANTS if o != dict(reorder_and_upcast_attn=True)][-12:],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_variant_generate_equals_transformers_greedy(tmp_path, option):
    from gpt2_learn.config import InferenceConfig
    hf = hf_variant(**option)
    hf.save_pretrained(tmp_path)
    ours = GPT2Model.from_pretrained(tmp_path)
    ids = torch.randint(0, 257, (1, 6), generator=torch.Generator().manual_seed(1))
    want = hf.generate(ids, max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0)[0, 6:].tolist()
    cfg = InferenceConfig(max_new_tokens=16, do_sample=False, repetition_penalty=1.0, eos_token_id=None)
    assert [int(t) for t in ours.generate(ids, config=cfg)] == want


def test_every_variant_changes_the_logits():
    "The oracle tests above would fail with an option dropped: each option moves the logits far beyond 1e-4 at std 0.12."
    ids = torch.randint(0, 257, (2, 20), generator=torch.Generator().manual_seed(0))
    plain = hf_variant()
    for option in VARIANTS:
        if option == dict(reorder_and_upcast_attn=True) or option.get("activation_function") in ("gelu_new",
                "gelu_pytorch_tanh", "gelu_python_tanh", "gelu_fast", "gelu_accurate"): continue   # the same function as GPT-2's
        with torch.no_grad(): d = (hf_variant(**option)(ids).logits - plain(ids).logits).abs().max().item()
        assert d > 1e-3, option


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reorder_and_upcast_attn_computes_half_precision_attention_in_float32(monkeypatch, dtype):
    "As transformers' eager path does (its SDPA path ignores the option); on the CPU the logits cannot tell: SDPA's inputs can."
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    def spy(q, k, v, *args, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype))
        return sdpa(q, k, v, *args, **kwargs)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    ids = torch.randint(0, 257, (2, 12), generator=torch.Generator().manual_seed(0))
    for upcast in (True, False):
        ours = ours_from_hf(hf_variant(reorder_and_upcast_attn=upcast)).to(dtype)
        seen.clear()
        with torch.no_grad(): out = ours(ids)
        assert out.dtype == dtype and len(seen) == 3
        assert set(seen) == {(torch.float32,) * 3 if upcast else (dtype,) * 3}


@pytest.mark.parametrize("field,value,words", [
    ("add_cross_attention", True, "cross-attention"), ("tie_word_embeddings", False, "tie"),
    ("activation_function", "prelu", "learned"), ("activation_function", "swiglu", "activation_function"),
    ("model_type", "gpt_neo", "model_type"), ("pruned_heads", {"0": [1]}, "pruned_heads"),
    ("scale_attn_weights", "yes", "scale_attn_weights"), ("n_inner", 0, "n_inner"),
    ("quantization_config", {"quant_method": "bitsandbytes"}, "quantization_config")])
def test_config_fields_we_do_not_compute_are_refused_in_one_line(tmp_path, hf_small, field, value, words):
    import json
    d = {**hf_small.config.to_dict(), field: value}
    with pytest.raises(ValueError) as e: GPT2Config.from_dict(d)
    msg = str(e.value)
    assert "\n" not in msg and field in msg and words in msg, msg
    (tmp_path / "config.json").write_text(json.dumps(d))                         # and through a model folder
    hf_small.save_pretrained(tmp_path / "w")
    (tmp_path / "model.safetensors").write_bytes((tmp_path / "w" / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match=field): GPT2Model.from_pretrained(tmp_path)


def test_config_fields_that_do_not_change_inference_are_accepted(hf_small):
    d = {**hf_small.config.to_dict(), "resid_pdrop": 0.3, "embd_pdrop": 0.2, "attn_pdrop": 0.1, "initializer_range": 0.5,
         "bos_token_id": 1, "eos_token_id": [2, 3], "pad_token_id": 0, "use_cache": False, "summary_type": "mean",
         "n_ctx": 128, "architectures": ["GPT2LMHeadModel"], "dtype": "float16", "task_specific_params": {"x": {}},
         "output_attentions": True, "pruned_heads": {}, "model_type": "gpt2", "tie_word_embeddings": True}
    cfg = GPT2Config.from_dict(d)
    assert (cfg.n_layer, cfg.dropout, cfg.activation_function) == (2, 0.0, "gelu_new")


def test_our_activation_table_is_transformers_less_the_refused():
    from gpt2_learn.model import ACTIVATIONS
    from gpt2_learn.config import GPT2_ACTIVATIONS
    assert sorted(ACTIVATIONS) == sorted(GPT2_ACTIVATIONS) == [a for a in hf_activation_names() if a not in REFUSED_ACTIVATIONS]


@pytest.mark.parametrize("field,value", [("n_layer", 10**9), ("n_embd", 10**7), ("vocab_size", 10**10), ("n_positions", 10**9),
                                         ("n_inner", 10**9)])
def test_declared_sizes_far_beyond_gpt2_xl_are_refused_at_construction(field, value):
    import time
    t0 = time.perf_counter()
    kw = {field: value, **({"n_head": 1} if field == "n_embd" else {})}
    with pytest.raises(ValueError) as e: GPT2Config(**kw)
    assert field in str(e.value) and f"{value}" in str(e.value).replace(",", "").replace("_", "") and "\n" not in str(e.value)
    assert time.perf_counter() - t0 < 1


def test_combined_sizes_are_refused_by_the_parameter_count_and_gpt2_xl_passes():
    GPT2Config.from_name("gpt2-xl")
    with pytest.raises(ValueError, match="parameters"): GPT2Config(n_layer=1000, n_embd=8192, n_head=64)


def test_transformers_attribute_names_are_read_as_ours():
    "config.json may say num_hidden_layers, hidden_size, ... (transformers' attribute_map); ours win where both are given."
    cfg = GPT2Config.from_dict({"num_hidden_layers": 3, "hidden_size": 64, "num_attention_heads": 4,
                                "max_position_embeddings": 32, "n_layer": 2})
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_positions) == (2, 64, 4, 32)


def test_attention_with_and_without_a_mask_agree_on_a_causal_batch(hf_small):
    "An all-ones attention mask (the explicit (B, 1, T, T) mask) gives the logits of the fused causal path."
    ours = ours_from_hf(hf_small)
    ids = torch.randint(0, 50257, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, attention_mask=torch.ones_like(ids)), ours(ids), atol=1e-5, rtol=1e-5)


def test_resolve_device_and_dtype_errors_are_one_line():
    from gpt2_learn.model import resolve_device, resolve_dtype
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("bf16") == torch.bfloat16 and resolve_dtype(None) == torch.float32
    for bad, call in (("tpu", resolve_device), ("int8", resolve_dtype)):
        with pytest.raises(ValueError) as e:
            call(bad)
        assert bad in str(e.value) and "use" in str(e.value) and "\n" not in str(e.value)
