"A folder from `save_pretrained` that serving engines load as is (issue 23.2): files, tokenizer, generation defaults."
import dataclasses, json, os, warnings
import pytest
import torch
from gpt2_learn.config import GPT2Config, InferenceConfig
from gpt2_learn.inference import TextGenerator
from gpt2_learn.model import GPT2Model
from gpt2_learn.tokenizer import load_tokenizer, tokenizer_from_folder
import gpt2_learn.weights as W

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SERVING_FILES = {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "vocab.json",
                 "merges.txt", "tokenizer_config.json", "special_tokens_map.json"}
PROMPTS = ["def fibonacci(n):", "The algorithm works by"]
TEXTS = ["Hello world", " caf\u00e9 \u4e16\u754c\n\tdef f(x): return x<|endoftext|>", "  two  spaces"]


def relu_model() -> GPT2Model:
    "A random-weight GPT-2 with the full GPT-2 vocabulary and relu MLPs (weights wide enough that greedy has no ties)."
    torch.manual_seed(0)
    model = GPT2Model(GPT2Config(vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                 activation_function="relu")).eval()
    with torch.no_grad():
        for p in model.parameters(): p.normal_(0, 0.3)
    return model


def ours_greedy(model, prompt: str, **kw) -> str:
    config = InferenceConfig(do_sample=False, max_new_tokens=20, stream=False, **kw)
    return TextGenerator.from_model(model).generate_text(prompt, config)


@pytest.mark.parametrize("which", ["bundled", "relu"])
def test_pipeline_loads_the_folder_as_is_and_greedy_equals_ours(tmp_path, which):
    "transformers' pipeline on the folder (no remote code) samples as ours does by default; greedy text = ours."
    import transformers
    model = W.load_bundled_model() if which == "bundled" else relu_model()
    config = None if which == "bundled" else InferenceConfig(temperature=0.7, top_k=10, top_p=0.9, min_p=0.05,
                                                             repetition_penalty=1.1, max_new_tokens=33)
    folder = W.save_pretrained(model, tmp_path / "served", config=config)
    assert {p.name for p in folder.iterdir()} == SERVING_FILES
    pipe = transformers.pipeline("text-generation", str(folder), device="cpu", trust_remote_code=False)
    want = config or InferenceConfig()
    got = pipe.model.generation_config                       # what a plain pipe(prompt) samples with
    assert got.do_sample is True
    for name in ("temperature", "top_k", "top_p", "repetition_penalty", "max_new_tokens"):
        assert getattr(got, name) == getattr(want, name), name
    assert (got.eos_token_id, got.bos_token_id, got.pad_token_id) == (50256, 50256, 50256)
    if config is not None: assert got.min_p == 0.05
    torch.manual_seed(0)                                     # a plain call: sampled, with the folder's defaults
    theirs = pipe(PROMPTS[0], return_full_text=False)[0]["generated_text"]
    sampled = dataclasses.replace(want, seed=0, stream=False)
    assert theirs == TextGenerator.from_model(model).generate_text(PROMPTS[0], sampled)   # token for token
    for prompt in PROMPTS:
        theirs = pipe(prompt, do_sample=False, max_new_tokens=20, return_full_text=False)[0]["generated_text"]
        assert theirs == ours_greedy(model, prompt, repetition_penalty=want.repetition_penalty), prompt
        theirs = pipe(prompt, do_sample=False, max_new_tokens=20, repetition_penalty=1.0,
                      return_full_text=False)[0]["generated_text"]
        assert theirs == ours_greedy(model, prompt, repetition_penalty=1.0), prompt


def test_tokenizer_files_load_through_ours_and_transformers(tmp_path):
    "The folder's tokenizer, read by our plain-file loader, from vocab.json + merges.txt alone, and by AutoTokenizer."
    from transformers import AutoTokenizer
    folder = W.save_pretrained(W.load_bundled_model(), tmp_path / "served")
    reference = load_tokenizer()
    only_bpe = tmp_path / "bpe"
    only_bpe.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (only_bpe / name).write_bytes((folder / name).read_bytes())
    loaded = [tokenizer_from_folder(folder), tokenizer_from_folder(only_bpe),
              AutoTokenizer.from_pretrained(folder, trust_remote_code=False)]
    for tok in loaded:
        for text in TEXTS: assert tok.encode(text) == reference.encode(text), (type(tok).__name__, text)
        assert (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id) == (50256, 50256, 50256)
    assert loaded[2].model_max_length == 256                            # the bundled model's context window
    assert loaded[2].padding_side == "left"
    from gpt2_learn.inference import load_model
    _, tok = load_model(str(folder), device="cpu")                     # the CLI's loader: the folder's own files
    assert tok.encode(TEXTS[1]) == reference.encode(TEXTS[1])
    special = json.loads((folder / "special_tokens_map.json").read_text())
    assert special == {k: "<|endoftext|>" for k in ("bos_token", "eos_token", "unk_token", "pad_token")}


def test_generation_config_names_and_what_it_cannot_hold():
    "Greedy is do_sample false + temperature 0 (vLLM's greedy); per-request-only knobs are refused by name."
    from transformers import GenerationConfig
    greedy = W.generation_config_dict(InferenceConfig(do_sample=False))
    assert greedy["do_sample"] is False and greedy["temperature"] == 0.0 and "top_k" not in greedy
    assert W.generation_config_dict(InferenceConfig(temperature=0))["do_sample"] is False
    beams = W.generation_config_dict(InferenceConfig(num_beams=4, length_penalty=0.5, num_return_sequences=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read = GenerationConfig(**beams)
    assert (read.num_beams, read.length_penalty, read.num_return_sequences) == (4, 0.5, 2)
    for bad in (dict(stop=("\n",)), dict(presence_penalty=0.5), dict(frequency_penalty=-1.0)):
        with pytest.raises(ValueError, match=f"InferenceConfig.{next(iter(bad))} has no place"):
            W.generation_config_dict(InferenceConfig(**bad))
    with pytest.raises(ValueError, match="InferenceConfig.top_p"):
        W.generation_config_dict(InferenceConfig(top_p=2.0))


def small_model() -> GPT2Model:
    torch.manual_seed(0)
    return GPT2Model(GPT2Config(vocab_size=50257, n_positions=16, n_embd=8, n_layer=1, n_head=1)).eval()


def test_folder_rules_refuse_replace_and_never_leave_half_a_model(tmp_path, monkeypatch):
    "A non-model folder is refused untouched; a model folder is replaced whole; a failed write leaves the old one."
    model = small_model()
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text("{}")
    (project / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="folder=.*is not a model folder"):
        W.save_pretrained(model, project)
    assert sorted(os.listdir(project)) == ["config.json", "notes.txt"]
    (project / "model.safetensors").write_bytes(b"weights")              # a model folder, but with the user's notes in it
    with pytest.raises(ValueError, match="is not a model folder"):
        W.save_pretrained(model, project)
    assert sorted(os.listdir(project)) == ["config.json", "model.safetensors", "notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        W.save_pretrained(model, tmp_path / "file")
    with pytest.raises(ValueError, match="InferenceConfig.stop"):
        W.save_pretrained(model, tmp_path / "never", config=InferenceConfig(stop="x"))
    with pytest.raises(TypeError, match="tokenizer must be a transformers fast tokenizer"):
        W.save_pretrained(model, tmp_path / "never", tokenizer=type("Slow", (), {"__len__": lambda self: 3})())
    tiny = GPT2Model(GPT2Config(vocab_size=100, n_positions=16, n_embd=8, n_layer=1, n_head=1))
    with pytest.raises(ValueError, match="tokenizer has 50257 tokens, more than the model's 100"):
        W.save_pretrained(tiny, tmp_path / "never", tokenizer=load_tokenizer())
    with pytest.warns(UserWarning, match="no tokenizer files written"):   # the old call form, a teaching vocabulary
        W.save_pretrained(tiny, tmp_path / "tiny")
    written = {p.name for p in (tmp_path / "tiny").iterdir()}
    assert written == {"config.json", "model.safetensors", "generation_config.json"}
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    assert W.save_pretrained(model, ".") == tmp_path / "empty"             # an empty folder is filled (even ".")
    monkeypatch.chdir(tmp_path)                                             # "." was replaced by a new folder
    folder = W.save_pretrained(model, tmp_path / "m")
    (folder / "pytorch_model.bin").write_bytes(b"stale")                    # an older export's file
    before = (folder / "model.safetensors").read_bytes()
    W.save_pretrained(small_model(), folder)
    assert {p.name for p in folder.iterdir()} == SERVING_FILES             # replaced whole: the stale file is gone
    def broken(*args, **kwargs): raise OSError("disk full")
    import safetensors.torch
    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    bigger = GPT2Model(GPT2Config(vocab_size=50257, n_positions=16, n_embd=8, n_layer=2, n_head=1))
    with pytest.raises(OSError, match="disk full"):
        W.save_pretrained(bigger, folder)
    assert (folder / "model.safetensors").read_bytes() == before and json.loads(
        (folder / "config.json").read_text())["n_layer"] == 1
    monkeypatch.undo()
    rename = os.rename
    def swap_fails(src, dst):                                # the old folder is set aside, the new one cannot follow
        if str(src).endswith(".tmp"): raise OSError("swap failed")
        rename(src, dst)
    monkeypatch.setattr(os, "rename", swap_fails)
    with pytest.raises(OSError, match="swap failed"):
        W.save_pretrained(bigger, folder)
    assert (folder / "model.safetensors").read_bytes() == before          # put back
    assert {p.name for p in folder.iterdir()} == SERVING_FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "m", "project", "tiny"]   # no temporary left
    assert not (tmp_path / "never").exists()
