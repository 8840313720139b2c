"""A real browser: JupyterLab on localhost, a notebook using gpt2_learn.viz run in headless Debian Chromium (Playwright).

Needs Debian's chromium (/usr/bin/chromium) and `pip install playwright` (its own browser download is never used).
Set GPT2_LEARN_SCREENSHOTS=DIR to also keep the screenshots of the three widgets there (e.g. nbs/images)."""
import json, os, shutil, socket, subprocess, sys, time, urllib.request, uuid
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
pytest.importorskip("jupyterlab", reason="jupyterlab is not installed")

WIDGET_SHOTS = ("sampling_explorer_before.png", "sampling_explorer_after.png", "step_explorer.png", "compare_settings.png")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

CELLS = [
    "import torch\n"
    "from gpt2_learn import viz\n"
    "from gpt2_learn.config import InferenceConfig\n"
    "from gpt2_learn.tokenizer import load_tokenizer\n"
    "from gpt2_learn.weights import load_bundled_model",
    "model = load_bundled_model().eval()\n"
    "tokenizer = load_tokenizer()\n"
    "prompt = 'def fibonacci(n):\\n    '",
    "w = viz.sampling_explorer(model, tokenizer, prompt)\nw",
    "s = viz.step_explorer(model, tokenizer, prompt, InferenceConfig(top_k=20))\n"
    "s.pick(s.state['candidates'][0][0])\n"
    "s.sample()\n"
    "s",
    "c = viz.compare_settings(model, tokenizer, prompt, seed=0)\nc",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def write_notebook(path: Path):
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [], "source": src}
             for i, src in enumerate(CELLS)]
    nb = {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


@pytest.fixture()
def lab(tmp_path):
    "A JupyterLab server on a free localhost port with a random token, its files and settings in tmp_path."
    port, token = free_port(), uuid.uuid4().hex
    write_notebook(tmp_path / "viz_check.ipynb")
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True); news.write_text('{"fetchNews": "false"}')     # no "Jupyter news?" popup
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             f"--IdentityProvider.token={token}", "--allow-root", f"--ServerApp.root_dir={tmp_path}", "--ServerApp.port_retries=0",
                             f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", f"--LabApp.user_settings_dir={tmp_path / 'settings'}"],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 40
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).read(); break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"JupyterLab did not start: {(tmp_path / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.3)
        yield url, token, tmp_path
    finally:
        proc.terminate()
        try: proc.wait(10)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()


def img_src(page) -> str:
    return page.locator(".gpt2-sampling-explorer .widget-output img").first.get_attribute("src") or ""


def test_sampling_explorer_in_chromium(lab):
    url, token, tmp = lab
    shots = tmp / "screenshots"; shots.mkdir()
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.set_default_timeout(45_000)
            page.goto(f"{url}/lab/tree/viz_check.ipynb?token={token}&reset")
            page.wait_for_selector(".jp-Notebook .jp-Cell", state="visible")
            page.wait_for_selector("text=Python 3 (ipykernel) | Idle", timeout=45_000)                # kernel started
            page.wait_for_selector(".jp-Notebook .jp-Cell .jp-InputArea", state="visible")
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()              # Run > Run All Cells
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            explorer = page.wait_for_selector(".gpt2-sampling-explorer", state="visible", timeout=60_000)
            page.wait_for_selector(".gpt2-sampling-explorer .widget-output img", state="visible")
            assert page.locator(".gpt2-sampling-explorer .widget-slider").count() == 5
            before_src, before_summary = img_src(page), page.locator(".gpt2-sampling-explorer .widget-html").nth(1).inner_text()
            assert before_src.startswith("data:image/png")
            explorer.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "lab_before.png"))
            explorer.screenshot(path=str(shots / "sampling_explorer_before.png"))

            # move the temperature slider with the keyboard: focus its handle, press End (the maximum, 3.0)
            handle = page.locator(".gpt2-sampling-explorer .widget-slider").first.locator(".noUi-handle")
            handle.focus(); page.keyboard.press("End")
            page.wait_for_function("(old) => { const i = document.querySelector('.gpt2-sampling-explorer .widget-output img');"
                                   " return i && i.src !== old; }", arg=before_src, timeout=30_000)
            readout = page.locator(".gpt2-sampling-explorer .widget-slider").first.locator(".widget-readout").inner_text()
            after_summary = page.locator(".gpt2-sampling-explorer .widget-html").nth(1).inner_text()
            assert float(readout) == pytest.approx(3.0)
            assert img_src(page) != before_src and after_summary != before_summary
            page.screenshot(path=str(shots / "lab_after.png"))
            explorer.screenshot(path=str(shots / "sampling_explorer_after.png"))

            page.wait_for_selector(".gpt2-step-explorer .widget-output img", state="visible", timeout=60_000)
            assert page.locator(".gpt2-step-explorer .widget-button").count() >= 3     # candidates, sample, undo
            page.locator(".gpt2-step-explorer").first.screenshot(path=str(shots / "step_explorer.png"))
            page.wait_for_selector(".gpt2-compare-settings table", state="visible", timeout=60_000)
            assert page.locator(".gpt2-compare-settings tr").count() == 4                # one row per setting
            page.locator(".gpt2-compare-settings").first.screenshot(path=str(shots / "compare_settings.png"))
        except Exception:
            page.screenshot(path=str(shots / "failure.png")); raise
        finally:
            browser.close()
    assert all((shots / f).stat().st_size > 10_000 for f in WIDGET_SHOTS)
    if os.environ.get("GPT2_LEARN_SCREENSHOTS"):
        dest = Path(os.environ["GPT2_LEARN_SCREENSHOTS"])
        dest.mkdir(parents=True, exist_ok=True)
        for f in WIDGET_SHOTS:
            shutil.copy(shots / f, dest / f)
