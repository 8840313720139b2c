"TextGenerator and the CLI: the reference guide's examples, determinism, streaming, batches, chat, and every bad input."
import io, os, sys

import pytest
import torch

from gpt2_learn.config import GPT2Config, InferenceConfig
from gpt2_learn.inference import (TextGenerator, PromptError, build_parser, chat_prompt, config_from_args, main,
                                  read_prompt, unescape_prompt)
from gpt2_learn.model import GPT2Model
from gpt2_learn.weights import bundled_model_path

HAVE_BUNDLED = bundled_model_path().is_file()
needs_bundled = pytest.mark.skipif(not HAVE_BUNDLED, reason=f"the bundled model is not built yet ({bundled_model_path()}); "
                                                            "the training issue ships it")


@pytest.fixture(scope="session")
def micro_ckpt(tmp_path_factory):
    "A random gpt2-micro checkpoint (context window 128)."
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "micro.pth"
    GPT2Model(GPT2Config.from_name("gpt2-micro")).save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def micro_gen(micro_ckpt):
    return TextGenerator(micro_ckpt, device="cpu")


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err, *contains):
    assert err.count("\n") == 1 and err.endswith("\n"), f"not one line: {err!r}"
    assert "Traceback" not in err and "error:" in err, err
    for c in contains: assert c in err, (c, err)


# ---------------------------------------------------------------- the guide's command lines

GUIDE_EXAMPLES = {   # the guide's flags, with --max_new_tokens lowered to keep CI fast
    "single generation": ["--prompt", "Once upon a time in a distant galaxy", "--max_new_tokens", "20"],
    "creative writing": ["--prompt", "In a world where magic exists", "--temperature", "0.9", "--top_k", "50",
                         "--top_p", "0.95", "--max_new_tokens", "40"],
    "technical writing": ["--prompt", "The algorithm works by", "--temperature", "0.7", "--top_k", "40",
                          "--repetition_penalty", "1.3", "--max_new_tokens", "30"],
    "dialogue": ["--prompt", r"Person A: How are you?\nPerson B:", "--temperature", "0.8", "--top_p", "0.92",
                 "--max_new_tokens", "30"],
    "code": ["--prompt", "def fibonacci(n):", "--temperature", "0.5", "--top_k", "30", "--repetition_penalty", "1.1",
             "--max_new_tokens", "30"],
    "story continuation": ["--prompt", "The old man walked into the forest and found", "--temperature", "1.0",
                           "--top_k", "60", "--top_p", "0.95", "--max_new_tokens", "40"],
    "sampling (default)": ["--prompt", "Hello world", "--max_new_tokens", "20"],
    "greedy": ["--prompt", "Hello world", "--no_sample", "--max_new_tokens", "20"],
    "streaming": ["--prompt", "Hello world", "--stream", "--max_new_tokens", "10"],
    "no streaming": ["--prompt", "Hello world", "--no_stream", "--max_new_tokens", "10"],
    "multi-turn": ["--prompt", r"User: What is AI?\nAssistant: AI stands for Artificial Intelligence.\nUser: How does it work?\nAssistant:",
                   "--max_new_tokens", "20"],
    "controlled": ["--prompt", r"Title: The Future of AI\nSummary:", "--temperature", "0.7", "--max_new_tokens", "20"],
    "force cpu": ["--prompt", "Hello world", "--device", "cpu", "--max_new_tokens", "10"],
}


def check_guide_example(capsys, argv):
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    prompt = unescape_prompt(argv[argv.index("--prompt") + 1])
    assert out.startswith(prompt) and out.endswith("\n")                 # the prompt, then its continuation
    assert "tokens/s" in err and "stopped:" in err and "Traceback" not in err
    return out, err


@needs_bundled
@pytest.mark.parametrize("name", list(GUIDE_EXAMPLES))
def test_guide_examples_on_bundled_model(capsys, name):
    out, err = check_guide_example(capsys, GUIDE_EXAMPLES[name])
    assert err.startswith("note: using the small GPT-2 bundled")


@pytest.mark.parametrize("name", list(GUIDE_EXAMPLES))
def test_guide_examples_with_model_path(capsys, micro_ckpt, name):
    check_guide_example(capsys, ["--model_path", micro_ckpt] + GUIDE_EXAMPLES[name])


@pytest.mark.parametrize("preset", ["quality", "creativity", "consistency", "speed"])
def test_presets_run(capsys, micro_ckpt, preset):
    code, out, err = run_cli(capsys, "--model_path", micro_ckpt, "--prompt", "Hi", "--preset", preset, "--max_new_tokens", "5")
    assert code == 0 and out.startswith("Hi"), err


def test_preset_then_explicit_flags():
    args = build_parser().parse_args(["--preset", "speed", "--max_new_tokens", "7", "--stream"])
    cfg = config_from_args(args)
    assert (cfg.do_sample, cfg.stream, cfg.max_new_tokens) == (False, True, 7)
    cfg = config_from_args(build_parser().parse_args(["--preset", "quality", "--temperature", "0.3"]))
    assert (cfg.temperature, cfg.top_k, cfg.top_p, cfg.repetition_penalty) == (0.3, 45, 0.93, 1.25)
    d, cfg = InferenceConfig(), config_from_args(build_parser().parse_args([]))
    assert cfg == d and (d.temperature, d.top_k, d.top_p, d.repetition_penalty, d.max_new_tokens, d.do_sample, d.stream) == \
        (1.0, 50, 0.95, 1.2, 100, True, True)                         # the guide's defaults
    cfg = config_from_args(build_parser().parse_args(["--stop", r"\n\n", "--stop", "END", "--min_p", "0.1", "--seed", "3"]))
    assert (cfg.stop, cfg.min_p, cfg.seed) == (("\n\n", "END"), 0.1, 3)
    every = ["--max_new_tokens", "9", "--temperature", "0.6", "--top_k", "7", "--top_p", "0.8", "--repetition_penalty", "1.4",
             "--min_p", "0.05", "--typical_p", "0.9", "--presence_penalty", "0.5", "--frequency_penalty", "-0.25",
             "--no_repeat_ngram_size", "3", "--seed", "4", "--no_stream", "--stop", "X"]
    cfg = config_from_args(build_parser().parse_args(every))
    assert cfg == InferenceConfig(max_new_tokens=9, temperature=0.6, top_k=7, top_p=0.8, repetition_penalty=1.4, min_p=0.05,
                                  typical_p=0.9, presence_penalty=0.5, frequency_penalty=-0.25, no_repeat_ngram_size=3,
                                  seed=4, stream=False, stop=("X",))                   # every flag reaches the config
    assert config_from_args(build_parser().parse_args(["--preset", "speed", "--sample"])).do_sample is True
    assert config_from_args(build_parser().parse_args(["--no_sample"])).do_sample is False


def test_greedy_is_deterministic(capsys, micro_ckpt):
    argv = ["--model_path", micro_ckpt, "--prompt", "Hello world", "--no_sample", "--max_new_tokens", "25"]
    a, b = run_cli(capsys, *argv), run_cli(capsys, *argv)
    assert a[0] == b[0] == 0 and a[1] == b[1]


@pytest.mark.parametrize("extra", [[], ["--top_k", "0", "--top_p", "1.0", "--temperature", "1.3", "--min_p", "0.02"]])
def test_stream_equals_no_stream_for_same_seed(capsys, micro_ckpt, extra):
    argv = ["--model_path", micro_ckpt, "--prompt", "Once upon a time", "--seed", "11", "--max_new_tokens", "40", *extra]
    s, n = run_cli(capsys, *argv, "--stream"), run_cli(capsys, *argv, "--no_stream")
    assert s[0] == n[0] == 0 and s[1] == n[1]
    other = run_cli(capsys, *argv[:-2], "--seed", "12", "--max_new_tokens", "40", *extra)
    assert other[1] != s[1]


def test_no_echo_and_stop_and_dtype(capsys, micro_ckpt, micro_gen):
    greedy = InferenceConfig(do_sample=False, max_new_tokens=30, stream=False)
    full = micro_gen.generate_text("Hello", greedy)
    code, out, err = run_cli(capsys, "--model_path", micro_ckpt, "--prompt", "Hello", "--no_sample", "--max_new_tokens", "30", "--no_echo")
    assert code == 0 and out == full + "\n"
    stop = full[3:6]
    code, out, err = run_cli(capsys, "--model_path", micro_ckpt, "--prompt", "Hello", "--no_sample", "--max_new_tokens", "30",
                             "--no_echo", "--stop", stop)
    assert code == 0 and out == full[:full.find(stop)] + "\n" and "stopped: stop string" in err
    code, out2, err = run_cli(capsys, "--model_path", micro_ckpt, "--prompt", "Hello", "--no_sample", "--max_new_tokens", "30",
                              "--no_echo", "--no_stream")
    assert code == 0 and out2 == full + "\n"                            # --no_echo holds without streaming too


def test_dtype_flag_loads_the_weights_in_that_dtype(capsys, micro_ckpt, monkeypatch):
    import gpt2_learn.inference as inference
    real, made = inference.TextGenerator, []
    def spy(*a, **k): made.append(real(*a, **k)); return made[-1]
    monkeypatch.setattr(inference, "TextGenerator", spy)
    for flag, dtype in (("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        code, out, err = run_cli(capsys, "--model_path", micro_ckpt, "--prompt", "Hello", "--max_new_tokens", "5", "--dtype", flag)
        assert code == 0, err
        assert made[-1].model.dtype == dtype


def test_chat_flag_runs_chat_mode(capsys, micro_ckpt, monkeypatch):
    "--chat on the command line: the prompt the model sees carries User:/Assistant: turns."
    import builtins
    import gpt2_learn.inference as inference
    lines, seen = iter(["Hi there", "And now?", "quit"]), []
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(lines))
    real_stream = inference.TextGenerator.stream
    def spy(self, prompt, config): seen.append(prompt); return real_stream(self, prompt, config)
    monkeypatch.setattr(inference.TextGenerator, "stream", spy)
    code, out, err = run_cli(capsys, "--model_path", micro_ckpt, "--chat", "--max_new_tokens", "4", "--seed", "0")
    assert code == 0 and "Chat mode" in err
    assert seen[0].endswith("User: Hi there\nAssistant:") and "User: Hi there" in seen[1] and seen[1].endswith("User: And now?\nAssistant:")


def test_cli_sampling_flags_equal_transformers(capsys, tmp_path):
    "The CLI end to end, --seed with typical_p and an n-gram ban: the text of transformers' generate, seeded the same."
    from conftest import make_hf_model
    from gpt2_learn.tokenizer import load_tokenizer
    hf = make_hf_model(seed=4)
    with torch.no_grad(): hf.transformer.wte.weight.mul_(4)              # peaked distributions: the knobs change choices
    hf.save_pretrained(tmp_path / "hf")
    tok, prompt = load_tokenizer(), "The algorithm works by"
    ids = torch.tensor([tok.encode(prompt)])
    flags = dict(temperature=0.9, top_k=0, top_p=1.0, typical_p=0.9, no_repeat_ngram_size=2, repetition_penalty=1.0)
    torch.manual_seed(3)
    with torch.no_grad():
        ref = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, max_new_tokens=25, pad_token_id=50256,
                          eos_token_id=50256, **flags)[0, ids.shape[1]:].tolist()
    ref = ref[:ref.index(50256)] if 50256 in ref else ref
    argv = ["--model_path", tmp_path / "hf", "--prompt", prompt, "--seed", "3", "--max_new_tokens", "25", "--no_echo", "--device", "cpu"]
    code, out, err = run_cli(capsys, *argv, *[x for k, v in flags.items() for x in (f"--{k}", v)])
    assert code == 0, err
    assert out == tok.decode(ref) + "\n"
    code, other, err = run_cli(capsys, *argv, *[x for k, v in {**flags, "typical_p": 1.0}.items() for x in (f"--{k}", v)])
    assert other != out                                                   # the flag changes the text


def test_summary_reports_context_window(capsys, micro_ckpt):
    prompt = "word" + " word" * 119                                       # 120 tokens of a 128-token window
    code, out, err = run_cli(capsys, "--model_path", micro_ckpt, "--prompt", prompt, "--no_sample", "--max_new_tokens", "50",
                             "--repetition_penalty", "1.0")
    assert code == 0 and "8 tokens in" in err and "stopped: context window" in err, err


def test_prompt_from_file_and_stdin(capsys, micro_ckpt, tmp_path, monkeypatch):
    f = tmp_path / "p.txt"
    f.write_text("Person A: café?\nPerson B:\n", encoding="utf-8")
    code, out, _ = run_cli(capsys, "--model_path", micro_ckpt, "--prompt_file", f, "--max_new_tokens", "5", "--no_sample")
    assert code == 0 and out.startswith("Person A: café?\nPerson B:")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("日本語 text".encode())))
    code, out, _ = run_cli(capsys, "--model_path", micro_ckpt, "--prompt", "-", "--max_new_tokens", "5", "--no_sample")
    assert code == 0 and out.startswith("日本語 text")


def test_prompt_escapes():
    assert unescape_prompt(r"Person A: How are you?\nPerson B:") == "Person A: How are you?\nPerson B:"
    assert unescape_prompt("naïve café 日本 🙂\\t!") == "naïve café 日本 🙂\t!"
    assert unescape_prompt(r"C:\Users\x") == r"C:\Users\x"                 # malformed escapes: kept as typed
    assert read_prompt("-", stdin=io.BytesIO(b"line\n")) == "line"


# ---------------------------------------------------------------- Python API

def test_generate_batch_equals_generate_text_alone(micro_gen):
    greedy = InferenceConfig(max_new_tokens=24, do_sample=False, stream=False)
    prompts = ["Once upon a time", "In the future", "The scientist discovered that the", "def fibonacci(n):", "A"]
    batch = micro_gen.generate_batch(prompts, greedy)
    assert batch == [micro_gen.generate_text(p, greedy) for p in prompts]
    assert len(set(batch)) > 1
    stopped = greedy.replace(stop=(batch[0][5:8],))                      # a stop string in the first row only
    assert micro_gen.generate_batch(prompts, stopped) == [micro_gen.generate_text(p, stopped) for p in prompts]
    assert micro_gen.generate_batch([], greedy) == []


def test_generate_batch_eos_rows(micro_ckpt):
    "Rows that reach <|endoftext|> at different steps, as text alone would."
    model = GPT2Model.from_checkpoint(micro_ckpt)
    with torch.no_grad(): model.ln_f.bias.copy_(model.wte.weight[50256] * 0.05)   # EOS likelier, not certain
    gen = TextGenerator.from_model(model)
    cfg = InferenceConfig(max_new_tokens=30, do_sample=False, stream=False, repetition_penalty=1.0)
    prompts = ["Hello", "The old man walked", "x = 1", "Once upon"]
    assert gen.generate_batch(prompts, cfg) == [gen.generate_text(p, cfg) for p in prompts]


@needs_bundled
def test_generate_batch_on_bundled_model():
    gen = TextGenerator(device="cpu")
    greedy = InferenceConfig(max_new_tokens=30, do_sample=False, stream=False)
    prompts = ["Once upon a time", "def fibonacci(n):", "The scientist discovered"]
    assert gen.generate_batch(prompts, greedy) == [gen.generate_text(p, greedy) for p in prompts]


def test_generate_text_streams_and_returns(micro_gen, capsys):
    cfg = InferenceConfig(max_new_tokens=12, seed=5)
    text = micro_gen.generate_text("Hello", cfg)
    assert capsys.readouterr().out == "Hello" + text + "\n"
    assert text == micro_gen.generate_text("Hello", cfg.replace(stream=False))
    assert capsys.readouterr().out == ""                                  # stream=False prints nothing
    s = micro_gen.last_stats
    assert s.new_tokens == 12 and s.stop_reason == "max_new_tokens" and s.device == "cpu" and s.tokens_per_s > 0


def test_eos_stop_reason(micro_ckpt):
    model = GPT2Model.from_checkpoint(micro_ckpt)
    with torch.no_grad(): model.ln_f.bias.copy_(model.wte.weight[50256] * 40)    # EOS at once
    gen = TextGenerator.from_model(model)
    assert gen.generate_text("Hello", InferenceConfig(do_sample=False, stream=False, repetition_penalty=1.0)) == ""
    assert gen.last_stats.stop_reason == "eos" and "end of text" in str(gen.last_stats)


def test_guide_python_api(micro_ckpt, capsys, monkeypatch):
    "The guide's 'Batched Prompts', 'Python API' and 'Interactive in Python' snippets."
    generator = TextGenerator(str(micro_ckpt), device="cpu")
    config = InferenceConfig(max_new_tokens=10, temperature=0.8)
    for prompt in ["Once upon a time", "In the future", "The scientist discovered"]:
        generator.generate_text(prompt, config)
    assert capsys.readouterr().out.count("\n") >= 3
    config = InferenceConfig(max_new_tokens=15, temperature=0.8, top_k=50, top_p=0.95, repetition_penalty=1.2, stream=True)
    generator.generate_text("Your prompt here", config)
    answers = iter(["Hello there", "quit"])
    monkeypatch.setattr("builtins.input", lambda p="": next(answers))
    generator.interactive_mode(InferenceConfig(max_new_tokens=5))
    out, err = capsys.readouterr()
    assert out.startswith("Your prompt here") and err.count("tokens/s") == 1


def test_chat_mode_carries_history(micro_gen, capsys):
    prompts, real_stream = [], micro_gen.stream
    def spy(prompt, config=None): prompts.append(prompt); return real_stream(prompt, config)
    micro_gen.stream = spy
    try:
        lines = iter(["What is AI?", "How does it work?", "exit"])
        micro_gen.interactive_mode(InferenceConfig(max_new_tokens=8, do_sample=False), chat=True, input_fn=lambda p: next(lines))
    finally: del micro_gen.stream
    assert prompts[0] == "User: What is AI?\nAssistant:"
    assert prompts[1].startswith("User: What is AI?\nAssistant:") and prompts[1].endswith("User: How does it work?\nAssistant:")
    tok = micro_gen.tokenizer
    hist = [(f"question {i}", "answer " * 20) for i in range(20)]
    p = chat_prompt(hist, "last?", tok, 128, 40)
    assert len(tok.encode(p)) <= 128 - 40 and p.endswith("User: last?\nAssistant:") and "question 19" in p and "question 0" not in p


# ---------------------------------------------------------------- bad input: one line, exit 2 (usage) or 1 (runtime)

BAD_FLAGS = [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--temperature", "-0.5"], "--temperature must be 0 (greedy) or in [0.0001, 10000]"),
    (["--temperature", "1e-39"], "--temperature must be 0 (greedy) or in [0.0001, 10000]"),
    (["--temperature", "inf"], "--temperature must be"),
    (["--top_p", "1.5"], "--top_p must be in [0, 1]"),
    (["--top_p", "-0.1"], "--top_p must be in [0, 1]"),
    (["--top_k", "-1"], "--top_k must be an integer >= 0"),
    (["--top_k", "ten"], "invalid int value"),
    (["--repetition_penalty", "0"], "--repetition_penalty must be in [0.01, 100]"),
    (["--repetition_penalty", "-1.2"], "--repetition_penalty must be in [0.01, 100]"),
    (["--repetition_penalty", "1e-300"], "--repetition_penalty must be in [0.01, 100]"),
    (["--repetition_penalty", "inf"], "--repetition_penalty must be"),
    (["--seed", "99999999999999999999"], "--seed must be an integer in [-2**63, 2**64)"),
    (["--max_new_tokens", "0"], "--max_new_tokens must be an integer >= 1"),
    (["--min_p", "2"], "--min_p"),
    (["--preset", "fast"], "invalid choice: 'fast'"),
    (["--device", "gpu"], "'gpu' is not a device"),
    (["--dtype", "int4"], "invalid choice"),
    (["--prompt", "-", "--interactive"], "--prompt - reads all of stdin, which interactive mode reads too"),
]


@pytest.mark.parametrize("argv,msg", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flags_exit_2(capsys, argv, msg):
    code, out, err = run_cli(capsys, "--prompt", "Hello", *argv)
    assert code == 2 and out == ""
    assert_one_line_error(err, msg)


def test_bad_prompts_exit_2(capsys, micro_ckpt, tmp_path, monkeypatch):
    m = ["--model_path", micro_ckpt]
    cases = [(["--prompt", ""], "the prompt is empty"),
             ([], "no prompt: give --prompt"),
             (["--prompt", "word " * 200], "the prompt is 201 tokens but the model's context window is 128"),
             (["--prompt_file", tmp_path / "missing.txt"], "can't read the prompt file"),
             (["--prompt", "a", "--prompt_file", "x"], "not allowed with argument")]
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "empty.txt").write_bytes(b"")
    cases += [(["--prompt_file", tmp_path / "latin1.txt"], "is not UTF-8 text (byte 0xe9 at offset 3)"),
              (["--prompt_file", tmp_path / "empty.txt"], "the prompt is empty")]
    for argv, msg in cases:
        code, out, err = run_cli(capsys, *m, *argv)
        assert code == 2 and out == "", (argv, err)
        assert_one_line_error(err, msg)
    for data, msg in [(b"caf\xe9 \xff", "stdin is not UTF-8 text (byte 0xe9 at offset 3)"), (b"", "the prompt is empty")]:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        code, out, err = run_cli(capsys, *m, "--prompt", "-")
        assert code == 2 and out == ""
        assert_one_line_error(err, msg)


def test_bad_models_exit_1_and_missing_ones_2(capsys, micro_ckpt, tmp_path, monkeypatch):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(micro_ckpt.read_bytes()[:5000])
    (tmp_path / "garbage.pth").write_bytes(b"this is not a checkpoint")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    torch.save({"something": 1}, tmp_path / "other.pth")
    (tmp_path / "emptydir").mkdir()
    for path in [tmp_path / "missing.pth", "checkpoints/best_model.pth", "runs/a/best"]:   # the flag must change: 2
        code, out, err = run_cli(capsys, "--model_path", path, "--prompt", "Hello")
        assert code == 2 and out == "", (path, err)
        assert_one_line_error(err, f"model not found: {path}")
    cases = [(truncated, "truncated or corrupt"), (tmp_path / "garbage.pth", "truncated or corrupt"),
             (tmp_path / "bad.safetensors", "bad.safetensors"), (tmp_path / "other.pth", "not a gpt2_learn checkpoint"),
             (tmp_path / "emptydir", "no model.safetensors"),
             ("checkpoints/run1", "nor is 'checkpoints/run1' a file or folder here")]               # either: both said
    for path, msg in cases:
        code, out, err = run_cli(capsys, "--model_path", path, "--prompt", "Hello")
        assert code == 1 and out == "", (path, err)
        assert_one_line_error(err, msg)
    code, out, err = run_cli(capsys, "--model_path", "", "--prompt", "Hello")
    assert code == 2 and out == ""
    assert_one_line_error(err, "--model_path is empty")
    monkeypatch.setattr("gpt2_learn.weights.bundled_model_path", lambda: tmp_path / "assets" / "bundled_model.pth")
    code, out, err = run_cli(capsys, "--prompt", "Hello")
    assert code == 1
    assert_one_line_error(err, "the bundled model is missing")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_gpu_exit_1(capsys, micro_ckpt):
    for dev in ["cuda", "cuda:1"]:
        code, out, err = run_cli(capsys, "--model_path", micro_ckpt, "--prompt", "Hello", "--device", dev)
        assert code == 1 and out == ""
        assert_one_line_error(err, "no CUDA GPU", "--device cpu")


def test_python_api_errors(micro_gen):
    with pytest.raises(PromptError, match="empty"): micro_gen.generate_text("", InferenceConfig(stream=False))
    with pytest.raises(PromptError, match="context window"): micro_gen.generate_batch(["ok", "word " * 300])
    with pytest.raises(ValueError, match="temperature"): micro_gen.generate_text("Hi", InferenceConfig(temperature=-1))
    with pytest.raises(PromptError, match="prompt 1: the prompt is empty"): micro_gen.generate_batch(["Hello", ""])
    with pytest.raises(TypeError, match="the prompt must be a str, got int"): micro_gen.generate_text(123)
    with pytest.raises(TypeError, match="config must be an InferenceConfig"): micro_gen.generate_text("Hi", 0.7)
    dict_config = dict(max_new_tokens=3, do_sample=False, stream=False)
    assert micro_gen.generate_text("Hi", dict_config) == micro_gen.generate_text("Hi", InferenceConfig(**dict_config))
    greedy = InferenceConfig(max_new_tokens=4, do_sample=False)
    assert micro_gen.generate_batch((p for p in ("a", "b")), greedy) == micro_gen.generate_batch(["a", "b"], greedy)   # any iterable


def test_warnings_are_one_line_and_compiler_chatter_is_silent(capsys, micro_ckpt, monkeypatch):
    "A warning during a run (e.g. the GPU fast path falling back) is one line; torch's compiler's own are dropped."
    import warnings
    import gpt2_learn.inference as inference
    real = inference.TextGenerator
    def noisy(*a, **k):
        warnings.warn("compile='block' failed (RuntimeError: no compiler); using uncompiled kernels")
        warnings.warn_explicit("a long compiler note\nover several lines", UserWarning, "x.py", 1, module="torch._inductor.lowering")
        return real(*a, **k)
    monkeypatch.setattr(inference, "TextGenerator", noisy)
    code, out, err = run_cli(capsys, "--model_path", micro_ckpt, "--prompt", "Hi", "--max_new_tokens", "3")
    assert code == 0
    lines = [l for l in err.splitlines() if "warning" in l.lower()]
    assert len(lines) == 1 and lines[0].endswith("warning: compile='block' failed (RuntimeError: no compiler); using uncompiled kernels")
    assert "compiler note" not in err and "UserWarning" not in err


def test_reader_gone_in_process_exits_1_quietly(micro_ckpt, monkeypatch):
    "stdout's reader left (BrokenPipeError) where stdout has no file descriptor (a notebook, a captured stream): exit 1, no traceback."
    class GoneReader(io.StringIO):
        def write(self, s): raise BrokenPipeError(32, "Broken pipe")
    err = io.StringIO()
    monkeypatch.setattr(sys, "stdout", GoneReader()); monkeypatch.setattr(sys, "stderr", err)
    assert main(["--model_path", str(micro_ckpt), "--prompt", "Hello", "--max_new_tokens", "3", "--device", "cpu"]) == 1
    assert "Traceback" not in err.getvalue()


class _RunsCode:
    "Unpickling this would run a shell command (what a malicious checkpoint does)."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_without_advice_to_run_it(capsys, tmp_path):
    "A checkpoint holding Python objects: refused in one line, the code never runs, and no hint to turn weights_only off."
    marker = tmp_path / "ran"
    torch.save({"config": {}, "model": _RunsCode(marker)}, tmp_path / "evil.pth")
    torch.save({"wte.weight": _RunsCode(marker)}, tmp_path / "evil.bin")
    for name in ("evil.pth", "evil.bin"):
        code, out, err = run_cli(capsys, "--model_path", tmp_path / name, "--prompt", "Hello")
        assert code == 1 and out == ""
        assert_one_line_error(err, "holds Python objects, not only tensors")
        assert "weights_only" not in err
    assert not marker.exists()


def test_nan_weights_one_line_exit_1(capsys, tmp_path):
    "Weights holding NaN: a line that says so (it was torch.multinomial's 'probability tensor contains inf, nan')."
    torch.manual_seed(0)
    model = GPT2Model(GPT2Config.from_name("gpt2-micro"))
    with torch.no_grad(): model.h[0].ln_1.weight[0] = float("nan")
    model.save_checkpoint(tmp_path / "nan.pth")
    for extra in ([], ["--no_sample"], ["--no_stream"]):
        code, out, err = run_cli(capsys, "--model_path", tmp_path / "nan.pth", "--prompt", "Hello", "--device", "cpu", *extra)
        assert code == 1 and out in ("", "Hello\n"), out
        assert_one_line_error(err, "logits hold NaN or inf")


def test_no_stream_ctrl_c_prints_the_text_so_far(capsys, micro_gen, monkeypatch):
    "--no_stream, then Ctrl+C: the text generated until then is printed, not lost."
    import gpt2_learn.inference as inference
    def interrupted_stream(self, prompt, config):
        yield " one"; yield " two"; raise KeyboardInterrupt
    monkeypatch.setattr(inference, "TextGenerator", lambda *a, **k: micro_gen)
    monkeypatch.setattr(type(micro_gen), "stream", interrupted_stream)
    code, out, err = run_cli(capsys, "--prompt", "Zero", "--no_stream", "--model_path", "x.pth")
    assert code == 130 and out == "Zero one two\n"


def test_prompt_file_over_the_cap_exit_2(capsys, micro_ckpt, tmp_path):
    "A prompt file of 17 MiB (or /dev/zero) is refused after reading 16 MiB, not read until memory runs out."
    big = tmp_path / "big.txt"
    with open(big, "wb") as f: f.truncate(17 * 2**20)
    code, out, err = run_cli(capsys, "--model_path", micro_ckpt, "--prompt_file", big)
    assert code == 2 and out == ""
    assert_one_line_error(err, "is over 16 MiB")


def _cli(*argv, **kw):
    import subprocess
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **kw.pop("env", {})}
    return subprocess.run([sys.executable, "-m", "gpt2_learn.inference", *map(str, argv)], env=env, timeout=300,
                          **{"capture_output": True, "text": True, **kw})


def test_closed_stdin_stdout_and_full_disk(micro_ckpt):
    "stdin or stdout closed (<&-, >&-), stdout on a full device: one line each, no traceback."
    args = ("--model_path", micro_ckpt, "--max_new_tokens", "3", "--device", "cpu")
    r = _cli(*args, "--prompt", "-", preexec_fn=lambda: os.close(0))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "stdin is closed" in r.stderr, r.stderr
    r = _cli(*args, "--interactive", preexec_fn=lambda: os.close(0))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "stdin is closed" in r.stderr, r.stderr
    r = _cli(*args, "--prompt", "Hi", preexec_fn=lambda: os.close(1))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "stdout is closed" in r.stderr, r.stderr
    if os.path.exists("/dev/full"):
        with open("/dev/full", "w") as full: r = _cli(*args, "--prompt", "Hi", stdout=full, capture_output=False, stderr=-1)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "could not write the text to stdout" in r.stderr, r.stderr


def test_closed_stderr_still_gives_the_text(micro_ckpt):
    "2>&-: the notes have nowhere to go, the text still comes."
    r = _cli("--model_path", micro_ckpt, "--max_new_tokens", "3", "--device", "cpu", "--prompt", "Hi", "--no_sample",
             preexec_fn=lambda: os.close(2), stderr=None, capture_output=False, stdout=-1)
    assert r.returncode == 0 and r.stdout.startswith("Hi") and len(r.stdout) > len("Hi\n"), r.stdout


def test_interactive_line_not_utf8_under_a_strict_stdin(micro_ckpt):
    "Under a strict UTF-8 stdin (PYTHONIOENCODING=utf-8, as many desktops), a bad line gets one message and the session goes on."
    r = _cli("--model_path", micro_ckpt, "--max_new_tokens", "3", "--device", "cpu", "--interactive", "--no_sample",
             input=b"abc\xff\ndef\n", text=False, env={"PYTHONIOENCODING": "utf-8"})
    err = r.stderr.decode()
    assert r.returncode == 0 and "not valid UTF-8" in err and "Traceback" not in err, err
    assert r.stdout.decode().count(">>> ") == 3, r.stdout                  # the bad line, "def" (answered), then the end


def test_ctrl_c_while_importing_is_one_line(tmp_path):
    "A Ctrl+C while PyTorch imports (before main runs) prints one line and ends the program by SIGINT, never a traceback."
    import signal
    from conftest import interrupt_while_importing_torch
    for _ in range(3):
        rc, err = interrupt_while_importing_torch([sys.executable, "-m", "gpt2_learn.inference", "--prompt", "Hi"],
                                                  {**os.environ, "HF_HUB_OFFLINE": "1"})
        assert rc in (130, -signal.SIGINT) and "python -m gpt2_learn.inference: interrupted" in err and "Traceback" not in err, (rc, err)


# ---------------------------------------------------------------- issues 24 and 18: bounded prompts, chat, rough edges

def _lines(*lines):
    it = iter(lines)
    return lambda prompt: next(it)


def test_prompt_over_the_byte_cap_is_refused_before_tokenizing(capsys, micro_ckpt, micro_gen, monkeypatch):
    "A prompt far longer than the context window could hold: refused by its size, never tokenized (CLI: exit 2)."
    from gpt2_learn.inference import prompt_byte_cap
    cap = prompt_byte_cap(micro_gen.context_window)
    assert cap == 128 * 128                                   # 128 tokens x 128 bytes, GPT-2's longest token
    seen = []
    real_encode = micro_gen.tokenizer.encode
    monkeypatch.setattr(micro_gen.tokenizer, "encode", lambda text, *a, **k: seen.append(len(text)) or real_encode(text, *a, **k))
    with pytest.raises(PromptError, match=f"at most {cap:,} bytes"): micro_gen.encode_prompt("x" * (cap + 1))
    with pytest.raises(PromptError, match="context window"): micro_gen.encode_prompt("x " * (cap // 2))   # fits the cap
    o, e = io.StringIO(), io.StringIO()
    for chat in (False, True):
        micro_gen.interactive_mode(InferenceConfig(max_new_tokens=2), chat=chat, out=o, err=e,
                                   input_fn=_lines("é" * (cap // 2 + 1), "Hello", "quit"))
    assert e.getvalue().count("at most 16,384 bytes") == 2 and e.getvalue().count("tokens/s") == 2, e.getvalue()
    assert all(n <= cap for n in seen), seen[-3:]
    code, out, err = run_cli(capsys, "--model_path", micro_ckpt, "--prompt", "a" * (cap + 1))
    assert code == 2 and out == ""
    assert_one_line_error(err, "the prompt is 16,385 bytes")


def test_chat_goes_on_after_a_bad_line(micro_gen):
    "--chat: a line that is not UTF-8 (surrogate-escaped) or an escaped lone surrogate is one message; the chat goes on."
    o, e = io.StringIO(), io.StringIO()
    micro_gen.interactive_mode(InferenceConfig(max_new_tokens=3, do_sample=False), chat=True, out=o, err=e,
                               input_fn=_lines("caf\udce9", r"\ud800", "Hello", "quit"))
    assert e.getvalue().count("error:") == 2 and e.getvalue().count("not valid UTF-8") == 2, e.getvalue()
    assert e.getvalue().count("tokens/s") == 1


def test_rough_edges_of_the_cli(capsys, micro_ckpt, tmp_path):
    "A model name that is nothing here: exit 2; -inf for a float flag: its range message; a checkpoints folder: its best model."
    for name in ("nosuchname", "-"):
        code, out, err = run_cli(capsys, "--model_path", name, "--prompt", "Hello")
        assert code == 2 and out == "", (name, err)
        assert_one_line_error(err, f"model not found: {name}")
    for flag in ("--temperature", "--top_p", "--repetition_penalty"):
        code, out, err = run_cli(capsys, "--prompt", "Hello", flag, "-inf")
        assert code == 2 and out == ""
        assert_one_line_error(err, f"{flag} must be")
    code, out, err = run_cli(capsys, "--prompt", "Hello", "--temperature=-inf")
    assert code == 2 and "--temperature must be" in err
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    (ckpts / "best_model.pth").write_bytes(micro_ckpt.read_bytes())
    code, out, err = run_cli(capsys, "--model_path", ckpts, "--prompt", "Hello", "--max_new_tokens", "2", "--device", "cpu")
    assert code == 0 and out.startswith("Hello"), err
    assert f"note: using {ckpts / 'best_model.pth'}" in err
    (ckpts / "best_model.pth").rename(ckpts / "last.pth")
    code, out, err = run_cli(capsys, "--model_path", ckpts, "--prompt", "Hello")
    assert code == 1
    assert_one_line_error(err, "no best_model.pth", "last.pth")


def test_zero_token_prompt_and_device_named_as_an_argument(micro_gen):
    "A prompt the tokenizer turns into nothing says so; TextGenerator(device='cuda') without CUDA names the argument."
    class NoTokens:
        def __getattr__(self, name): return getattr(micro_gen.tokenizer, name)
        def encode(self, text, *a, **k): return []
    gen = TextGenerator.from_model(micro_gen.model, NoTokens())
    with pytest.raises(PromptError, match="no tokens"): gen.encode_prompt("\u200b")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='device="cpu"') as e: TextGenerator(device="cuda")
        assert "--device" not in str(e.value)


def test_interactive_no_stream_ctrl_c_prints_the_text_so_far(micro_gen, monkeypatch):
    "Interactive --no_stream, Ctrl+C during a generation: the text made so far is printed, then the summary."
    def interrupted_stream(self, prompt, config):
        yield " one"; yield " two"; raise KeyboardInterrupt
    monkeypatch.setattr(type(micro_gen), "stream", interrupted_stream)
    o, e = io.StringIO(), io.StringIO()
    micro_gen.interactive_mode(InferenceConfig(stream=False), out=o, err=e, input_fn=_lines("Zero", "quit"))
    assert o.getvalue() == " one two\n"


def test_threads_chosen_for_the_work_and_restored(micro_ckpt, micro_gen, monkeypatch, capsys):
    "One thread for a toy step or a busy machine, the idle cores otherwise; the caller's setting is back afterwards."
    from types import SimpleNamespace
    import gpt2_learn.inference as inference
    from gpt2_learn.inference import choose_threads, idle_cores
    toy = SimpleNamespace(config=GPT2Config(vocab_size=512, n_positions=64, n_embd=32, n_layer=1, n_head=2))
    assert choose_threads(toy, batch=1, available=2) == 1                            # 0.06 MFLOP a step
    assert choose_threads(micro_gen.model, batch=1, available=2) == 2
    assert choose_threads(micro_gen.model, batch=1, available=1) == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (50.0, 50.0, 50.0))
    assert idle_cores() == 1                                                         # every core busy elsewhere
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert idle_cores() == (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    seen = []
    real = inference.TextStream.__iter__
    def spy(self):
        seen.append(torch.get_num_threads()); yield from real(self)
    monkeypatch.setattr(inference.TextStream, "__iter__", spy)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        cfg = InferenceConfig(max_new_tokens=2, stream=False)
        for idle, expected in ((1, 1), (2, 2)):
            monkeypatch.setattr(inference, "idle_cores", lambda: idle)
            micro_gen.generate_text("Hi", cfg)
            assert seen[-1] == expected and torch.get_num_threads() == 2, (idle, seen)
        gen = TextGenerator.from_model(micro_gen.model, micro_gen.tokenizer, threads=2)
        monkeypatch.setattr(inference, "idle_cores", lambda: 1)
        gen.generate_text("Hi", cfg)
        assert seen[-1] == 2                                                         # threads= overrides the choice
    finally: torch.set_num_threads(before)
    code, out, err = run_cli(capsys, "--prompt", "Hi", "--threads", "0")
    assert code == 2
    assert_one_line_error(err, "--threads must be an integer >= 1")


def test_cli_beam_search_equals_transformers(capsys, tmp_path):
    "--num_beams end to end (and generate_batch's beams): the texts of transformers' generate(num_beams=...)."
    from conftest import make_hf_model
    from gpt2_learn.tokenizer import load_tokenizer
    hf = make_hf_model(seed=5)
    with torch.no_grad(): hf.transformer.wte.weight.mul_(4)              # peaked: beams and greedy part ways
    hf.save_pretrained(tmp_path / "hf")
    tok, prompt = load_tokenizer(), "The algorithm works by"
    ids = torch.tensor([tok.encode(prompt)])
    with torch.no_grad():
        ref = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=3, num_return_sequences=2,
                          length_penalty=0.5, repetition_penalty=1.3, max_new_tokens=12, pad_token_id=50256,
                          eos_token_id=50256)[:, ids.shape[1]:].tolist()
        greedy = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, repetition_penalty=1.3,
                             max_new_tokens=12, pad_token_id=50256)[0, ids.shape[1]:].tolist()
    want = [tok.decode(r[:r.index(50256)] if 50256 in r else r) for r in ref]
    assert want[0] != tok.decode(greedy)                                  # the test can tell beams from greedy
    argv = ["--model_path", tmp_path / "hf", "--prompt", prompt, "--max_new_tokens", "12", "--no_echo", "--device", "cpu",
            "--num_beams", "3", "--length_penalty", "0.5", "--repetition_penalty", "1.3"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert out == want[0] + "\n"
    code, out, err = run_cli(capsys, *argv, "--num_return_sequences", "2", "--early_stopping", "never")
    assert code == 0, err
    with torch.no_grad():
        ref = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=3, num_return_sequences=2,
                          length_penalty=0.5, repetition_penalty=1.3, max_new_tokens=12, pad_token_id=50256,
                          eos_token_id=50256, early_stopping="never")[:, ids.shape[1]:].tolist()
    assert out == "\n---\n".join(tok.decode(r[:r.index(50256)] if 50256 in r else r) for r in ref) + "\n"
    gen = TextGenerator(tmp_path / "hf", device="cpu")
    beams = InferenceConfig(num_beams=3, length_penalty=0.5, repetition_penalty=1.3, max_new_tokens=12)
    assert gen.generate_batch([prompt, "Hello"], beams)[0] == want[0]
    for bad, msg in ((["--num_beams", "0"], "--num_beams"), (["--early_stopping", "maybe"], "early_stopping"),
                     (["--num_return_sequences", "4"], "--num_return_sequences")):
        code, out, err = run_cli(capsys, *argv, *bad)
        assert code == 2 and msg in err, err
