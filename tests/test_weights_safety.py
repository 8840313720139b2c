"Files we did not make (issue 24, the weights side): nothing in them is built, read or run before it is checked."
import json, os, resource, subprocess, sys, textwrap
import pytest
import torch
from gpt2_learn.config import GPT2Config
from gpt2_learn.model import GPT2Model
from gpt2_learn import weights as W

TINY = dict(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2)
AS_LIMIT = 2 * 1024**3          # a normal load of a tiny model in a child peaks near 0.6 GB of address space


def tiny(seed: int = 0) -> GPT2Model:
    torch.manual_seed(seed)
    return GPT2Model(GPT2Config(**TINY)).eval()


def our_sd() -> dict:
    return {k: v.detach().clone() for k, v in tiny().state_dict().items() if k != "lm_head.weight"}


def run_child(code: str, timeout: float = 120, limit: int | None = AS_LIMIT) -> subprocess.CompletedProcess:
    "Run Python `code` in a child (address space capped at `limit`); killed in any case when this returns."
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    def cap(): resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, preexec_fn=cap if limit else None)
    try:
        out, err = p.communicate(timeout=timeout)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


LOAD_EACH = """
import json, sys, time
from gpt2_learn.model import GPT2Model
for kind, path in json.loads({cases!r}):
    t = time.perf_counter()
    try:
        (GPT2Model.from_checkpoint if kind == "ckpt" else GPT2Model.from_pretrained)(path)
        said = "loaded"
    except Exception as e: said = f"{{type(e).__name__}}: {{e}}"
    print(json.dumps([path, said, time.perf_counter() - t]), flush=True)
"""


def load_each(cases: list, timeout: float = 120) -> dict:
    "Load each (kind, path) in one capped child: path -> (message, seconds)."
    r = run_child(LOAD_EACH.format(cases=json.dumps(cases)), timeout=timeout)
    got = {p: (said, s) for p, said, s in map(json.loads, r.stdout.splitlines())}
    assert len(got) == len(cases), f"the child stopped (rc {r.returncode}): {r.stderr[-2000:]}"
    return got


# --- 24.2: a declared size is checked before anything of that size is built -----------------------------------------

def test_weight_shapes_are_the_models():
    for cfg in (GPT2Config(**TINY), GPT2Config(n_layer=3, n_head=4, n_embd=64, n_positions=16, vocab_size=7)):
        built = {k: tuple(p.shape) for k, p in W.empty_model(cfg).state_dict().items() if k != "lm_head.weight"}
        assert W.weight_shapes(cfg) == built


@pytest.mark.parametrize("change, says", [
    (dict(n_layer=500), "n_layer=500 but the weights hold 2 blocks"),
    (dict(n_embd=64, n_head=2), "n_embd=64 but the weights have 32"),
    (dict(vocab_size=50257), "vocab_size=50257 but the weights have 100"),
    (dict(n_positions=1024), "n_positions=1024 but the weights have 32"),
])
def test_check_weights_fit_refuses_a_config_that_is_not_the_weights(change, says, monkeypatch):
    monkeypatch.setattr(W, "empty_model", lambda cfg: pytest.fail("built a model before checking"))
    sd = our_sd()
    W.check_weights_fit(GPT2Config(**TINY), sd)                            # the right one passes
    with pytest.raises(ValueError, match=says):
        W.check_weights_fit(GPT2Config(**{**TINY, **change}), sd)
    with pytest.raises(ValueError, match=says):
        W.model_from_state_dict(GPT2Config(**{**TINY, **change}), sd)


def test_check_weights_fit_refuses_stray_or_missing_blocks():
    sd, cfg = our_sd(), GPT2Config(**TINY)
    stray = {**sd, "h.999999999.ln_1.weight": sd["h.0.ln_1.weight"]}
    with pytest.raises(ValueError, match=r"numbered up to h.999999999 and h.2 is missing"):
        W.check_weights_fit(cfg, stray)
    with pytest.raises(ValueError, match=r"numbered up to h.999999999"):
        W.config_from_state_dict(stray)
    gappy = {k.replace("h.1.", "h.5."): v for k, v in sd.items()}
    with pytest.raises(ValueError, match=r"up to h.5 and h.1 is missing"):
        W.config_from_state_dict(gappy)
    padded = {k.replace("h.1.", "h.01."): v for k, v in sd.items()}
    with pytest.raises(ValueError, match=r"h.01 and h.1 is missing"):
        W.check_weights_fit(cfg, padded)
    with pytest.raises(ValueError, match="unexpected"):                    # a stray key inside a real block
        W.check_weights_fit(cfg, {**sd, "h.1.mlp.extra": sd["ln_f.bias"]})
    with pytest.raises(ValueError, match=r"shape \(32, 32\), the model expects \(96, 32\)"):
        W.check_weights_fit(cfg, {**sd, "h.1.attn.c_attn.weight": sd["h.1.attn.c_proj.weight"]})
    W.check_weights_fit(cfg, {"transformer." + k: v for k, v in sd.items()})   # nanoGPT's prefix is fine


def test_huge_declared_sizes_are_refused_at_once_in_a_small_address_space(tmp_path):
    "config.json with n_layer 10**6, a key h.999999999, a checkpoint saying n_layer 10**9: one line, no memory."
    from safetensors.torch import save_file
    m = tiny()
    W.save_pretrained(m, tmp_path / "cfg")
    cfg = json.loads((tmp_path / "cfg" / "config.json").read_text())
    (tmp_path / "cfg" / "config.json").write_text(json.dumps({**cfg, "n_layer": 10**6}))
    W.save_pretrained(m, tmp_path / "key")
    (tmp_path / "key" / "config.json").unlink()
    from safetensors.torch import load_file
    sd = load_file(str(tmp_path / "key" / "model.safetensors"))
    save_file({**sd, "transformer.h.999999999.ln_1.weight": torch.ones(32)}, str(tmp_path / "key" / "model.safetensors"))
    W.save_checkpoint(m, tmp_path / "big.pth")
    ckpt = torch.load(tmp_path / "big.pth", weights_only=True)
    torch.save({**ckpt, "config": {**ckpt["config"], "n_layer": 10**9}}, tmp_path / "big.pth")
    got = load_each([["dir", str(tmp_path / "cfg")], ["dir", str(tmp_path / "key")], ["ckpt", str(tmp_path / "big.pth")]])
    for path, (said, seconds) in got.items():
        assert said.startswith(("ValueError", "CheckpointError")) and "\n" not in said, (path, said)
        assert seconds < 5, (path, said, seconds)      # well under a second unloaded: nothing is built
    assert "config.json" in got[str(tmp_path / "cfg")][0]
    assert "h.999999999" in got[str(tmp_path / "key")][0]
