"""A lesson in a real browser: JupyterLab on loopback, headless Chromium, every cell run.

What a learner sees and no kernel-side test can: the ipywidget renders as a widget (not
"Error displaying widget", not its `IntSlider(...)` text) and the plot arrives as an image. The
browser is Debian's Chromium driven by Selenium through Debian's chromedriver; nothing here
downloads a browser or a driver, and Chromium's own background traffic is switched off.

The notebook runs as a copy in a temporary folder (JupyterLab saves what it runs), in the quick
profile. A screenshot is left in test-output/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The lesson with the rank explorer widget; TUTORIAL_BROWSER_NOTEBOOK points the test elsewhere.
LESSON = ROOT / "notebooks" / "05_lora.ipynb"
NOTEBOOK = Path(os.environ.get("TUTORIAL_BROWSER_NOTEBOOK", LESSON))
SCREENSHOTS = ROOT / "test-output"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
RUN_TIMEOUT_S = 600  # a lesson in the quick profile takes up to 2.5 minutes on 2 cores

# Run in the page: JupyterLab's app is exposed (expose_app_in_browser) so the test can use its
# own commands and read the notebook model instead of guessing from pixels.
JS_NOTEBOOK_READY = """
const app = window.jupyterapp;
const nb = app && app.shell.currentWidget;
return !!(nb && nb.sessionContext && nb.sessionContext.session
          && nb.sessionContext.session.kernel && nb.content && nb.content.widgets.length);
"""
JS_RUN_ALL = "window.jupyterapp.commands.execute('notebook:run-all-cells'); return true;"
JS_PROGRESS = """
const nb = window.jupyterapp.shell.currentWidget;
const cells = nb.content.widgets.filter(c => c.model.type === 'code'
                                            && c.model.sharedModel.getSource().trim());
return {
  cells: cells.length,
  done: cells.filter(c => c.model.executionCount !== null && !c.promptNode.textContent.includes('*'))
             .length,
  status: nb.sessionContext.session.kernel.status,
  errors: cells.flatMap(c => c.model.outputs.toJSON())
               .filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue),
};
"""
JS_RENDERED = """
const outputs = [...document.querySelectorAll('.jp-OutputArea-output')];
const imgs = outputs.flatMap(o => [...o.querySelectorAll('img')]);
return {
  widgets: document.querySelectorAll(
    '.jp-OutputArea-output .jupyter-widgets, .jp-OutputArea-output [class*="widget-"]').length,
  sliders: document.querySelectorAll('.jp-OutputArea-output .widget-slider').length,
  images: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
  text: outputs.map(o => o.innerText).join('\\n'),
};
"""

JS_SHOW_WIDGET = """
const w = document.querySelector('.jp-OutputArea-output .widget-slider')
  || document.querySelector('.jp-OutputArea-output .jupyter-widgets');
if (w) w.scrollIntoView({block: 'center'});
"""


def _raw_widget(text: str) -> bool:
    """Whether a widget's Python repr shows where the widget should be drawn."""
    return any(f"{name}(" in text for name in ("IntSlider", "SelectionSlider", "VBox", "HBox"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str, pause: float = 0.5):
    """Poll until predicate returns something true; fail with what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(pause)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _server_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 with a token, a throwaway config and the notebook's copy."""
    root = tmp_path / "root"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(NOTEBOOK, root / "notebooks" / NOTEBOOK.name)
    port, token = _free_port(), secrets.token_hex(16)
    dirs = {
        "JUPYTER_CONFIG_DIR": tmp_path / "config",
        "JUPYTER_RUNTIME_DIR": tmp_path / "runtime",
        "JUPYTERLAB_SETTINGS_DIR": tmp_path / "settings",
        "JUPYTERLAB_WORKSPACES_DIR": tmp_path / "workspaces",
    }
    env = {**os.environ, **{k: str(v) for k, v in dirs.items()}, "TUTORIAL_PROFILE": "quick"}
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.allow_root=True",  # CI containers run as root
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # no extension searches on PyPI
    ]
    # Every cell in the page (no virtual scrolling), so the whole notebook can be inspected.
    tracker = dirs["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    notices = dirs["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "apputils-extension"
    notices.mkdir(parents=True)  # no "official Jupyter news?" prompt over the screenshot
    (notices / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if server.poll() is not None:
                log.flush()
                tail = (tmp_path / "jupyterlab.log").read_text()[-2000:]
                pytest.fail(f"JupyterLab exited ({server.returncode}):\n{tail}")
            return _server_up(f"{base}/api/status?token={token}")

        _wait_for(ready, 60, "JupyterLab")
        yield f"{base}/lab/tree/notebooks/{NOTEBOOK.name}?token={token}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def browser(tmp_path, monkeypatch):
    """Headless Debian Chromium through Debian's chromedriver: no download of either."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"Chromium is not installed; install it with: {INSTALL}")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra")
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _run_and_inspect(browser) -> dict:
    """Wait for every cell to finish without error, then for the outputs to settle."""

    def finished():
        state = browser.execute_script(JS_PROGRESS)
        assert not state["errors"], f"a cell failed in the browser: {state['errors']}"
        return state["done"] == state["cells"] and state["status"] == "idle" and state

    assert _wait_for(finished, RUN_TIMEOUT_S, "every cell to run", pause=2)["cells"] > 0

    def rendered():  # settled: a plot, and the lesson's slider either drawn or visibly failed
        r = browser.execute_script(JS_RENDERED)
        failed = "Error displaying widget" in r["text"] or _raw_widget(r["text"])
        return r["images"] and (r["sliders"] or failed) and r

    return _wait_for(rendered, 30, "a plot image and the widget to render")


@pytest.mark.slow
@pytest.mark.skipif(
    not NOTEBOOK.exists(),
    reason=f"{NOTEBOOK.name} is not committed yet (or set TUTORIAL_BROWSER_NOTEBOOK)",
)
def test_lesson_runs_in_a_real_browser_with_its_widget_and_plot(browser, lab):
    browser.get(lab)
    _wait_for(lambda: browser.execute_script(JS_NOTEBOOK_READY), 90, "the notebook to open")
    _wait_for(lambda: browser.execute_script(JS_PROGRESS)["status"] == "idle", 60, "the kernel")
    browser.execute_script(JS_RUN_ALL)
    try:
        seen = _run_and_inspect(browser)
    finally:  # a failure leaves its screenshot too
        browser.execute_script(JS_SHOW_WIDGET)
        SCREENSHOTS.mkdir(exist_ok=True)
        shot = SCREENSHOTS / f"browser-{NOTEBOOK.stem}.png"
        browser.save_screenshot(str(shot))
    assert "Error displaying widget" not in seen["text"]
    assert not _raw_widget(seen["text"]), "the widget shows as text: no widget manager"
    # a slider, not just any widget: a progress bar is a widget too, and the first model fetch
    # draws some before the lesson's own widget is reached
    assert seen["sliders"] >= 1 and seen["images"] >= 1
    assert shot.stat().st_size > 10_000, "the screenshot should show the page"
    print(json.dumps({k: v for k, v in seen.items() if k != "text"}), shot)
