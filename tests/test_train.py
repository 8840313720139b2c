"Training: a short run lowers the loss and writes loadable checkpoints; kill -9 + --resume; bad input -> one line, exit 2."
import os, re, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
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
    rng = np.random.default_rng(0)
    words = ["def", "return", "self", "value", "import", "class", "for", "in", "if", "None", "print", "list"]
    lines = [f"def f{i}(x):\n    return x + {i % 7}\n" + " ".join(rng.choice(words, 6)) + "\n" for i in range(400)]
    p = tmp_path_factory.mktemp("data") / "corpus.txt"
    p.write_text("".join(lines))
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
           "--max_steps", "60", "--eval_interval", "10", "--save_interval", "5", "--output_vocab", "seen"]   # seen: 3x faster steps
    p = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / "last.pth").exists() and p.poll() is None and time.time() < deadline: time.sleep(0.02)
    p.send_signal(signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert (out / "last.pth").exists(), f"no checkpoint within 120 s: {p.stderr.read().decode()[-500:]}"
    killed_at = torch.load(out / "last.pth", weights_only=True)["step"]
    assert 0 < killed_at < 60
    r = subprocess.run(cmd + ["--resume"], env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr
    ck = torch.load(out / "last.pth", weights_only=True)
    assert ck["step"] == 60 and ck["tokens_seen"] == 60 * 4 * 32
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
    (["--data", "{text}", "--min_lr", "-1"], "--min_lr must be in [0, --lr]"),
    (["--data", "{text}", "--warmup", "-5"], "--warmup must be >= 0"),
    (["--data", "{text}", "--weight_decay", "nan"], "--weight_decay must be >= 0"),
    (["--data", "{text}", "--grad_clip", "nan"], "--grad_clip must be > 0"),
    (["--data", "{text}", "--grad_clip", "-1"], "--grad_clip must be > 0"),
    (["--data", "{text}", "--dropout", "2"], "--dropout must be in [0, 1)"),
    (["--data", "{text}", "--seed", "99999999999999999999999"], "--seed must be an integer"),
    (["--data", "{text}", "--time_budget", "inf"], "--time_budget must be > 0"),
    (["--data", "{text}", "--device", "tpu"], "unknown --device 'tpu'"),
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
    argv += ["--out_dir", str(tmp_path / "ck"), *[x for kv in tiny_flags for x in kv]]
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


def test_last_checkpoints_are_written_through_a_second_ctrl_c():
    "While the run's last checkpoints are written, SIGINT and SIGTERM are ignored; the handlers come back after."
    from gpt2_learn.train import signals_ignored
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)      # (a background job starts with SIGINT ignored)
    try:
        before = signal.getsignal(signal.SIGINT)
        with signals_ignored():
            os.kill(os.getpid(), signal.SIGINT); os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.05)   # nothing raised
        assert signal.getsignal(signal.SIGINT) is before
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT); time.sleep(0.05)
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


def test_sighup_saves_then_resume(text_file, tmp_path):
    "A closed terminal (SIGHUP) saves last.pth and exits 130, as Ctrl+C does; --resume goes on from there."
    out = tmp_path / "ck"
    cmd = lambda steps: [sys.executable, "-m", "gpt2_learn.train", "--data", str(text_file), "--out_dir", str(out), *TINY,
                         "--max_steps", str(steps), "--eval_interval", "5", "--save_interval", "100000", "--output_vocab", "seen",
                         "--no-progress"]
    p = subprocess.Popen(cmd(5000), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))   # not ignored, whatever ran pytest
    lines = []
    try:
        while not any(l.startswith("step 5:") for l in lines) and p.poll() is None: lines.append(p.stderr.readline())
        p.send_signal(signal.SIGHUP)
        err = p.communicate(timeout=120)[1]
    finally: p.kill()
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err, ("".join(lines), err)
    stopped_at = torch.load(out / "last.pth", weights_only=True)["step"]     # written at the SIGHUP: --save_interval is 100000
    assert stopped_at >= 5
    r = subprocess.run(cmd(stopped_at + 3) + ["--resume"], env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and f"at step {stopped_at}" in r.stderr, r.stderr
    assert torch.load(out / "last.pth", weights_only=True)["step"] == stopped_at + 3


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
    from gpt2_learn.train import build_parser
    actions = [a for a in build_parser()._actions if a.dest != "help"]
    assert all(a.help and len(a.help) > 10 for a in actions), [a.dest for a in actions if not a.help]
    autocast = next(a for a in actions if a.dest == "autocast").help
    assert "AVX2" in autocast and torch.backends.cpu.get_cpu_capability() in autocast
    with pytest.raises(SystemExit) as e: main(["--max_steps", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.endswith("(see --help)\n"), err


def test_out_dir_under_a_file_says_what_to_do(text_file, tmp_path, capsys):
    argv = ["--data", str(text_file), "--out_dir", str(text_file / "sub"), "--max_steps", "2", *TINY]
    _one_line_exit_1(capsys, argv, "choose an --out_dir (and --cache_dir) that can be written")
