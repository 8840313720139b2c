"torchrun: 2 processes (gloo, CPU) train as 1 process with the same global batch; a rank killed -9 ends the job, --resume goes on."
import json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_corpus_text
import torch

from gpt2_learn.train import TrainArgs, main, train

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(n_layer=1, n_head=2, n_embd=32, n_positions=64, block_size=32, lr=1e-2, warmup=5, eval_batches=1, seed=0,
            autocast="off")        # bfloat16 would round each rank's half differently: float32 shows the equality


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    "A small generated text and its token cache, shared by the runs."
    d = tmp_path_factory.mktemp("data")
    (d / "corpus.txt").write_text(tiny_corpus_text())
    return d


def cli_args(corpus: Path, out: Path, **kw) -> list[str]:
    a = {**TINY, "cache_dir": corpus / "tokens", "out_dir": out, **kw}
    return ["--data", str(corpus / "corpus.txt"), "--no-progress"] + [x for k, v in a.items() for x in (f"--{k}", str(v))]


def torchrun(args: list[str], **kw) -> subprocess.Popen:
    "Two ranks on a free port (--standalone), in their own process group (the caller kills it in a finally)."
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "gpt2_learn.train"]
    return subprocess.Popen(cmd + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)


def end(p: subprocess.Popen):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def test_two_processes_match_one_with_the_same_global_batch(corpus, tmp_path):
    one = train(TrainArgs(data=[str(corpus / "corpus.txt")], cache_dir=str(corpus / "tokens"), out_dir=str(tmp_path / "one"),
                          batch_size=8, max_steps=20, eval_interval=1, progress=False, **TINY))
    p = torchrun(cli_args(corpus, tmp_path / "two", batch_size=4, max_steps=20, eval_interval=1))
    try: out, _ = p.communicate(timeout=120)
    finally: end(p)
    assert p.returncode == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("training on 2 processes (gloo, cpu"), out        # the first line: the world size
    assert "a global batch of 8 sequences" in lines[0]
    assert sum(line.startswith("done: step 20") for line in lines) == 1, out     # rank 0 alone speaks
    two = json.loads((tmp_path / "two" / "train_log.json").read_text())
    assert two["world_size"] == 2 and two["tokens_per_step"] == one["tokens_per_step"] == 8 * 32
    assert len(two["history"]) == len(one["history"]) == 20
    for k in ("train_loss", "val_loss", "grad_norm"):   # each step's loss and gradient: float32 rounding apart
        a, b = (np.array([h[k] for h in r["history"]]) for r in (one, two))
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5, err_msg=k)
    assert one["history"][-1]["val_loss"] < one["history"][0]["val_loss"] - 1   # (and it learned something)
    ckpt = torch.load(tmp_path / "two" / "last.pth", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["global_batch"] == 8
    assert not (tmp_path / "two" / "tokens").exists()   # (the shared cache was used)


def test_a_rank_killed_ends_the_job_and_resume_on_one_process_goes_on(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    p = torchrun(cli_args(corpus, out, batch_size=4, max_steps=100_000, eval_interval=5))
    try:
        t0 = time.time()
        while not (out / "last.pth").exists():
            assert p.poll() is None and time.time() - t0 < 90, "no last.pth"
            time.sleep(0.1)
        kids = [int(k) for k in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()]
        rank1 = [k for k in kids if b"\0RANK=1\0" in b"\0" + Path(f"/proc/{k}/environ").read_bytes()]
        assert len(rank1) == 1, kids
        os.kill(rank1[0], signal.SIGKILL)
        text, _ = p.communicate(timeout=90)              # the job ends (no hang)
    finally: end(p)
    assert p.returncode != 0
    # rank 0 either saw the peer go (one line, exit 1) or got torchrun's SIGTERM first (it saves and stops)
    ours = [line for line in text.splitlines() if "another training process ended" in line or "(interrupted)" in line]
    assert len(ours) == 1, text
    ckpt = torch.load(out / "last.pth", weights_only=True)   # the last good checkpoint, whole
    step = ckpt["step"]
    assert step >= 5 and ckpt["world_size"] == 2 and ckpt["global_batch"] == 8
    assert main(cli_args(corpus, out, batch_size=8, max_steps=step + 3, eval_interval=5) + ["--resume"]) == 0
    err = capsys.readouterr().err
    assert f"resumed from {out / 'last.pth'} at step {step}" in err
    assert "trained on 2 processes with a global batch of 8 sequences, now 1 with 8: the batches continue" in err
    assert torch.load(out / "last.pth", weights_only=True)["step"] == step + 3
