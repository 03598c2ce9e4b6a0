"""Headless Chromium, for checking what a reader's browser shows: screenshots of the book's pages,
the DOM after a page's scripts ran, and whether each of a page's videos decodes.

Debian's ``chromium`` package is used as it is; nothing is downloaded. It is started with the
flags that keep it off the network (no background requests, no component updates), each time with
a new empty profile, and with virtual time, so a page's scripts run to completion without the
command waiting in real time.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .errors import OpFlowTalkerError

__all__ = ["BrowserError", "find_chromium", "dump_dom", "screenshot", "video_states", "run_in_jupyterlab"]

_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--autoplay-policy=no-user-gesture-required")


class BrowserError(OpFlowTalkerError, RuntimeError):
    """Chromium is missing or could not render a page; the message is one sentence for the user."""


def find_chromium() -> str | None:
    """The path of a Chromium executable on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(url: str, extra: list[str], budget_ms: int, timeout: float) -> str:
    chromium = find_chromium()
    if chromium is None:
        raise BrowserError("headless Chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="opflowtalker-chromium-") as profile:
        command = [chromium, *_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={int(budget_ms)}",
                   *extra, url]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BrowserError(f"Chromium did not finish {url} within {timeout:g} s") from None
    if result.returncode != 0:
        raise BrowserError(f"Chromium failed on {url}: {(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    return result.stdout


def _url(page: str | os.PathLike) -> str:
    text = str(page)
    return text if re.match(r"^[a-z]+://", text) else Path(text).resolve().as_uri()


def dump_dom(page: str | os.PathLike, budget_ms: int = 10000, timeout: float = 120.0) -> str:
    """The page's DOM, serialised, after its scripts had ``budget_ms`` of virtual time."""
    return _run(_url(page), ["--dump-dom"], budget_ms, timeout)


def screenshot(page: str | os.PathLike, out: str | os.PathLike, width: int = 1280, height: int = 900,
               budget_ms: int = 10000, timeout: float = 120.0) -> Path:
    """A PNG of the page's first ``width`` x ``height`` pixels, written to ``out``."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".shot-", dir=out.parent) as tmp:
        target = Path(tmp) / "shot.png"
        _run(_url(page), [f"--window-size={int(width)},{int(height)}", f"--screenshot={target}"], budget_ms, timeout)
        if not target.is_file() or target.stat().st_size == 0:
            raise BrowserError(f"Chromium wrote no screenshot of {page}")
        os.replace(target, out)
    return out


# Appended to a copy of a page: once each video has decoded its first frame (or failed), its state
# goes into a <pre> as JSON. The frame is drawn on a canvas to measure it, so "decoded" means
# pixels, not just an event.
_VIDEO_PROBE = """<pre id="opflowtalker-video-states"></pre><script>
(() => {
  const states = [];
  const out = document.getElementById('opflowtalker-video-states');
  document.querySelectorAll('video').forEach((v, i) => {
    states[i] = {event: null, readyState: v.readyState};
    const report = (what) => {
      let mean = null, spread = null;
      if (what === 'loadeddata' && v.videoWidth > 0) {
        const c = document.createElement('canvas');
        c.width = v.videoWidth; c.height = v.videoHeight;
        const g = c.getContext('2d');
        g.drawImage(v, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data;
        let s = 0, s2 = 0, n = 0;
        for (let k = 0; k < d.length; k += 4) { const y = (d[k] + d[k + 1] + d[k + 2]) / 3; s += y; s2 += y * y; n++; }
        mean = s / n; spread = Math.sqrt(Math.max(0, s2 / n - mean * mean));
      }
      states[i] = {event: what, readyState: v.readyState, source: v.currentSrc.slice(0, 40).split(';')[0],
                   width: v.videoWidth, height: v.videoHeight, mean: mean, spread: spread,
                   error: v.error ? v.error.code : null, poster: v.poster.length > 0};
      out.textContent = JSON.stringify(states);
    };
    v.addEventListener('loadeddata', () => report('loadeddata'));
    v.addEventListener('error', () => report('error'), true);
    v.load();
  });
  out.textContent = JSON.stringify(states);
})();
</script>"""


def video_states(page: str | os.PathLike, budget_ms: int = 15000, timeout: float = 180.0) -> list[dict]:
    """For each ``<video>`` of an HTML file, what Chromium made of it: the ``event`` it reached
    ("loadeddata" once a frame decoded, "error", or None), its ``readyState``, the ``source`` it
    chose (its data-URI or URL prefix, e.g. "data:video/webm"), the frame size, the mean and spread
    of the first frame's grey levels, and whether it has a poster."""
    page = Path(page)
    if not page.is_file():
        raise BrowserError(f"no page at {page}")
    html = page.read_text(encoding="utf-8")
    probed = html.replace("</body>", _VIDEO_PROBE + "</body>") if "</body>" in html else html + _VIDEO_PROBE
    # The copy sits beside the page, so its relative links (styles, images) resolve as they do for it.
    with tempfile.NamedTemporaryFile("w", suffix=".html", prefix=".videos-", dir=page.parent,
                                     encoding="utf-8", delete=False) as copy:
        copy.write(probed)
    try:
        dom = dump_dom(copy.name, budget_ms, timeout)
    finally:
        os.unlink(copy.name)
    found = re.search(r'<pre id="opflowtalker-video-states"[^>]*>([^<]*)</pre>', dom)  # themes add attributes
    if found is None:
        raise BrowserError(f"Chromium ran no script on {page}")
    import html as html_module

    return json.loads(html_module.unescape(found.group(1)) or "[]")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_in_jupyterlab(notebook: str | os.PathLike, out: str | os.PathLike, ready: str = ".jupyter-widgets img",
                      shot: str = ".widget-vbox", timeout: float = 300.0, size: tuple[int, int] = (1400, 2400)) -> dict:
    """Open ``notebook`` in a JupyterLab started headless on localhost (its folder as the root, a
    fresh configuration, nothing fetched), run all its cells in Chromium, wait until the CSS
    selector ``ready`` appears (by default a figure inside a widget), and write a PNG of the first
    element matching ``shot`` to ``out``. Returns what the page held: the counts of widgets,
    dropdowns, sliders and figures in widget outputs, and whether any cell printed an error. One
    function, longer than most, because the server, the browser and the page live and end together:
    each ``finally`` closes what the step before it opened."""
    import time
    import urllib.request

    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    if chromium is None:
        raise BrowserError("headless Chromium is not installed (Debian: apt-get install chromium)")
    notebook = Path(notebook).resolve()
    if not notebook.is_file():
        raise BrowserError(f"no notebook at {notebook}")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    port, token = _free_port(), os.urandom(12).hex()
    with tempfile.TemporaryDirectory(prefix="opflowtalker-lab-") as home:
        settings = Path(home) / "settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(Path(home) / "config"), "IPYTHONDIR": str(Path(home) / "ipython"),
               "JUPYTERLAB_SETTINGS_DIR": str(Path(home) / "settings"),
               "JUPYTERLAB_WORKSPACES_DIR": str(Path(home) / "workspaces"), "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
        import sys

        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={notebook.parent}",
             "--LabApp.expose_app_in_browser=True", "--ServerApp.open_browser=False", "--allow-root"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2).read()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise BrowserError(f"JupyterLab did not start: {(server.stderr.read() or '').strip()[-300:]}") from None
                    time.sleep(0.5)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=list(_FLAGS[1:]))
                try:
                    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
                    page.goto(f"{base}/lab/tree/{notebook.name}?token={token}", timeout=timeout * 1000)
                    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout * 1000)
                    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                           " && window.jupyterapp.shell.currentWidget.sessionContext"
                                           " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel",
                                           timeout=timeout * 1000)
                    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
                    page.wait_for_selector(ready, timeout=timeout * 1000)
                    page.wait_for_function("() => window.jupyterapp.shell.currentWidget.sessionContext.session"
                                           ".kernel.status === 'idle'", timeout=timeout * 1000)
                    target = page.locator(shot).first
                    target.scroll_into_view_if_needed()
                    page.wait_for_timeout(500)
                    with tempfile.TemporaryDirectory(prefix=".shot-", dir=out.parent) as tmp:
                        target.screenshot(path=str(Path(tmp) / "shot.png"))
                        os.replace(Path(tmp) / "shot.png", out)
                    return {"widgets": page.locator(".jupyter-widgets").count(),
                            "dropdowns": page.locator(".widget-dropdown").count(),
                            "sliders": page.locator(".widget-slider").count(),
                            "buttons": page.locator(".jupyter-widgets button").count(),
                            "figures": page.locator(".jupyter-widgets img").count(),
                            "errors": page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
                                                   ", .jp-RenderedText[data-mime-type='application/vnd.jupyter.error']").count()}
                except PlaywrightError as error:
                    raise BrowserError(f"JupyterLab did not run {notebook.name}: {str(error).splitlines()[0]}") from None
                finally:
                    browser.close()
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
