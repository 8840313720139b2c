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
