"""Figures that follow their controls, checked in a real JupyterLab in headless Chromium.

Guards issue 30: JupyterLab's plotly renderer ignores an in-place update of a display
handle once a learner has hovered over the figure, so a figure redrawn that way stays at
its old state for good. :func:`nas_tutorial.notebook.replace` shows each redraw as a new
output instead. Only a browser can tell whether that works, so this test runs a small
notebook in JupyterLab, hovers each redrawn figure, moves what drives it and waits for the
figure to change: a ``LivePlot`` fed by a search, the PC-DARTS ``alpha_slider`` and a
``controls`` panel.

Needs Chromium, its driver and selenium (``make chromium`` and the dev extra install them);
skipped with one line where one is missing.
"""
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from nas_tutorial.viz.notebook import chromium

TIMEOUT = 60  # seconds for any one thing to show in the browser (a redraw takes < 1 s)

# The notebook the browser runs, with static copies of the figures as a learner has them
# (``make lab``): JupyterLab's plotly renderer then shows a figure's PNG until the mouse
# enters it, and from that hover on ignores in-place updates (without static copies it
# ignores them from the start; a new output per redraw mends both). The search calls back
# after each epoch; after the first it waits (bounded) until the test has hovered the live
# figure, so the next epochs arrive on a figure that a learner has already touched.
CELLS = [
    """\
import time
from pathlib import Path
import ipywidgets as W
import plotly.graph_objects as go
import nas_tutorial as nt
from nas_tutorial import pc_darts as pc
nt.notebook.setup(static=True)""",
    """\
live = nt.viz.LivePlot("search (live)")
display(live)

def after_epoch(history):
    live.update(history)
    deadline = time.monotonic() + %d
    while len(history.epoch) == 1 and not Path("hovered").exists() \\
            and time.monotonic() < deadline:
        time.sleep(0.1)

cfg = pc.SearchConfig(dataset="digits", image_size=8, C=4, layers=3, steps=2, multiplier=2,
                      k=2, epochs=3, batch_size=32, steps_per_epoch=2, warmup_epochs=1,
                      lr=0.05, arch_lr=3e-3, record_every=0)
result = pc.search(cfg, progress=False, callback=after_epoch)""" % TIMEOUT,
    "nt.viz.alpha_slider(result.history)",
    """\
def square(n):
    return go.Figure(go.Scatter(x=[0, 1, 2], y=[0, n, n * n]),
                     layout=dict(title=f"n = {n}", height=250))

nt.notebook.controls(square, n=W.IntSlider(value=2, min=1, max=5, description="n"))""",
]
LIVE, ALPHA, CONTROLS = 1, 2, 3  # cell indices

# User settings for this lab only: every cell kept in the page (windowing would drop those
# scrolled out of view) and no news toast over the figures.
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}


def _webdriver():
    """selenium's webdriver module and the chromedriver path; skips where one is missing."""
    if chromium() is None:
        pytest.skip("no Chromium here (make chromium installs it)")
    driver = shutil.which("chromedriver")
    if driver is None:
        pytest.skip("no chromedriver here (make chromium installs chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                    "(pip install -e '.[dev]')")
    return webdriver, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, method: str = "GET", timeout: float = 5):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server in ``tmp_path`` (a token, localhost only, its own settings) with
    the notebook written there; yields (base url, token, folder). Stops the server and its
    kernel afterwards whatever happened."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, tmp_path / "live.ipynb")
    for name, value in SETTINGS.items():
        path = tmp_path / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    port, token = _free_port(), os.urandom(16).hex()
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
           "--LabApp.expose_app_in_browser=True"]  # window.jupyterapp: run all, kernel state
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "lab.log", "wb")
    server = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=log,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                _api(f"{url}/api/status?token={token}")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not start: "
                                + (tmp_path / "lab.log").read_text()[-500:])
                time.sleep(0.3)
        yield url, token, tmp_path
    finally:
        try:  # the server shuts its kernels down first
            _api(f"{url}/api/shutdown?token={token}", "POST")
            server.wait(15)
        except (OSError, subprocess.TimeoutExpired):
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(5)
        log.close()


@pytest.fixture
def browser():
    """Headless Chromium driven by selenium, at the issue's 1,400 px with the file browser
    open; skips (before any server starts) where Chromium, its driver or selenium is
    missing."""
    webdriver, driver_path = _webdriver()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def _wait(what: str, get, want=bool, timeout: float = TIMEOUT, error=lambda: None):
    """Poll ``get()`` until ``want`` holds for its value; fail naming ``what`` and the last
    value seen if it does not within ``timeout`` seconds, or at once when ``error()`` names
    one (a cell that raised would otherwise read as a figure that did not redraw)."""
    deadline, seen = time.monotonic() + timeout, None
    while True:
        why = error()
        if why:
            pytest.fail(f"{why} (while waiting for {what})")
        try:
            seen = get()
            if want(seen):
                return seen
        except Exception:  # an output being replaced: its elements go stale
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last seen: "
                        f"{seen!r})")
        time.sleep(0.2)


def _kernel_error(driver) -> str | None:
    """'cell N raised Name: value' for the first error output in the notebook, else None."""
    return driver.execute_script(
        "const cells = jupyterapp.shell.currentWidget.content.model.cells;"
        "for (let i = 0; i < cells.length; i++) {"
        "  const outs = cells.get(i).outputs;"
        "  for (let k = 0; outs && k < outs.length; k++) {"
        "    const o = outs.get(k).toJSON();"
        "    if (o.output_type === 'error') return `cell ${i} raised ${o.ename}: ${o.evalue}`;"
        "  } }"
        "return null;")


def _cell(driver, i):
    """Cell ``i`` of the open notebook (all cells are in the page: windowing is off)."""
    return driver.find_elements("css selector", ".jp-Notebook .jp-Cell")[i]


def _away(driver):
    """The mouse off every figure, on the notebook's toolbar (a learner reaching for a
    control); a figure shown next then gets a fresh ``mouseenter``."""
    from selenium.webdriver import ActionChains

    toolbar = driver.find_element("css selector", ".jp-NotebookPanel-toolbar")
    ActionChains(driver).move_to_element(toolbar).perform()


def _plot(driver, i):
    """The plotly figure in the outputs of cell ``i``, made interactive as a learner does:
    with static copies on, JupyterLab shows the PNG until the mouse enters it."""
    from selenium.webdriver import ActionChains

    figure = _cell(driver, i).find_element("css selector", ".jp-OutputArea .jp-RenderedPlotly")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", figure)
    graph = figure.find_elements("css selector", ".plot-container")
    if not graph or not graph[0].is_displayed():
        _away(driver)
        ActionChains(driver).move_to_element(figure).perform()
    return figure  # plotly draws into the renderer's own node


def _title(driver, i) -> str:
    return _plot(driver, i).find_element("css selector", ".gtitle").get_attribute("textContent")


def _drawing(driver, i) -> str:
    """The text of cell ``i``'s text outputs and of its SVG drawings (shown as images)."""
    from urllib.parse import unquote

    area = _cell(driver, i).find_element("css selector", ".jp-OutputArea")
    texts = [e.get_attribute("textContent")
             for e in area.find_elements("css selector", ".jp-RenderedText")]
    svgs = [unquote(e.get_attribute("src"))
            for e in area.find_elements("css selector", "img[src^='data:image/svg+xml']")]
    return "\n".join(texts + svgs)


def _hover(driver, i, target=".nsewdrag"):
    """Move the mouse over ``target`` in cell ``i``'s figure until plotly shows a hover
    label (the state the issue is about), then off the figure again."""
    from selenium.webdriver import ActionChains

    def hovered():
        plot = _plot(driver, i)
        ActionChains(driver).move_to_element(plot.find_element("css selector", target)) \
            .move_by_offset(1, 1).perform()
        return len(plot.find_elements("css selector", ".hoverlayer .hovertext"))

    _wait(f"a hover label on the figure of cell {i}", hovered, timeout=15)
    _away(driver)


def _slide(driver, i, key):
    """Press ``key`` on the slider handle of cell ``i``, as a learner with the keyboard."""
    handle = _cell(driver, i).find_element("css selector", ".widget-slider .noUi-handle")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", handle)
    handle.send_keys(key)


def test_redrawn_figures_follow_their_controls_after_a_hover(browser, lab):
    """The three ways a figure is redrawn in the notebooks still redraw after a hover."""
    from selenium.webdriver.common.keys import Keys

    url, token, folder = lab
    browser.get(f"{url}/lab/tree/live.ipynb?token={token}")
    _wait("JupyterLab to open the notebook with a kernel", lambda: browser.execute_script(
        "const w = window.jupyterapp && jupyterapp.shell.currentWidget;"
        "return !!(w && w.sessionContext && w.sessionContext.session"
        " && w.sessionContext.session.kernel && w.content.widgets.length === %d);"
        % len(CELLS)))
    browser.execute_script("jupyterapp.commands.execute('notebook:run-all-cells')")
    wait = functools.partial(_wait, error=lambda: _kernel_error(browser))

    # LivePlot: hovered after the search's first epoch, then two more epochs arrive.
    def points():
        trace = _plot(browser, LIVE).find_elements("css selector", ".scatterlayer .trace")[0]
        return len(trace.find_elements("css selector", ".point"))

    # Hovering turns the picture into a graph: wait until the notebook holds the first
    # epoch, so that the hover is the learner's one after it, not one before any data.
    wait("the search's first epoch in the notebook", lambda: browser.execute_script(
        "const outs = jupyterapp.shell.currentWidget.content.model.cells.get(%d).outputs;"
        "for (let k = 0; k < outs.length; k++) {"
        "  const fig = outs.get(k).data['application/vnd.plotly.v1+json'];"
        "  if (fig && fig.data.length) return fig.data[0].x.length; }"
        "return 0;" % LIVE), lambda n: n == 1, 2 * TIMEOUT)
    wait("the live figure's first epoch", points, lambda n: n == 1)
    _hover(browser, LIVE, ".scatterlayer .point")
    (folder / "hovered").touch()
    wait("the live figure's points of all 3 epochs after a hover", points,
         lambda n: n == 3)

    # alpha_slider: the heatmap's title and the drawing of the derived cell follow the epoch.
    alpha = lambda: _title(browser, ALPHA)  # noqa: E731
    wait("the alpha slider's heatmap at epoch 3", alpha, lambda t: "at epoch 3 of 3" in t)
    _hover(browser, ALPHA)
    _slide(browser, ALPHA, Keys.ARROW_LEFT)
    wait("the heatmap to redraw at epoch 2 after a hover", alpha,
         lambda t: "at epoch 2 of 3" in t)
    wait("the cell drawing to redraw at epoch 2", lambda: _drawing(browser, ALPHA),
         lambda t: "derived at epoch 2" in t)

    # controls: a figure whose title is the slider's value.
    square = lambda: _title(browser, CONTROLS)  # noqa: E731
    wait("the controls panel's figure for n = 2", square, lambda t: t == "n = 2")
    _hover(browser, CONTROLS)
    _slide(browser, CONTROLS, Keys.ARROW_RIGHT)
    wait("the controls figure to redraw for n = 3 after a hover", square,
         lambda t: t == "n = 3")
