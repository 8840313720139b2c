"Training: a short run lowers the loss and writes loadable checkpoints; kill -9 + --resume; bad input -> one line, exit 2."
import os, re, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_corpus_text
import torch

from gpt2_learn.model import GPT2Model
from gpt2_learn.train import (TrainArgs, build_python_corpus, evaluate, export_bundled, lr_at, main, param_groups,
                              prepare_data, train, unigram_entropy)

TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--n_positions", "64", "--block_size", "32", "--batch_size", "4",
        "--lr", "1e-2", "--warmup", "5", "--eval_batches", "2", "--seed", "0"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    "A small, repetitive generated text (about 20k characters): easy to learn in a few dozen steps."
    p = tmp_path_factory.mktemp("data") / "corpus.txt"
    p.write_text(tiny_corpus_text())
    return p


def tiny_args(data, out, **kw) -> TrainArgs:
    a = dict(data=[str(data)], out_dir=str(out), n_layer=1, n_head=2, n_embd=32, n_positions=64, block_size=32, batch_size=4,
             lr=1e-2, warmup=5, eval_batches=2, seed=0, progress=False)
    return TrainArgs(**{**a, **kw})


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def test_short_run_lowers_loss_and_writes_loadable_checkpoints(text_file, tmp_path):
    r = train(tiny_args(text_file, tmp_path, max_steps=40, eval_interval=10))
    h = r["history"]
    assert r["step"] == 40 and len(h) == 4
    assert h[-1]["val_loss"] < h[0]["val_loss"] - 0.5 and h[-1]["val_loss"] < np.log(50257) / 2
    for name in ("best_model.pth", "last.pth"):
        m = GPT2Model.from_checkpoint(tmp_path / name)
        assert m.config.n_embd == 32 and m.dtype == torch.float32
    # the token cache is reused by a second run on the same files
    _, _, meta = prepare_data([str(text_file)], tmp_path / "tokens")
    assert meta["cached"]
    # the fp16 export loads back (as float32) and gives nearly the same loss
    m = GPT2Model.from_checkpoint(tmp_path / "best_model.pth")
    small = export_bundled(tmp_path / "best_model.pth", tmp_path / "small.pth")
    m16 = GPT2Model.from_checkpoint(small)
    _, val, _ = prepare_data([str(text_file)], tmp_path / "tokens")
    assert abs(evaluate(m, val) - evaluate(m16, val)) < 0.02
    assert small.stat().st_size < (tmp_path / "best_model.pth").stat().st_size * 0.6
    # fine-tuning starts from those weights (--init): the first evaluation is already as good as the last one
    ft = train(tiny_args(text_file, tmp_path / "ft", init=str(tmp_path / "best_model.pth"), n_embd=None, max_steps=2,
                         eval_interval=1, lr=1e-4, warmup=1))
    assert ft["config"]["n_embd"] == 32 and ft["history"][0]["val_loss"] < h[0]["val_loss"] - 0.5


def test_seen_vocab_loss_is_the_full_loss(text_file, tmp_path):
    "The seen-vocabulary softmax (+ one shared row) gives the full 50,257-way cross-entropy once the unseen rows are tied."
    from gpt2_learn.config import GPT2Config
    from gpt2_learn.train import SeenVocabLoss, get_batch
    tr, _, _ = prepare_data([str(text_file)], tmp_path / "tokens")
    sl = SeenVocabLoss(tr)
    counts = np.bincount(np.asarray(tr, dtype=np.int64), minlength=50257)
    assert len(sl.seen) == (counts > 0).sum() and len(sl.seen) + len(sl.unseen) == 50257 and len(sl.rows) == len(sl.seen) + 1
    torch.manual_seed(0)
    m = GPT2Model(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64))
    with torch.no_grad(): m.wte.weight[sl.unseen] = torch.randn(32) * 0.3   # one shared row, not the random init
    x, y = get_batch(tr, 4, 32, torch.Generator().manual_seed(0))
    full = torch.nn.functional.cross_entropy(m(x).reshape(-1, 50257), y.reshape(-1))
    assert sl(m, x, y).item() == pytest.approx(full.item(), abs=1e-5)
    # gradients flow to the seen rows and the shared row only
    sl(m, x, y).backward()
    g = m.wte.weight.grad
    assert g[sl.unseen[1:]].abs().sum() == 0 and g[sl.unseen[0]].abs().sum() > 0 and g[sl.seen].abs().sum() > 0
    # training with it (and bf16 autocast on the CPU): the loss falls, every checkpoint has the unseen rows tied
    r = train(tiny_args(text_file, tmp_path / "run", max_steps=40, eval_interval=10, output_vocab="seen", autocast="bf16",
                        window_start="line"))
    h = r["history"]
    assert h[-1]["val_loss"] < h[0]["val_loss"] - 0.5 and h[-1]["val_loss"] < np.log(50257) / 2
    for name in ("best_model.pth", "last.pth"):
        w = GPT2Model.from_checkpoint(tmp_path / "run" / name).wte.weight
        assert torch.equal(w[sl.unseen], w[sl.unseen[:1]].expand(len(sl.unseen), -1))
        assert not torch.equal(w[sl.seen[0]], w[sl.unseen[0]])


def test_line_starts(text_file, tmp_path):
    "--window_start line: every window begins right after a newline (or at the very start)."
    from gpt2_learn.tokenizer import load_tokenizer
    from gpt2_learn.train import get_batch, line_starts
    tok = load_tokenizer()
    tr, _, _ = prepare_data([str(text_file)], tmp_path / "tokens")
    text = tok.decode(np.asarray(tr, dtype=np.int64).tolist())
    starts = line_starts(tr, 32)
    assert starts[0] == 0 and np.all(np.diff(starts) > 0) and starts[-1] <= len(tr) - 33
    assert all(tok.decode([int(tr[i - 1])]).endswith(("\n", "<|endoftext|>")) for i in starts[1:])
    # as many starts as lines that begin early enough for a whole window
    n_lines = text.count("\n") + text.count("<|endoftext|>")
    assert len(starts) - 1 <= n_lines and len(starts) > n_lines * 0.8
    x, y = get_batch(tr, 16, 32, torch.Generator().manual_seed(0), starts=starts)
    windows = {tuple(np.asarray(tr[i:i + 32], dtype=np.int64).tolist()) for i in starts}
    assert all(tuple(r.tolist()) in windows for r in x)               # each window is one that starts a line
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert len(line_starts(tr[:20], 32)) == 0


def test_pieces():
    assert lr_at(0, 100, 1.0, warmup=10) == pytest.approx(0.1) and lr_at(9, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, warmup=10) == pytest.approx(0.1)     # cosine ends at min_lr = lr / 10
    from gpt2_learn.config import GPT2Config
    m = GPT2Model(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64))
    decay, no_decay = param_groups(m, 0.1)
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == m.num_params()
    assert unigram_entropy([5, 5, 5, 5]) == 0 and unigram_entropy([1, 2, 3, 4]) == pytest.approx(np.log(4))


def test_resume_after_kill9_reaches_the_same_step(text_file, tmp_path):
    out = tmp_path / "ck"
    cmd = [sys.executable, "-m", "gpt2_learn.train", "--data", str(text_file), "--out_dir", str(out), *TINY,
           "--max_steps", "30", "--eval_interval", "10", "--save_interval", "5", "--output_vocab", "seen"]   # seen: 3x faster steps
    p = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / "last.pth").exists() and p.poll() is None and time.time() < deadline: time.sleep(0.02)
    p.send_signal(signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert (out / "last.pth").exists(), f"no checkpoint within 120 s: {p.stderr.read().decode()[-500:]}"
    killed_at = torch.load(out / "last.pth", weights_only=True)["step"]
    assert 0 < killed_at < 30
    r = subprocess.run(cmd + ["--resume"], env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr
    ck = torch.load(out / "last.pth", weights_only=True)
    assert ck["step"] == 30 and ck["tokens_seen"] == 30 * 4 * 32
    GPT2Model.from_checkpoint(out / "best_model.pth"); GPT2Model.from_checkpoint(out / "last.pth")


@pytest.mark.parametrize("output_vocab", ["full", "seen"])
def test_resume_is_exact(text_file, tmp_path, output_vocab):
    "Interrupted at step 12 (Ctrl+C) and resumed: the same weights and log as 24 steps straight through."
    a = train(tiny_args(text_file, tmp_path / "a", max_steps=24, eval_interval=6, output_vocab=output_vocab))
    def interrupt(msg):
        if msg.startswith("step 12:"): raise KeyboardInterrupt
    r = train(tiny_args(text_file, tmp_path / "b", max_steps=24, eval_interval=6, output_vocab=output_vocab), log=interrupt)
    assert r["stop_reason"] == "interrupted" and r["step"] == 12
    b = train(tiny_args(text_file, tmp_path / "b", max_steps=24, eval_interval=6, resume=True, output_vocab=output_vocab))
    assert b["step"] == 24
    wa = torch.load(tmp_path / "a" / "last.pth", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "last.pth", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [h["val_loss"] for h in a["history"]] == [h["val_loss"] for h in b["history"]]


BAD = [
    ([], "no training data"),
    (["--data", "{missing}"], "no such file or folder"),
    (["--data", "{empty}"], "is empty"),
    (["--data", "{text}", "--max_steps", "0"], "--max_steps must be >= 1"),
    (["--data", "{text}", "--block_size", "65"], "over the model's context window"),
    (["--data", "{text}", "--size", "gpt2-huge"], "unknown --size"),
    (["--data", "{text}", "--resume"], "no "),
    (["--data", "{text}", "--init", "{missing}.pth"], "--init"),
    (["--data", "{text}", "--autocast", "fp8"], "--autocast must be auto, bf16 or off"),
    (["--data", "{text}", "--output_vocab", "all"], "--output_vocab must be full or seen"),
    (["--data", "{text}", "--window_start", "middle"], "--window_start must be any or line"),
    (["--data", "{text}", "--lr", "nan"], "--lr must be a number > 0"),
    (["--data", "{text}", "--lr", "inf"], "--lr must be a number > 0"),
    (["--data", "{text}", "--lr", "1e300"], "--lr must be at most 3.4e+38"),
    (["--data", "{text}", "--weight_decay", "1e30"], "lower --weight_decay"),
    (["--data", "{text}", "--out_dir", ""], "--out_dir must name a folder"),
    (["--data", "{text}", "--min_lr", "-1"], "--min_lr must be in [0, --lr]"),
    (["--data", "{text}", "--warmup", "-5"], "--warmup must be >= 0"),
    (["--data", "{text}", "--weight_decay", "nan"], "--weight_decay must be >= 0"),
    (["--data", "{text}", "--grad_clip", "nan"], "--grad_clip must be > 0"),
    (["--data", "{text}", "--grad_clip", "-1"], "--grad_clip must be > 0"),
    (["--data", "{text}", "--dropout", "2"], "--dropout must be in [0, 1)"),
    (["--data", "{text}", "--seed", "99999999999999999999999"], "--seed must be an integer"),
    (["--data", "{text}", "--time_budget", "inf"], "--time_budget must be > 0"),
    (["--data", "{tiny}"], "too little data"),
    (["--data", "/dev/null"], "neither a file nor a folder"),
    (["--build_corpus", "{text}/corpus", "--corpus_bytes", "0"], "--corpus_bytes must be >= 1"),
]


@pytest.mark.parametrize("argv,msg", BAD)
def test_bad_input_one_line_exit_2(argv, msg, text_file, tmp_path, capsys):
    empty = tmp_path / "empty.txt"; empty.write_text("")
    tiny = tmp_path / "tiny.txt"; tiny.write_text("one line\n")
    fill = dict(missing=tmp_path / "nope.txt", empty=empty, text=text_file, tiny=tiny)
    argv = [a.format(**fill) for a in argv]
    tiny_flags = [kv for kv in zip(TINY[::2], TINY[1::2]) if kv[0] not in argv]   # the case's own values win over TINY's
    argv += ([] if "--out_dir" in argv else ["--out_dir", str(tmp_path / "ck")]) + [x for kv in tiny_flags for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and msg in err and "Traceback" not in err


def test_cli_bad_input_subprocess(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gpt2_learn.train", "--data", str(tmp_path / "nope.txt")], env=env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such file or folder" in r.stderr
    r = subprocess.run([sys.executable, "-m", "gpt2_learn.train", "--max_steps", "x"], env=env(), capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_build_python_corpus(tmp_path):
    out = build_python_corpus(tmp_path / "corpus", max_bytes=700_000)
    files = sorted(out.rglob("*.txt"))
    assert any("pydoc_topics" in str(f) for f in files) and any("stdlib" in str(f) for f in files)
    assert not any("/test/" in f.as_posix() or "site-packages" in f.as_posix() for f in files)
    assert sum(f.stat().st_size for f in files) <= 700_000


def _one_line_exit_1(capsys, argv, msg):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and msg in err and "Traceback" not in err, err


def test_resume_from_weights_only_checkpoint_exit_1(text_file, tmp_path, capsys):
    "best_model.pth holds no optimizer state: --resume from it says so (it was a KeyError traceback)."
    train(tiny_args(text_file, tmp_path, max_steps=2, eval_interval=1))
    (tmp_path / "last.pth").write_bytes((tmp_path / "best_model.pth").read_bytes())
    argv = ["--data", str(text_file), "--out_dir", str(tmp_path), "--resume", "--max_steps", "4", *TINY]
    _one_line_exit_1(capsys, argv, "cannot be resumed")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_absent_gpu_exit_1(text_file, tmp_path, capsys):
    _one_line_exit_1(capsys, ["--data", str(text_file), "--out_dir", str(tmp_path), "--device", "cuda", *TINY], "no CUDA GPU")


def test_init_that_cannot_be_read_exit_1(text_file, tmp_path, capsys):
    (tmp_path / "garbage.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    for name in ("garbage.safetensors", "garbage.pth"):
        _one_line_exit_1(capsys, ["--data", str(text_file), "--out_dir", str(tmp_path / "ck"), "--init", str(tmp_path / name), *TINY],
                         f"--init {tmp_path / name}")


def test_build_corpus_where_it_cannot_write_exit_1(text_file, capsys):
    _one_line_exit_1(capsys, ["--build_corpus", str(text_file / "corpus")], "could not write the corpus")


def test_stop_signals_wait_for_a_write_then_stop_once():
    "Signals that land while a checkpoint is written wait for its end, then stop the run once; later ones are only counted."
    from gpt2_learn.train import StopSignals
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)      # (a background job starts with SIGINT ignored)
    try:
        with StopSignals() as stops:
            with pytest.raises(KeyboardInterrupt):
                with stops.hold():
                    os.kill(os.getpid(), signal.SIGINT); os.kill(os.getpid(), signal.SIGINT); time.sleep(0.05)   # nothing raised
                    done = True
            assert done and stops.received == [signal.SIGINT] * 2
            os.kill(os.getpid(), signal.SIGINT); time.sleep(0.05)     # stopping already: counted, not raised
            assert len(stops.received) == 3
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with StopSignals() as stops, pytest.raises(ZeroDivisionError):   # a write that fails: its error, not the signal
            with stops.hold(): os.kill(os.getpid(), signal.SIGINT); time.sleep(0.05); 1 / 0
    finally: signal.signal(signal.SIGINT, outer)


def test_ctrl_c_while_importing_is_one_line(tmp_path):
    "A Ctrl+C while PyTorch imports (before main runs) prints one line and ends the program by SIGINT, never a traceback."
    from conftest import interrupt_while_importing_torch
    for _ in range(3):
        rc, err = interrupt_while_importing_torch([sys.executable, "-m", "gpt2_learn.train", "--data", str(tmp_path)], env())
        assert rc in (130, -signal.SIGINT) and "python -m gpt2_learn.train: interrupted" in err and "Traceback" not in err, (rc, err)


def test_diverged_run_keeps_the_last_good_checkpoint(text_file, tmp_path, capsys):
    "--lr 1e30: the loss becomes nan; the run stops with exit 1 and one line, and no nan weights reach last.pth or best_model.pth."
    import json
    argv = ["--data", str(text_file), "--out_dir", str(tmp_path), *TINY, "--output_vocab", "seen"]
    # from scratch, diverged at the first evaluation: nothing good to keep, so nothing is written
    assert main([*argv, "--lr", "1e30", "--warmup", "0", "--eval_interval", "1", "--max_steps", "4"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search("became (nan|inf) at step 1", err) and "lower --lr (now 1e+30)" in err, err
    assert not (tmp_path / "last.pth").exists() and not (tmp_path / "best_model.pth").exists()
    assert json.loads((tmp_path / "train_log.json").read_text())["stop_reason"] == "diverged"
    # a good run, then resumed at 1e30 and checked before each last.pth write: both files stay as they were
    train(tiny_args(text_file, tmp_path, max_steps=4, eval_interval=2, output_vocab="seen"))
    good = {n: (tmp_path / n).read_bytes() for n in ("last.pth", "best_model.pth")}
    assert main([*argv, "--resume", "--lr", "1e30", "--max_steps", "8", "--eval_interval", "100", "--save_interval", "1"]) == 1
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert f"the last good checkpoint is {tmp_path / 'last.pth'}: lower --lr (now 1e+30) and --resume" in last_line, last_line
    assert all((tmp_path / n).read_bytes() == b for n, b in good.items())
    log = json.loads((tmp_path / "train_log.json").read_text())
    assert log["stop_reason"] == "diverged" and log["diverged"]["step"] == 5
    # and the advice works: --resume with a sane rate
    assert main([*argv, "--resume", "--max_steps", "8", "--eval_interval", "4"]) == 0
    assert torch.load(tmp_path / "last.pth", weights_only=True)["step"] == 8


def test_closed_stderr_does_not_lose_the_run(text_file, tmp_path):
    "`train ... 2>&1 | head -c 10`: once head exits, the messages stop, the run goes on and writes its last checkpoint."
    out = tmp_path / "ck"
    cmd = [sys.executable, "-m", "gpt2_learn.train", "--data", str(text_file), "--out_dir", str(out), *TINY, "--max_steps", "30",
           "--eval_interval", "3", "--save_interval", "1000", "--output_vocab", "seen", "--no-progress"]
    p = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert len(p.stderr.read(10)) == 10
        p.stderr.close()
        assert p.poll() is None, "the run ended before its stderr was closed"
        assert p.wait(timeout=300) == 0
    finally: p.kill()
    assert torch.load(out / "last.pth", weights_only=True)["step"] == 30       # the only last.pth: the final one


def test_stderr_closed_from_the_start(text_file, tmp_path):
    "`train ... 2>&-`: no messages, and the run still ends with its checkpoints."
    out = tmp_path / "ck"
    r = subprocess.run([sys.executable, "-m", "gpt2_learn.train", "--data", str(text_file), "--out_dir", str(out), *TINY,
                        "--max_steps", "4", "--eval_interval", "2", "--output_vocab", "seen"],
                       env=env(), stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2), timeout=300)
    assert r.returncode == 0, r.stdout
    assert torch.load(out / "last.pth", weights_only=True)["step"] == 4 and (out / "best_model.pth").is_file()


def test_interrupted_before_the_first_evaluation_records_its_best_val(text_file, tmp_path, monkeypatch):
    "Stopped before any evaluation, the run writes best_model.pth; last.pth must record that file's loss as best_val."
    import gpt2_learn.train as tr
    calls, real = [], tr.get_batch
    def get_batch(*a, **kw):
        calls.append(1)
        if len(calls) == 4: raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(tr, "get_batch", get_batch)
    r = train(tiny_args(text_file, tmp_path, max_steps=20, eval_interval=10, output_vocab="seen"))
    assert r["stop_reason"] == "interrupted" and r["step"] == 3
    best = torch.load(tmp_path / "best_model.pth", weights_only=True)
    last = torch.load(tmp_path / "last.pth", weights_only=True)
    assert best["step"] == 3 and np.isfinite(best["val_loss"]) and last["best_val"] == best["val_loss"] == r["best_val"]


def test_truncated_last_pth_says_what_to_do(text_file, tmp_path, capsys):
    train(tiny_args(text_file, tmp_path, max_steps=2, eval_interval=1, output_vocab="seen"))
    data = (tmp_path / "last.pth").read_bytes(); (tmp_path / "last.pth").write_bytes(data[:len(data) // 2])
    argv = ["--data", str(text_file), "--out_dir", str(tmp_path), "--resume", "--max_steps", "4", *TINY]
    _one_line_exit_1(capsys, argv, f"start again without --resume, or replace --resume by --init {tmp_path / 'best_model.pth'}")


def test_help_and_parse_errors(capsys):
    "Every flag has a help line; a parse error is one line that ends with (see --help), exit 2."
    from gpt2_learn.train import TrainError, build_parser
    actions = [a for a in build_parser()._actions if a.dest != "help"]
    assert all(a.help and len(a.help) > 10 for a in actions), [a.dest for a in actions if not a.help]
    autocast = next(a for a in actions if a.dest == "autocast").help
    assert "AVX2" in autocast and torch.backends.cpu.get_cpu_capability() in autocast
    with pytest.raises(SystemExit) as e: main(["--max_steps", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.endswith("(see --help)\n"), err
    with pytest.raises(SystemExit) as e: main(["--data", "x.txt", "--device", "tpu"])   # the inference CLI's check
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "'tpu' is not a device: use auto, cpu, cuda" in err, err
    with pytest.raises(TrainError, match="unknown --device 'tpu'"): TrainArgs(data=["x.txt"], device="tpu").validate()


def test_out_dir_under_a_file_says_what_to_do(text_file, tmp_path, capsys):
    argv = ["--data", str(text_file), "--out_dir", str(text_file / "sub"), "--max_steps", "2", *TINY]
    _one_line_exit_1(capsys, argv, "choose an --out_dir (and --cache_dir) that can be written")


SLOW_DISK = r"""
import os, sys, time
sys.argv[0] = "gpt2-learn-train"               # as the installed command runs
import torch
real_save, marker = torch.save, os.environ["SAVE_MARKER"]
class Slow:                                    # a slow disk: a signal is sure to land while a checkpoint is written
    def __init__(self, f): self.f = f
    def write(self, b): time.sleep(0.002); return self.f.write(b)
    def flush(self): return self.f.flush()
def slow_save(obj, f, *a, **kw):
    if not hasattr(f, "write"): return real_save(obj, f, *a, **kw)
    with open(marker, "a") as m: m.write("w")
    return real_save(obj, Slow(f), *a, **kw)
torch.save = slow_save
from gpt2_learn.train import main
sys.exit(main(sys.argv[1:]))
"""


def test_signals_during_a_checkpoint_write_lose_nothing(text_file, tmp_path):
    """A closed terminal (SIGHUP) in the middle of the first last.pth write, SIGTERM and Ctrl+C 200 ms apart after it, then
    a storm: the write completes, exit 130 as for Ctrl+C, no traceback; --resume goes on from there."""
    out, marker = tmp_path / "ck", tmp_path / "writes"
    args = ["--data", str(text_file), "--out_dir", str(out), *TINY, "--eval_interval", "100000", "--save_interval", "3",
            "--output_vocab", "seen", "--no-progress"]
    p = subprocess.Popen([sys.executable, "-c", SLOW_DISK, *args, "--max_steps", "100000"], env={**env(), "SAVE_MARKER": str(marker)},
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))   # not ignored, whatever ran pytest
    try:
        deadline = time.time() + 120
        while not marker.exists() and p.poll() is None and time.time() < deadline: time.sleep(0.01)
        time.sleep(0.1)
        storm = [signal.SIGHUP, signal.SIGTERM, signal.SIGINT] + [signal.SIGINT, signal.SIGTERM, signal.SIGHUP] * 3
        for i, s in enumerate(storm):
            if p.poll() is None: p.send_signal(s)
            time.sleep(0.2 if i < 3 else 0.03)  # the second and third 200 ms apart, then a storm
        err = p.communicate(timeout=120)[1]
    finally: p.kill()
    assert p.returncode == 130 and "Traceback" not in err and "(interrupted)" in err, (p.returncode, err)
    assert torch.load(out / "last.pth", weights_only=True)["step"] == 3     # the write the signal landed in
    GPT2Model.from_checkpoint(out / "best_model.pth")
    assert not list(out.glob(".*.tmp"))
    r = subprocess.run([sys.executable, "-m", "gpt2_learn.train", *args, "--max_steps", "5", "--resume"], env=env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "at step 3" in r.stderr, r.stderr
    assert torch.load(out / "last.pth", weights_only=True)["step"] == 5


def test_best_model_never_gets_worse_after_a_kill_between_its_writes(text_file, tmp_path):
    "Killed after best_model.pth (step 4) but before last.pth: the resume knows step 4's loss is the best, not step 2's."
    import json
    class Killed(BaseException): pass
    def kill_at_4(msg):                            # this message comes after best_model.pth's write, before last.pth's
        if msg.startswith("step 4:"): raise Killed
    with pytest.raises(Killed): train(tiny_args(text_file, tmp_path, max_steps=8, eval_interval=2, output_vocab="seen"), log=kill_at_4)
    best = torch.load(tmp_path / "best_model.pth", weights_only=True)["val_loss"]
    assert torch.load(tmp_path / "last.pth", weights_only=True)["step"] == 2
    lines = []
    r = train(tiny_args(text_file, tmp_path, max_steps=8, eval_interval=2, output_vocab="seen", resume=True), log=lines.append)
    step4 = next(l for l in lines if l.startswith("step 4:"))
    assert "(best)" not in step4, step4            # the same loss as best_model.pth's: not better (it was, against step 2's)
    vals = [h["val_loss"] for h in r["history"]]
    after = torch.load(tmp_path / "best_model.pth", weights_only=True)["val_loss"]
    assert after <= best and after == min(vals) == r["best_val"]
    assert json.loads((tmp_path / "train_log.json").read_text())["best_val"] == after


def test_one_run_per_out_dir_and_stale_temporary_files_go(text_file, tmp_path, capsys):
    "A second run in a folder in use exits 2 naming the pid; the next run that holds the folder removes killed writes' files."
    from gpt2_learn.train import out_dir_lock
    stale = [tmp_path / ".last.pth.ab_d1234.tmp", tmp_path / ".best_model.pth.x9yz0000.tmp", tmp_path / ".train_log.json.tmp"]
    others = [tmp_path / ".last.pth.tmp", tmp_path / "notes.tmp", tmp_path / ".other.pth.abcd1234.tmp"]
    with out_dir_lock(tmp_path):
        for f in stale + others: f.write_text("x")
        assert main(["--data", str(text_file), "--out_dir", str(tmp_path), *TINY, "--max_steps", "1"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"another training run (pid {os.getpid()}) is using {tmp_path}" in err, err
        assert all(f.exists() for f in stale)      # not ours to clean while another run writes
    train(tiny_args(text_file, tmp_path, max_steps=1, eval_interval=1, output_vocab="seen"))
    assert not any(f.exists() for f in stale) and all(f.exists() for f in others)


def test_full_disk_one_line_and_old_checkpoints_intact(text_file, tmp_path, capsys):
    "A write that runs out of room (here the file size limit: EFBIG, as ENOSPC) says so in one line, exit 1; nothing lost."
    import resource
    train(tiny_args(text_file, tmp_path, max_steps=2, eval_interval=1, output_vocab="seen"))
    before = {n: (tmp_path / n).read_bytes() for n in ("last.pth", "best_model.pth")}
    assert len(before["best_model.pth"]) < 10_000_000 < len(before["last.pth"])
    old_limit, old_handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (10_000_000, old_limit[1]))
    try: code = main(["--data", str(text_file), "--out_dir", str(tmp_path), *TINY, "--resume", "--max_steps", "4",
                      "--eval_interval", "100", "--output_vocab", "seen"])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit); signal.signal(signal.SIGXFSZ, old_handler)
    err = capsys.readouterr().err
    last = err.splitlines()[-1]                    # after the run's own progress lines
    assert code == 1 and err.count("error") == 1 and "Traceback" not in err, err
    assert f"could not write {tmp_path / 'last.pth'}: the file size limit (ulimit -f) is reached" in last, last
    assert "then run again with --resume" in last
    assert (tmp_path / "last.pth").read_bytes() == before["last.pth"] and not list(tmp_path.glob(".*.tmp"))
    GPT2Model.from_checkpoint(tmp_path / "best_model.pth")   # (rewritten at step 4: a better loss, and it fit)


@pytest.mark.parametrize("field,value,msg", [("step", -100, "its step is -100, not an integer >= 0"),
                                             ("step", float("nan"), "its step is nan"),
                                             ("best_val", float("nan"), "its best_val is nan, not a loss"),
                                             ("tokens_seen", "many", "its tokens_seen is 'many'"),
                                             ("history", None, "its history is None"),
                                             ("batch_rng", torch.zeros(3, dtype=torch.uint8), "generator state does not fit"),
                                             ("config", lambda c: {**c, "n_layer": 100}, "the config says n_layer=100 but the weights hold 1")])
def test_bad_fields_in_last_pth_are_refused(field, value, msg, text_file, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("bad")
    train(tiny_args(text_file, out, max_steps=1, eval_interval=1, output_vocab="seen", cache_dir=str(text_file.parent / "tok")))
    ck = torch.load(out / "last.pth", weights_only=True)
    torch.save({**ck, field: value(ck[field]) if callable(value) else value}, out / "last.pth")
    _one_line_exit_1(capsys, ["--data", str(text_file), "--out_dir", str(out), "--cache_dir", str(text_file.parent / "tok"),
                              *TINY, "--resume", "--max_steps", "3", "--output_vocab", "seen"], msg)


def test_tokenizing_in_pieces_gives_the_same_tokens_in_bounded_memory(text_file, tmp_path):
    "Pieces cut between a non-space and a space tokenize as the whole file; a 2 MB file no longer costs ~170x its size."
    from gpt2_learn.tokenizer import load_tokenizer
    from gpt2_learn.train import tokenize_files
    tok = load_tokenizer()
    tricky = ("  x\n\n  def f():\n\treturn  1\r\n\r\n   \n" + "café — naïve\u00a0nbsp\u2028 line\u3000wide 's 're 'll\n" +
              "<|endoftext|> inside <|endoftext|>x  \t\n" + "1234567 89,000.5 ;;; ''' \"\"\" ===\n") * 20
    files = [tmp_path / "a.txt", tmp_path / "b.txt", text_file]
    files[0].write_text(tricky, encoding="utf-8", newline="")
    files[1].write_bytes(b"bad utf-8 \xff\xfe here\n" * 50)
    want = np.concatenate([tok(f.read_text(encoding="utf-8", errors="replace"))["input_ids"] + [tok.eos_token_id] for f in files])
    for batch_chars in (40, 333, 1 << 19):        # pieces of ~40 characters, of ~333, whole files
        n = tokenize_files(files, tmp_path / "all.bin", tok, batch_chars=batch_chars)
        assert n == len(want) and np.array_equal(np.fromfile(tmp_path / "all.bin", dtype=np.uint16), want), batch_chars
    big = tmp_path / "big.txt"
    big.write_text(text_file.read_text() * (2_000_000 // text_file.stat().st_size))
    child = ("import resource, sys; from gpt2_learn.tokenizer import load_tokenizer; from gpt2_learn.train import tokenize_files\n"
             "tok = load_tokenizer(); tok(['warm up ' * 5000])\n"
             "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
             "base = peak(); tokenize_files([sys.argv[1]], sys.argv[2], tok); print(peak() - base)")
    r = subprocess.run([sys.executable, "-c", child, str(big), str(tmp_path / "big.bin")], env=env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) < 150, f"{float(r.stdout):.0f} MB more for a 2 MB file"   # it was ~340 MB (170x)


def test_progress_counts_down_to_the_first_limit_and_autocast_follows_the_hardware(text_file, tmp_path):
    from gpt2_learn.train import native_bf16, steps_within
    assert steps_within(10, 8000, 590.0, 1.0) == 600      # --time_budget 600 --max_steps 8000 at 1 s a step: 600, not 8000
    assert steps_within(10, 100, 590.0, 1.0) == 100 and steps_within(10, 8000, None, 1.0) == 8000
    assert steps_within(10, 8000, -5.0, 1.0) == 10
    flags = set(re.findall(r"\w+", Path("/proc/cpuinfo").read_text())) if Path("/proc/cpuinfo").exists() else set()
    if flags: assert native_bf16(torch.device("cpu")) == bool({"avx512_bf16", "amx_tile"} & flags)
    r = train(tiny_args(text_file, tmp_path, max_steps=1, eval_interval=1, output_vocab="seen"))
    assert r["bf16"] == native_bf16(torch.device("cpu"))
