"The CLI as a real process: `python -m gpt2_learn.inference`, stdin bytes, and interactive mode through a pseudo-terminal."
import os, select, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from gpt2_learn.config import GPT2Config
from gpt2_learn.model import GPT2Model

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals and signals are POSIX")
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "PYTHONUNBUFFERED": "1"}
CLI = [sys.executable, "-m", "gpt2_learn.inference"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    "A tiny random checkpoint (fast answers) and a 1024-token one (a long generation to interrupt)."
    d = tmp_path_factory.mktemp("cli_models")
    torch.manual_seed(0)
    GPT2Model(GPT2Config.from_name("gpt2-micro")).save_checkpoint(d / "micro.pth")
    GPT2Model(GPT2Config.from_name("gpt2-tiny", n_positions=1024)).save_checkpoint(d / "long.pth")
    return d


def test_python_m_runs(models):
    r = subprocess.run(CLI + ["--model_path", str(models / "micro.pth"), "--prompt", r"Person A: How are you?\nPerson B:",
                              "--max_new_tokens", "10", "--seed", "0", "--device", "cpu"],
                       capture_output=True, env=ENV, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().startswith("Person A: How are you?\nPerson B:")
    err = r.stderr.decode()
    assert err.count("\n") == 1 and "10 tokens in" in err and "tokens/s) on cpu; stopped: max tokens" in err


def test_undecodable_stdin(models):
    r = subprocess.run(CLI + ["--model_path", str(models / "micro.pth"), "--prompt", "-"], input=b"Hello \xc3\x28 world",
                       capture_output=True, env=ENV, cwd=ROOT, timeout=120)
    err = r.stderr.decode()
    assert r.returncode == 2 and r.stdout == b"" and err.count("\n") == 1 and "Traceback" not in err
    assert "stdin is not UTF-8 text (byte 0xc3 at offset 6)" in err


class Pty:
    "A child process on a pseudo-terminal, read with a timeout (a tiny pexpect)."
    def __init__(self, args):
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=ENV, cwd=ROOT, start_new_session=True)
        os.close(slave)
        self.buf = b""

    def expect(self, pattern: bytes, timeout: float = 60, count: int = 1) -> bytes:
        "Read until `pattern` has appeared `count` times in all output so far."
        deadline = time.monotonic() + timeout
        while self.buf.count(pattern) < count:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                raise AssertionError(f"timed out waiting for {pattern!r}; output so far: {self.buf[-800:]!r}")
            try: chunk = os.read(self.master, 4096)
            except OSError: chunk = b""                                   # EIO: the child closed the terminal
            if not chunk: raise AssertionError(f"the process ended before {pattern!r}; output: {self.buf[-800:]!r}")
            self.buf += chunk
        return self.buf

    def expect_bytes(self, n: int, timeout: float = 60) -> bytes:
        "Read until at least `n` bytes of output have arrived."
        deadline = time.monotonic() + timeout
        while len(self.buf) < n and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.2)[0]:
                try: self.buf += os.read(self.master, 4096)
                except OSError: break
        return self.buf

    def send(self, data: bytes): os.write(self.master, data)

    def wait(self, timeout: float = 60, nudge=None) -> int:
        "The exit code; output is drained meanwhile, and `nudge()` is called every second while the child runs."
        deadline, last = time.monotonic() + timeout, time.monotonic()
        try:
            while self.proc.poll() is None and time.monotonic() < deadline:
                if select.select([self.master], [], [], 0.1)[0]:
                    try: self.buf += os.read(self.master, 4096)
                    except OSError: pass
                if nudge is not None and time.monotonic() - last > 1: nudge(); last = time.monotonic()
            return self.proc.wait(1)
        finally:
            if self.proc.poll() is None: self.proc.kill()
            os.close(self.master)


def test_interactive_two_prompts_then_quit(models):
    t = Pty(CLI + ["--model_path", str(models / "micro.pth"), "--interactive", "--max_new_tokens", "8", "--device", "cpu"])
    t.expect(b">>> ")
    t.send(b"Hello there\n")
    t.expect(b"tokens/s"); t.expect(b">>> ", count=2)
    t.send(b"def fibonacci(n):\n")
    t.expect(b"tokens/s", count=2); t.expect(b">>> ", count=3)
    t.send(b"quit\n")
    assert t.wait() == 0
    assert t.buf.count(b"stopped: max tokens") == 2 and b"Traceback" not in t.buf


def test_interactive_ctrl_c_stops_a_generation(models):
    t = Pty(CLI + ["--model_path", str(models / "long.pth"), "--interactive", "--max_new_tokens", "1000", "--seed", "0",
                   "--repetition_penalty", "1.0", "--device", "cpu"])
    t.expect(b">>> ")
    t.send(b"Once upon a time\n")
    start = len(t.expect(b"Once upon a time\r\n"))                     # the terminal's echo of the line typed
    t.expect_bytes(start + 40)                                         # some text streamed: the generation is running
    assert b"tokens/s" not in t.buf, "the generation ended before it could be interrupted"
    os.kill(t.proc.pid, signal.SIGINT)
    t.expect(b"stopped: interrupted"); t.expect(b">>> ", count=2)      # back at the prompt
    t.send(b"exit\n")
    assert t.wait() == 0 and b"Traceback" not in t.buf


@pytest.mark.parametrize("how", ["ctrl-c", "ctrl-d"])
def test_interactive_exits_cleanly_at_the_prompt(models, how):
    t = Pty(CLI + ["--model_path", str(models / "micro.pth"), "--interactive", "--max_new_tokens", "4", "--device", "cpu"])
    t.expect(b">>> ")
    # A signal that lands between the prompt being written and the read starting is only seen at the next one
    # (a human never presses that fast): so the key is pressed again, each second, while the prompt is still the
    # last thing on the screen. Once the CLI has answered (its newline), no more presses: a Ctrl+C that lands in
    # the last moments of the interpreter's shutdown, after Python restored the default handler, kills it (-2).
    key = (lambda: os.kill(t.proc.pid, signal.SIGINT)) if how == "ctrl-c" else (lambda: t.send(b"\x04"))
    key()
    code = t.wait(nudge=lambda: t.buf.endswith(b">>> ") and key())
    assert b"Traceback" not in t.buf, t.buf
    if how == "ctrl-d": assert code == 0
    else: assert code == 130 and b"python -m gpt2_learn.inference: interrupted" in t.buf, (code, t.buf)   # said, not silent


def test_model_folder_code_never_runs_even_when_yes_is_piped(models, tmp_path):
    """A folder whose config.json and tokenizer_config.json map to Python beside them, 'yes' on stdin: nothing asked,
    nothing run (the folder, and its .pth, whose tokenizer is looked for beside it)."""
    import json
    from gpt2_learn.tokenizer import load_tokenizer
    d, marker = tmp_path / "evil", tmp_path / "ran"
    GPT2Model.from_checkpoint(models / "micro.pth").save_pretrained(d)
    (d / "m.pth").write_bytes((models / "micro.pth").read_bytes())
    load_tokenizer().save_pretrained(d)
    auto_map = {"AutoConfig": "evil_cfg.EvilConfig", "AutoTokenizer": ["evil_cfg.EvilTok", None]}
    (d / "config.json").write_text(json.dumps({**json.loads((d / "config.json").read_text()), "model_type": "evil", "auto_map": auto_map}))
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "EvilTok", "auto_map": auto_map}))
    (d / "evil_cfg.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    script = ("import sys; from gpt2_learn.inference import main\n"
              "codes = [main(['--model_path', p, '--prompt', 'Hi', '--max_new_tokens', '2', '--device', 'cpu'])"
              f" for p in ({str(d)!r}, {str(d / 'm.pth')!r})]\n"
              "print('codes', codes)")
    r = subprocess.run([sys.executable, "-c", script], input=b"yes\nyes\nyes\n", capture_output=True, env=ENV, cwd=ROOT, timeout=120)
    out, err = r.stdout.decode(), r.stderr.decode()
    assert "codes [0, 0]" in out or "codes [1, 0]" in out, (out, err)       # the folder's model_type may be refused
    assert not marker.exists() and "custom code" not in out + err and "Traceback" not in err, (out, err)


# ---------------------------------------------------------------- issue 19: what both command lines share, once

def _imports(module: str) -> set[str]:
    "The modules a package module imports (absolute names), read from its source."
    import ast
    tree = ast.parse((ROOT / "gpt2_learn" / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(("gpt2_learn." if node.level else "") + (node.module or ""))
    return names


def test_cli_module_is_light_and_shared():
    "gpt2_learn.cli imports only the standard library; both command lines use it; training never imports inference."
    assert _imports("cli") <= {"__future__", "argparse", "os", "re", "signal", "sys", "pathlib"}, _imports("cli")
    assert "gpt2_learn.cli" in _imports("inference") and "gpt2_learn.cli" in _imports("train")
    assert "gpt2_learn.inference" not in _imports("train")
    from gpt2_learn import cli, inference, train
    assert type(inference.build_parser()) is cli.CLIParser and type(train.build_parser()) is cli.CLIParser
    config_names = set(vars(__import__("gpt2_learn.config", fromlist=["x"])))
    assert not {"cli_name", "cli_interrupts"} & config_names       # config.py holds configuration only


@pytest.mark.parametrize("module", ["inference", "train"])
def test_both_command_lines_refuse_a_bad_device_alike(module):
    r = subprocess.run([sys.executable, "-m", f"gpt2_learn.{module}", "--device", "gpu", "--prompt", "Hi"]
                       if module == "inference" else [sys.executable, "-m", "gpt2_learn.train", "--device", "gpu"],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"python -m gpt2_learn.{module}: error: argument --device: 'gpu' is not a device: "
                               f"use auto, cpu, cuda, cuda:N or mps"), r.stderr


def test_error_line_and_command_line_prog():
    from gpt2_learn.cli import command_line_prog, error_line
    assert error_line("p", FileNotFoundError(2, "No such file or directory", "x.pth")) == \
        "p: error: x.pth: No such file or directory"
    assert error_line("p", ValueError("first line\nsecond")) == "p: error: first line"
    assert error_line("p", "two  spaces\nand a newline") == "p: error: two spaces and a newline"
    assert command_line_prog(["/venv/bin/gpt2-learn"], []) == "gpt2-learn"
    assert command_line_prog(["-m"], ["python", "-m", "gpt2_learn.train", "--data", "x"]) == "python -m gpt2_learn.train"
    assert command_line_prog(["pytest"], ["python", "-m", "pytest"]) is None
