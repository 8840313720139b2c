"Files we did not make (issue 24, the weights side): nothing in them is built, read or run before it is checked."
import json, os, resource, subprocess, sys, textwrap
import pytest
import torch
from gpt2_learn.config import GPT2Config
from gpt2_learn.model import GPT2Model
from gpt2_learn import weights as W

TINY = dict(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2)
AS_LIMIT = 2 * 1024**3          # a normal load of a tiny model in a child peaks near 0.6 GB of address space
pytestmark = pytest.mark.filterwarnings("ignore:the model has 100 tokens")   # TINY: no tokenizer files, said once


def tiny(seed: int = 0) -> GPT2Model:
    torch.manual_seed(seed)
    return GPT2Model(GPT2Config(**TINY)).eval()


def our_sd() -> dict:
    return {k: v.detach().clone().contiguous() for k, v in tiny().state_dict().items() if k != "lm_head.weight"}


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
    for cfg in (GPT2Config(**TINY), GPT2Config(n_layer=3, n_head=4, n_embd=64, n_positions=16, vocab_size=7, n_inner=40)):
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


# --- 24.4: small inputs never cost huge memory or a hang -----------------------------------------------------------

def deflate_bomb(path, declared: int) -> None:
    "A torch-style zip whose one storage is `declared` bytes of zeros, deflated (torch.save writes entries stored)."
    import collections, pickle, zipfile
    storage = object()
    class Tensor:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (storage, 0, (declared // 4,), (1,), False, collections.OrderedDict()))
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", declared // 4) if obj is storage else None
    import io
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"wte.weight": Tensor()})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("bomb/data.pkl", buf.getvalue())
        z.writestr("bomb/byteorder", "little")
        z.writestr("bomb/version", "3\n")
        with z.open(zipfile.ZipInfo("bomb/data/0"), "w", force_zip64=True) as entry:
            entry._compressor = __import__("zlib").compressobj(1, 8, -15)
            entry._zinfo.compress_type = zipfile.ZIP_DEFLATED
            chunk = bytes(2**20)
            for _ in range(declared // 2**20): entry.write(chunk)


def test_pipes_devices_bombs_and_huge_json_are_never_read(tmp_path):
    "A FIFO as config.json, as model.safetensors, as a listed shard or as the .pth; config.json -> /dev/zero; a zip bomb."
    m = tiny()
    cases = []
    for name in ("fifo_cfg", "zero_cfg", "fifo_weights", "fifo_shard"):
        W.save_pretrained(m, tmp_path / name)
        cases.append(["dir", str(tmp_path / name)])
    (tmp_path / "fifo_cfg" / "config.json").unlink()
    os.mkfifo(tmp_path / "fifo_cfg" / "config.json")
    (tmp_path / "zero_cfg" / "config.json").unlink()
    (tmp_path / "zero_cfg" / "config.json").symlink_to("/dev/zero")
    (tmp_path / "fifo_weights" / "model.safetensors").unlink()
    os.mkfifo(tmp_path / "fifo_weights" / "model.safetensors")
    shard = tmp_path / "fifo_shard"
    (shard / "model.safetensors").rename(shard / "part-1.safetensors")
    os.mkfifo(shard / "part-2.safetensors")
    (shard / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"transformer.wte.weight": "part-1.safetensors", "transformer.ln_f.bias": "part-2.safetensors"}}))
    os.mkfifo(tmp_path / "fifo.pth")
    cases.append(["ckpt", str(tmp_path / "fifo.pth")])
    (tmp_path / "huge_cfg").mkdir()
    (tmp_path / "huge_cfg" / "config.json").write_bytes(b" " * (W.JSON_MAX_BYTES + 1))
    cases.append(["dir", str(tmp_path / "huge_cfg")])
    W.save_pretrained(m, tmp_path / "deep_cfg")
    (tmp_path / "deep_cfg" / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    cases.append(["dir", str(tmp_path / "deep_cfg")])
    deflate_bomb(tmp_path / "bomb.pth", 256 * 2**20)                        # 256 MB of zeros in about 1 MB
    assert (tmp_path / "bomb.pth").stat().st_size < 2 * 2**20
    cases.append(["ckpt", str(tmp_path / "bomb.pth")])
    W.save_pretrained(m, tmp_path / "blobs")                                 # the hub cache: links to regular files
    (tmp_path / "linked").mkdir()
    for name in ("config.json", "model.safetensors"): (tmp_path / "linked" / name).symlink_to(tmp_path / "blobs" / name)
    got = load_each(cases + [["dir", str(tmp_path / "linked")]], timeout=60)
    assert got.pop(str(tmp_path / "linked"))[0] == "loaded"
    for path, (said, seconds) in got.items():
        assert said.startswith(("ValueError", "CheckpointError")) and "\n" not in said and seconds < 5, (path, said)
    assert "has a compressed entry (bomb/data/0)" in got[str(tmp_path / "bomb.pth")][0]
    for name in ("fifo_cfg", "zero_cfg", "fifo_weights", "fifo_shard"):
        assert "is not a regular file" in got[str(tmp_path / name)][0], got[str(tmp_path / name)]
    assert "not a regular file" in got[str(tmp_path / "fifo.pth")][0]
    assert "larger than" in got[str(tmp_path / "huge_cfg")][0]
    assert "config.json is not readable JSON (RecursionError" in got[str(tmp_path / "deep_cfg")][0]


def lying_safetensors(path, header: dict | bytes, data: bytes = b"", length: int | None = None) -> None:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes((len(raw) if length is None else length).to_bytes(8, "little") + raw + data)


@pytest.mark.parametrize("header, data, length, says", [
    ({}, b"", 10**15, "a header of 1,000,000,000,000,000 bytes"),
    (b"{not json", b"", None, "not JSON"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, None, "lies outside the file's 4 bytes"),
    ({"w": {"dtype": "F32", "shape": [10**9, 10**9], "data_offsets": [0, 8]}}, b"\0" * 8, None,
     "needs 4,000,000,000,000,000,000 bytes, it has 8"),
    ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "has shape [-2]"),
    ({"w": {"dtype": "EVIL", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "no dtype"),
    ([1, 2], b"", None, "not a JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, b"", None, "not JSON"),
])
def test_a_lying_safetensors_header_is_refused_before_loading(tmp_path, monkeypatch, header, data, length, says):
    import safetensors.torch
    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: pytest.fail("reached the loader"))
    lying_safetensors(tmp_path / "lie.safetensors", header, data, length)
    with pytest.raises(ValueError, match="is not a valid safetensors file .*" + says.replace("[", r"\[").replace("]", r"\]")):
        GPT2Model.from_pretrained(tmp_path / "lie.safetensors")


# --- 24.6: a corrupted checkpoint says so --------------------------------------------------------------------------

def test_a_corrupted_checkpoint_is_refused_by_its_crc(tmp_path):
    torch.manual_seed(0)
    m = GPT2Model(GPT2Config(vocab_size=2000, n_positions=32, n_embd=64, n_layer=2, n_head=2))
    good = W.save_checkpoint(m, tmp_path / "last.pth")
    blob = good.read_bytes()
    import zipfile
    wte = max(zipfile.ZipFile(good).infolist(), key=lambda i: i.file_size)       # the token embedding's storage
    start = wte.header_offset + 200
    flipped = bytearray(blob)
    flipped[start + 1000] ^= 0x10
    (tmp_path / "flipped.pth").write_bytes(flipped)
    (tmp_path / "zeroed.pth").write_bytes(blob[:start] + bytes(64 * 1024) + blob[start + 64 * 1024:])
    assert torch.load(tmp_path / "flipped.pth", weights_only=True)["model"]["wte.weight"].shape == (2000, 64)   # torch: fine
    for name in ("flipped.pth", "zeroed.pth"):
        with pytest.raises(W.CheckpointError, match=rf"{name} is corrupt \(CRC mismatch in \w+/data/\d+\): restore it"):
            GPT2Model.from_checkpoint(tmp_path / name)
    GPT2Model.from_checkpoint(good)


# --- 24.12: one line that says what is wrong -----------------------------------------------------------------------

class _RunsCode:
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")        # torch.jit.script's own, when making the file
def test_odd_files_get_one_line_each_on_the_cli(tmp_path, capsys):
    "TorchScript, code in a protocol-4 pickle, a 1-D wte, no blocks, inf weights: one stderr line, exit 1, no code run."
    import pickle
    from safetensors.torch import save_file
    from gpt2_learn.inference import main
    marker = tmp_path / "ran"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "script.pth")
    with open(tmp_path / "p4.pth", "wb") as f: pickle.dump({"config": {}, "model": _RunsCode(marker)}, f, protocol=4)
    torch.save({"config": {}, "model": _RunsCode(marker)}, tmp_path / "p4zip.pth", pickle_protocol=4)
    torch.save({"config": {}, "model": {"w": torch.zeros(1)}}, tmp_path / "p4ok.pth", pickle_protocol=4)
    sd = our_sd()
    save_file({**sd, "wte.weight": torch.zeros(100)}, str(tmp_path / "flat.safetensors"))
    save_file({k: v for k, v in sd.items() if not k.startswith("h.")}, str(tmp_path / "noblocks.safetensors"))
    m = tiny()
    with torch.no_grad(): m.h[1].mlp.c_fc.weight[3, 4] = float("inf")
    m.save_checkpoint(tmp_path / "inf.pth")
    expect = {"script.pth": "is a TorchScript program, not weights",
              "p4.pth": "holds Python objects, not only tensors (posix.system)",
              "p4zip.pth": "holds Python objects, not only tensors (posix.system)",
              "p4ok.pth": "was pickled with protocol 4, which weights-only loading cannot read: re-save it",
              "flat.safetensors": "wte.weight (the token embedding) has shape (100,), a GPT-2's is a matrix",
              "noblocks.safetensors": "the weights have no transformer blocks",
              "inf.pth": "the weights hold NaN or inf (first in h.1.mlp.c_fc.weight)"}
    for name, says in expect.items():
        code = main(["--model_path", str(tmp_path / name), "--prompt", "hi", "--max_new_tokens", "2", "--device", "cpu"])
        out, err = capsys.readouterr()
        assert code == 1 and out == "", (name, code, out)
        assert err.count("\n") == 1 and says in err and "Traceback" not in err, (name, err)
    assert not marker.exists()


# --- 5: nothing in a model folder runs ------------------------------------------------------------------------------

def test_a_model_folder_never_runs_its_code(tmp_path, monkeypatch):
    "auto_map and .py files beside the weights are ignored; the hub download asks for weights and config only."
    import inspect
    W.save_pretrained(tiny(), tmp_path / "evil")
    marker = tmp_path / "ran"
    cfg = json.loads((tmp_path / "evil" / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil_cfg.EvilConfig", "AutoModelForCausalLM": "evil_cfg.EvilModel"}
    (tmp_path / "evil" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "evil" / "evil_cfg.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    GPT2Model.from_pretrained(tmp_path / "evil")
    assert not marker.exists()
    asked = {}
    def fake_download(repo_id, **kw):
        asked.update(kw, repo_id=repo_id)
        return str(tmp_path / "evil")
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    GPT2Model.from_pretrained("someone/evil")
    assert asked["repo_id"] == "someone/evil" and not marker.exists()
    assert asked["allow_patterns"] and all(p.endswith((".json", ".safetensors")) for p in asked["allow_patterns"])
    source = inspect.getsource(W)
    assert "trust_remote_code=True" not in source and "AutoModel" not in source and "AutoConfig" not in source


# --- 18.1 / 6: save_pretrained writes the options that change the computation ----------------------------------------

@pytest.mark.parametrize("option", [dict(activation_function="relu"), dict(scale_attn_weights=False),
                                    dict(scale_attn_by_inverse_layer_idx=True), dict(n_inner=48),
                                    dict(reorder_and_upcast_attn=True, activation_function="gelu")])
def test_save_pretrained_is_read_by_transformers_as_the_same_model(tmp_path, option):
    import transformers
    torch.manual_seed(0)
    ours = GPT2Model(GPT2Config(**{**TINY, "n_layer": 3}, **option)).eval()
    with torch.no_grad():
        for p in ours.parameters(): p.normal_(0, 0.12)                  # large enough that each option shows
    W.save_pretrained(ours, tmp_path / "out")
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    ids = torch.randint(0, TINY["vocab_size"], (1, 20))
    with torch.no_grad(): torch.testing.assert_close(ours(ids), theirs(ids).logits, atol=1e-4, rtol=0)
    again = GPT2Model.from_pretrained(tmp_path / "out")
    assert {k: getattr(again.config, k) for k in option} == option


def test_check_finite_names_the_weight_and_tolerates_a_sum_that_overflows():
    W.check_finite({"big": torch.full((4,), 3e38), "half": torch.full((4,), 6e4, dtype=torch.float16)})
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match=r"NaN or inf \(first in h.1.w\)"):
            W.check_finite({"h.0.w": torch.ones(3), "h.1.w": torch.tensor([3e38, bad])})


def test_weights_alone_give_the_mlp_width(tmp_path):
    "A weights-only file (no config.json) of a model with n_inner != 4 * n_embd loads with transformers' logits."
    import transformers
    from safetensors.torch import save_file
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=257, n_positions=64, n_embd=64, n_layer=2,
                                                              n_head=1, n_inner=96)).eval()
    save_file({k: v.contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}, tmp_path / "w.safetensors")
    ours = GPT2Model.from_pretrained(tmp_path / "w.safetensors")
    assert ours.config.n_inner == 96
    ids = torch.randint(0, 257, (1, 10))
    torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-4, rtol=1e-4)
