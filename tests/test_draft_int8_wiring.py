"TextGenerator and the CLI wired to speculative decoding (--draft_model/--draft_k) and int8 (--dtype int8)."
import pytest
import torch

from gpt2_learn.config import InferenceConfig
from gpt2_learn.inference import ModelLoadError, TextGenerator, main
from gpt2_learn.quant import Int8Linear

GREEDY = InferenceConfig(max_new_tokens=24, do_sample=False, repetition_penalty=1.0, stream=False)
PROMPTS = ["def fibonacci(n):", "import os\n", "class Parser:"]


@pytest.fixture(scope="module")
def plain():
    return TextGenerator(device="cpu")


def test_draft_greedy_text_is_the_models_own(plain):
    spec = TextGenerator(device="cpu", draft_model="bundled", draft_k=3)
    assert spec.draft is not None and spec.draft.config.n_embd < spec.model.config.n_embd
    for prompt in PROMPTS:
        assert spec.generate_text(prompt, GREEDY) == plain.generate_text(prompt, GREEDY)


def test_draft_sampled_text_is_reproducible():
    spec = TextGenerator(device="cpu", draft_model="bundled", draft_k=2)
    cfg = InferenceConfig(max_new_tokens=16, temperature=0.9, top_k=40, seed=3, stream=False)
    assert spec.generate_text("import re\n", cfg) == spec.generate_text("import re\n", cfg)


def test_int8_generator_quantizes_and_generates(plain):
    gen = TextGenerator(dtype="int8")                       # device auto: int8 runs on the CPU
    assert gen.device.type == "cpu"
    assert any(isinstance(m, Int8Linear) for m in gen.model.modules())
    assert not any(type(m) is torch.nn.Linear for m in gen.model.modules())
    text = gen.generate_text("def fibonacci(n):", GREEDY)
    assert isinstance(text, str) and text


@pytest.mark.parametrize("bad, fix", [(dict(draft_k=0), "draft_k"), (dict(draft_k=True), "draft_k"),
                                      (dict(draft_model="/no/such/draft.pth"), "draft model")])
def test_bad_draft_arguments_say_what_to_do(bad, fix):
    with pytest.raises((ValueError, ModelLoadError), match=fix):
        TextGenerator(device="cpu", **bad)


def test_int8_refuses_a_gpu_in_one_line():
    with pytest.raises(ValueError, match="int8 runs on the CPU|no CUDA GPU"):
        TextGenerator(device="cuda", dtype="int8")


@pytest.mark.parametrize("argv, code, words", [
    (["--draft_k", "0"], 2, "--draft_k must be from 1 to 16"),
    (["--draft_model", "bundled", "--num_beams", "2"], 2, "not beam search"),
    (["--draft_model", "/no/such/draft.pth"], 2, "draft model: model not found"),
    (["--dtype", "int9"], 2, "invalid choice"),
])
def test_cli_refuses_bad_draft_and_dtype_flags(argv, code, words, capsys):
    assert main(["--prompt", "x", "--max_new_tokens", "2", *argv]) == code
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2


def test_cli_runs_with_draft_and_int8(capsys):
    assert main(["--prompt", "import os", "--max_new_tokens", "8", "--no_sample", "--draft_model", "bundled",
                 "--device", "cpu"]) == 0
    with_draft = capsys.readouterr().out
    assert main(["--prompt", "import os", "--max_new_tokens", "8", "--no_sample", "--device", "cpu"]) == 0
    assert capsys.readouterr().out == with_draft
    assert main(["--prompt", "import os", "--max_new_tokens", "8", "--no_sample", "--dtype", "int8"]) == 0
    assert capsys.readouterr().out.startswith("import os")
