"Plots carry the numbers the sampling functions compute; the widgets redraw the right way when a knob moves."
import base64

import matplotlib
import numpy as np
import pytest
import torch

from gpt2_learn import viz
from gpt2_learn.config import GPT2Config, InferenceConfig
from gpt2_learn.model import GPT2Model
from gpt2_learn.sampling import (apply_repetition_penalty, apply_temperature, distribution_stats, min_p_filter,
                                 process_logits, top_k_filter, top_p_filter)
from gpt2_learn.tokenizer import load_tokenizer
from gpt2_learn.generation import TextStream


pytestmark = pytest.mark.filterwarnings("ignore:Glyph .* missing from font", "ignore:Tight layout not applied")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GPT2Model(GPT2Config.from_name("gpt2-micro")).eval()
    with torch.no_grad(): m.lm_head.weight.mul_(60)          # a peaked distribution, not near-uniform noise
    return m


@pytest.fixture(scope="module")
def logits():
    "A synthetic peaked distribution over GPT-2's vocabulary (1, V)."
    g = torch.Generator().manual_seed(0)
    rank = torch.randperm(50257, generator=g).float() + 1
    return (6.0 - 1.2 * rank.log() + 0.1 * torch.randn(50257, generator=g))[None]


def bars(ax):
    return [p for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle)]


def test_labels(tok):
    assert viz.readable(" a\nb\t") == "␣a↵b⇥"
    assert viz.token_label(tok, 220) == "␣" and viz.token_label(tok, 198) == "↵"
    assert viz.token_label(tok, tok.encode(" the")[0]) == "␣the"


@pytest.mark.parametrize("knobs,filt", [
    (dict(top_k=5), lambda z: top_k_filter(z, 5)),
    (dict(top_p=0.5), lambda z: top_p_filter(z, 0.5)),
    (dict(min_p=0.2), lambda z: min_p_filter(z, 0.2)),
    (dict(temperature=0.7), lambda z: apply_temperature(z, 0.7)),
])
def test_distribution_bars_carry_the_pipeline(logits, tok, knobs, filt):
    cfg = viz.sampling_config(**knobs)
    fig = viz.plot_distribution(logits, tok, cfg, n=12)
    ax = fig.axes[0]
    expected = filt(logits)
    before, after = logits.softmax(-1)[0], expected.softmax(-1)[0]
    top = before.topk(12).indices
    kept = torch.isfinite(expected[0, top])
    heights = torch.tensor([b.get_height() for b in bars(ax)], dtype=torch.float32)
    want = torch.where(kept, after[top], before[top])                      # removed: grey ghost at the old height
    torch.testing.assert_close(heights, want, atol=1e-6, rtol=1e-5)
    grey = [matplotlib.colors.to_hex(b.get_facecolor()) == matplotlib.colors.to_hex(viz.REMOVED_COLOR) for b in bars(ax)]
    assert grey == (~kept).tolist()
    np.testing.assert_allclose(ax.lines[0].get_ydata(), before[top].numpy(), rtol=1e-5)      # before ticks
    st = distribution_stats(expected, reference=logits)
    assert f"kept {st['kept']:,}/" in ax.get_title() and f"{st['entropy']:.2f}" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == [viz.token_label(tok, i) for i in top.tolist()]


def test_repetition_penalty_and_greedy_view(logits, tok):
    ids = logits.topk(3).indices                                          # the 3 top tokens "appeared" in the prompt
    view = viz.pipeline_view(logits, viz.sampling_config(repetition_penalty=2.0), ids, n=10)
    want = apply_repetition_penalty(logits, ids, 2.0).softmax(-1)[0]
    torch.testing.assert_close(torch.tensor(view["after"]), want[torch.tensor(view["ids"])])
    assert view["after"][0] < view["before"][0]
    greedy = viz.pipeline_view(logits, InferenceConfig(do_sample=False), n=5)
    assert greedy["n_kept"] == 1 and greedy["kept"] == [True, False, False, False, False] and greedy["after"][0] == 1.0


def test_strategy_grid(logits, tok):
    fig = viz.plot_strategy_grid(logits, tok, n=8)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == len(viz.GRID_SETTINGS)
    for ax, (name, knobs) in zip(axes, viz.GRID_SETTINGS.items()):
        assert ax.get_title().startswith(name)
        view = viz.pipeline_view(logits, viz.sampling_config(**knobs), n=8)
        heights = [b.get_height() for b in bars(ax)]
        want = [a if k else b for a, b, k in zip(view["after"], view["before"], view["kept"])]
        np.testing.assert_allclose(heights, want, rtol=1e-5)
        assert max(heights + view["before"]) <= ax.get_ylim()[1], f"{name}: a bar or tick is cut off at the top"
    topk_ax = axes[list(viz.GRID_SETTINGS).index("top-k 5")]
    assert sum(matplotlib.colors.to_hex(b.get_facecolor()) != matplotlib.colors.to_hex(viz.REMOVED_COLOR) for b in bars(topk_ax)) == 5


def test_temperature_sweep(logits, tok):
    temps = [0.25, 0.5, 1.0, 2.0, 4.0]
    fig = viz.plot_temperature_sweep(logits, tok, temps, n=3)
    a, b = fig.axes
    top = logits.topk(3).indices[0]
    for j, line in enumerate(a.lines[:3]):
        want = [apply_temperature(logits, t).softmax(-1)[0, top[j]].item() for t in temps]
        np.testing.assert_allclose(line.get_ydata(), want, rtol=1e-5)
        assert line.get_label() == viz.token_label(tok, int(top[j]))
    ent = b.lines[0].get_ydata()
    np.testing.assert_allclose(ent, [distribution_stats(apply_temperature(logits, t))["entropy"] for t in temps], rtol=1e-5)
    assert all(np.diff(ent) > 0)                                          # hotter is flatter


def test_sample_histogram(logits, tok):
    cfg = viz.sampling_config(top_k=6)
    fig = viz.plot_sample_histogram(logits, tok, cfg, n_samples=3000, seed=1, n=8)
    ax = fig.axes[0]
    counts, probs = viz.sample_counts(logits, cfg, n_samples=3000, seed=1)
    top = logits.topk(8).indices[0]
    freq = [b.get_height() for b in bars(ax)]
    np.testing.assert_allclose(freq[:-1], (counts[top] / 3000).numpy(), rtol=1e-6)
    np.testing.assert_allclose(ax.lines[0].get_ydata()[:-1], top_k_filter(logits, 6).softmax(-1)[0, top].numpy(), rtol=1e-5)
    assert freq[6:] == [0, 0, 0]                                          # removed tokens (and the rest) never drawn
    assert np.abs(np.array(freq[:6]) - ax.lines[0].get_ydata()[:6]).max() < 0.04


def test_trace_plot(model, tok):
    trace = []
    stream = TextStream(model, tok, "def f(x):", InferenceConfig(max_new_tokens=8, seed=0), trace=trace)
    "".join(stream)
    fig = viz.plot_trace(trace, tok, "def f(x):", top=4)
    a, b = fig.axes
    grid = b.images[0].get_array()
    want = torch.stack([s["top_probs_before"][0, :4] for s in trace]).numpy()
    np.testing.assert_allclose(grid, want, rtol=1e-6)
    texts = [t.get_text() for t in a.texts]
    assert texts[0].startswith("def") and len(texts) >= 1 + len(trace)
    coloured = [t for t in a.texts if t.get_bbox_patch() is not None]
    assert len(coloured) >= len(trace)
    rows = viz._trace_rows(trace, tok, color_by="rank")
    assert [r["token"] for r in rows] == stream.token_ids
    with pytest.raises(ValueError, match="trace is empty"): viz.plot_trace([], tok)


def test_attention_matches_transformers(tok):
    from conftest import make_hf_model, ours_from_hf
    hf = make_hf_model()
    ours = ours_from_hf(hf)
    ids = torch.tensor([tok.encode("def fibonacci(n): return n")])
    hf.config._attn_implementation = "eager"
    want = hf(ids, output_attentions=True).attentions                     # per layer (B, nh, T, T)
    for layer in range(2):
        torch.testing.assert_close(viz.attention_weights(ours, ids, layer), want[layer].detach(), atol=1e-5, rtol=1e-4)
    fig = viz.plot_attention(ours, tok, "def fibonacci(n): return n", layer=1, head=1)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), want[1][0, 1].detach().numpy(), atol=1e-5)
    assert len([ax for ax in viz.plot_attention(ours, tok, "a b c", layer=0, head=None).axes if ax.images]) == 2
    with pytest.raises(ValueError, match="head must be"): viz.plot_attention(ours, tok, "a b", head=5)


def test_kv_timings(model):
    t = viz.kv_cache_timings(model, [4, 16], repeats=1)
    assert set(t) == {"no cache", "with cache"} and all(v > 0 for ms in t.values() for v in ms)
    fig = viz.plot_kv_timings([4, 16], t)
    assert [list(l.get_ydata()) for l in fig.axes[0].lines] == [t["no cache"], t["with cache"]]
    with pytest.raises(ValueError, match="position must be"): viz.time_decode_step(model, 10_000, True)


def test_sampling_explorer_moves_the_right_way(model, tok):
    w = viz.sampling_explorer(model, tok, "def fibonacci(n):")
    assert set(w.sliders) == {"temperature", "top_k", "top_p", "repetition_penalty", "min_p"}
    png0 = w.out.outputs[0]["data"]["image/png"]
    assert base64.b64decode(png0)[:4] == b"\x89PNG"
    w.sliders["top_k"].value, w.sliders["top_p"].value, w.sliders["repetition_penalty"].value = 0, 1.0, 1.0
    entropies = []
    for t in (0.5, 1.0, 1.5):
        w.sliders["temperature"].value = t
        entropies.append(w.state["entropy"])
        want = process_logits(w.logits, w.input_ids, w.config)
        assert w.state["entropy"] == pytest.approx(distribution_stats(want)["entropy"], rel=1e-5)
    assert entropies[0] < entropies[1] < entropies[2]
    w.sliders["top_k"].value = 10
    kept10 = sum(w.state["kept"])
    w.sliders["top_k"].value = 3
    assert sum(w.state["kept"]) == w.state["n_kept"] == 3 < kept10 == 10
    heights = [b.get_height() for b in bars(w.figure.axes[0])]
    np.testing.assert_allclose(heights[:3], w.state["after"][:3], rtol=1e-5)
    assert w.out.outputs[0]["data"]["image/png"] != png0 and len(w.out.outputs) == 1


def test_step_explorer(model, tok):
    w = viz.step_explorer(model, tok, "def f(x):", InferenceConfig(top_k=5), n_buttons=4, seed=0)
    cands = w.state["candidates"]
    assert 1 <= len(cands) <= 4 and len(w.candidates.children) == len(cands)
    w.candidates.children[0].click()                                      # the learner picks the top candidate
    assert w.state["generated"] == [cands[0][0]]
    tok2 = w.sample()
    assert w.state["generated"] == [cands[0][0], tok2]
    w.undo_button.click(); w.undo(); w.undo()
    assert w.state["ids"] == w.prompt_ids
    with pytest.raises(ValueError, match="prompt is empty"): viz.step_explorer(model, tok, "")


def test_compare_settings(model, tok):
    configs = {"greedy": InferenceConfig(do_sample=False), "hot": dict(temperature=1.5)}
    w = viz.compare_settings(model, tok, "def f(x):", configs, seed=3, max_new_tokens=6)
    again = viz.compare_settings(model, tok, "def f(x):", configs, seed=3, max_new_tokens=6)
    assert w.texts == again.texts and set(w.texts) == {"greedy", "hot"}
    ref = TextStream(model, tok, "def f(x):", viz.sampling_config(temperature=1.5).replace(seed=3, max_new_tokens=6))
    assert w.texts["hot"] == "".join(ref)
    assert "<table>" in w.table.value and "greedy" in w.table.value


@pytest.mark.parametrize("option", [dict(scale_attn_by_inverse_layer_idx=True), dict(scale_attn_weights=False)])
def test_attention_of_a_variant_matches_transformers(tmp_path, option):
    "A GPT-2 variant's attention scaling is the one the heat map shows (weights at std 0.12, where it shows)."
    import transformers
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=257, n_positions=64, n_embd=64, n_layer=2,
                                                              n_head=4, **option)).eval()
    with torch.no_grad():
        for p in hf.parameters(): p.normal_(0, 0.12)
    hf.save_pretrained(tmp_path)
    ours = GPT2Model.from_pretrained(tmp_path)
    ids = torch.randint(0, 257, (1, 12), generator=torch.Generator().manual_seed(1))
    hf.config._attn_implementation = "eager"
    want = hf(ids, output_attentions=True).attentions
    for layer in range(2):
        torch.testing.assert_close(viz.attention_weights(ours, ids, layer), want[layer].detach(), atol=1e-5, rtol=1e-4)
