import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TRITON_INTERPRET", "1")      # the Triton kernels run on the CPU (must be set before Triton is imported)

import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList, MinPLogitsWarper, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, TypicalLogitsWarper)
from gpt2_learn.config import InferenceConfig


def hf_processors(cfg: InferenceConfig):
    "transformers' LogitsProcessorList built the way `generate` builds it (no EOS/min-length processors)."
    procs = []
    if cfg.repetition_penalty != 1.0: procs.append(RepetitionPenaltyLogitsProcessor(float(cfg.repetition_penalty)))
    if cfg.no_repeat_ngram_size > 0: procs.append(NoRepeatNGramLogitsProcessor(cfg.no_repeat_ngram_size))
    if not cfg.greedy:
        if cfg.temperature != 1.0: procs.append(TemperatureLogitsWarper(float(cfg.temperature)))
        if cfg.top_k != 0: procs.append(TopKLogitsWarper(cfg.top_k))
        if cfg.top_p < 1.0: procs.append(TopPLogitsWarper(cfg.top_p))
        if cfg.min_p > 0: procs.append(MinPLogitsWarper(cfg.min_p))
        if cfg.typical_p < 1.0: procs.append(TypicalLogitsWarper(cfg.typical_p))
    return LogitsProcessorList(procs)


def make_hf_model(n_layer=2, n_head=2, n_embd=64, n_positions=128, seed=0):
    "A transformers GPT2LMHeadModel with random weights, built offline (the oracle)."
    import transformers
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_positions,
                                  pad_token_id=50256)
    return transformers.GPT2LMHeadModel(cfg).eval()


def peaky_hf(vocab=300):
    "A small GPT-2 with GPT-2-like peaked distributions (scaled tied embeddings), so bans and penalties change choices."
    import transformers
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=2)).eval()
    with torch.no_grad(): hf.transformer.wte.weight.mul_(10)
    return hf


def ours_from_hf(hf):
    "Load the oracle's weights into our model through a bare state dict."
    from gpt2_learn.weights import convert_hf_state_dict, load_state_dict_strict
    from gpt2_learn.model import GPT2Model
    from gpt2_learn.config import GPT2Config
    cfg = GPT2Config.from_dict(hf.config.to_dict())
    return load_state_dict_strict(GPT2Model(cfg), convert_hf_state_dict(hf.state_dict())).eval()


@pytest.fixture(scope="session")
def hf_small():
    return make_hf_model()


@pytest.fixture(scope="session")
def hf_124m():
    "The full 124M GPT-2 shape with random weights."
    return make_hf_model(n_layer=12, n_head=12, n_embd=768, n_positions=1024, seed=1)


@pytest.fixture(scope="session")
def ours_124m(hf_124m):
    return ours_from_hf(hf_124m)


def interrupt_while_importing_torch(argv, env):
    "Run a command line and send it SIGINT once PyTorch's library is being loaded (seen in /proc/PID/maps): (rc, stderr)."
    import signal, subprocess, time
    if not os.path.exists("/proc/self/maps"): pytest.skip("needs /proc")
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/maps") as f:
                if "libtorch" in f.read(): break
        except OSError: pass
        time.sleep(0.005)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    return p.returncode, err


def tiny_corpus_text(lines: int = 400) -> str:
    "A small, repetitive generated text (about 20k characters): easy to learn in a few dozen steps."
    import numpy as np
    rng = np.random.default_rng(0)
    words = ["def", "return", "self", "value", "import", "class", "for", "in", "if", "None", "print", "list"]
    return "".join(f"def f{i}(x):\n    return x + {i % 7}\n" + " ".join(rng.choice(words, 6)) + "\n" for i in range(lines))
