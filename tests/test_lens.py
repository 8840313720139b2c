"The logit lens: every layer's residual stream through ln_f and the tied head, against transformers' hidden states."
import pytest
import torch
import transformers
from gpt2_learn.lens import LensExplorer, lens_agreement, lens_top, logit_lens, plot_logit_lens, residual_stream
from conftest import ours_from_hf


@pytest.fixture(scope="module")
def pair():
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=300, n_positions=32, n_embd=64, n_layer=3,
                                                              n_head=2)).eval()
    return hf, ours_from_hf(hf)


def test_lens_matches_transformers_hidden_states(pair):
    hf, ours = pair
    ids = torch.randint(0, 300, (1, 11))
    lens = logit_lens(ours, ids)
    assert lens.shape == (4, 11, 300) and lens.dtype == torch.float32
    torch.testing.assert_close(lens[-1], ours(ids)[0], atol=1e-5, rtol=0)        # the last layer is the model's output
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
        hs = out.hidden_states                                                     # its last one is after ln_f already
        theirs = torch.stack([hf.lm_head(hf.transformer.ln_f(h[0])) for h in hs[:-1]] + [hf.lm_head(hs[-1][0])])
    torch.testing.assert_close(lens, theirs, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lens[-1], out.logits[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(residual_stream(ours, ids[0])[:-1], torch.cat(hs[:-1]), atol=1e-5, rtol=1e-5)
    rows = lens_agreement(lens)
    assert rows[-1]["agree"] == 1.0 and abs(rows[-1]["kl"]) < 1e-5 and len(rows) == 4


def test_bad_input_names_the_argument(pair):
    _, ours = pair
    for ids, msg in [(torch.zeros((2, 3), dtype=torch.long), "one prompt at a time"),
                     ([], "must hold 1 to 32 tokens"),
                     (torch.zeros((1, 33), dtype=torch.long), "must hold 1 to 32 tokens"),
                     ([[400]], r"token ids must be in \[0, 300\)")]:
        with pytest.raises(ValueError, match=msg): logit_lens(ours, ids)
    with pytest.raises(TypeError, match="integer token ids"): logit_lens(ours, torch.zeros(3))


def test_heat_map_and_widget_on_the_bundled_model():
    from gpt2_learn.tokenizer import load_tokenizer
    from gpt2_learn.weights import load_bundled_model
    model, tok = load_bundled_model().eval(), load_tokenizer()
    prompt = "for i in range(10):\n    print(i)\nfor i in range("
    ids = tok.encode(prompt)
    lens = logit_lens(model, ids)
    fig = plot_logit_lens(lens, tok, ids, max_tokens=8)
    ax = fig.axes[0]
    assert ax.images[0].get_array().shape == (model.config.n_layer + 1, 8)
    p, top = lens_top(lens[:, -8:])
    assert torch.allclose(torch.as_tensor(ax.images[0].get_array()), p[..., 0])    # colour = the top token's prob.
    with pytest.raises(ValueError, match="input_ids has 3 tokens but the lens"): plot_logit_lens(lens, tok, ids[:3])
    w = LensExplorer(model, tok, prompt, k=4)
    assert w.state["position"] == len(ids) - 1
    w.position.value = 5                                                           # as a click on the dropdown
    p, top = lens_top(lens[:, 5], 4)
    assert w.state["position"] == 5 and w.state["token"] == ids[5] and w.state["top_ids"] == top.tolist()
    assert len(w.figure.axes) == model.config.n_layer + 1 and "first on top at" in w.summary.value
