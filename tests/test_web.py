"""The scene in a browser: the served web view (`viz3d view --web`) and the self-contained HTML export.

Both are loaded in Debian's headless Chromium, driven with selenium through chromedriver, and
checked by screenshots of the page: the 3-D view must show the scene, not a blank canvas. The
browser has no network (a dead proxy for everything but this machine), so the HTML file must
bring everything it needs. The server runs as a subprocess on a free port and must stop
cleanly, with exit status 0, on SIGINT (Ctrl-C) and SIGTERM. Every wait is bounded.
"""
from __future__ import annotations

import io
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from shapes import uv_sphere

from viz3d.runtime import configure_offscreen

configure_offscreen()

from viz3d.errors import Viz3dError  # noqa: E402
from viz3d.io.volume import Volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
RED, BLUE, GREEN = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.8, 0.0)
WINDOW = (1100, 720)

needs_browser = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
)


# --------------------------------------------------------------------------- helpers
def sphere(name, center, radius, color, kind="label", n=12):
    return uv_sphere(name, center, radius, color, kind, n)


def small_ct():
    """Air with a soft-tissue ball (60 HU) and a bright bone ball (1200 HU)."""
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [-60.0, -60.0, -45.0]
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in (41, 41, 31)], indexing="ij"), -1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    array = np.full((41, 41, 31), -1000, np.int16)
    array[np.linalg.norm(world, axis=-1) < 45] = 60
    array[np.linalg.norm(world - [0, -20, 0], axis=-1) < 8] = 1200
    return Volume(array, affine)


def colour_mask(image, rgb, cos_min=0.97, min_bright=40):
    img = image[..., :3].astype(float)
    target = np.asarray(rgb, float) / np.linalg.norm(rgb)
    cos = (img @ target) / np.maximum(np.linalg.norm(img, axis=-1), 1e-9)
    return (cos > cos_min) & (img.max(axis=-1) > min_bright)


def grey_mask(image, lo=60, hi=250):
    img = image[..., :3].astype(int)
    return (np.ptp(img, axis=-1) <= 3) & (img.min(axis=-1) >= lo) & (img.max(axis=-1) <= hi)


def page_image(driver) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))


def keep(name, image) -> None:
    """Save a picture for a person to look at when VIZ3D_TEST_SCREENSHOTS names a folder."""
    folder = os.environ.get("VIZ3D_TEST_SCREENSHOTS")
    if folder:
        from PIL import Image

        Path(folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image)).save(Path(folder) / f"{name}.png")


def element_box(driver, css) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of an element in screenshot pixels."""
    r = driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return [r.top, r.bottom, r.left, r.right, window.devicePixelRatio];", css)
    scale = r[4] or 1
    return int(r[0] * scale), int(r[1] * scale), int(r[2] * scale), int(r[3] * scale)


def wait_for(predicate, timeout, interval=0.25, message="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium without network access (everything but localhost goes to a dead proxy)."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("headless Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--proxy-server=127.0.0.1:9", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def network_requests(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


# --------------------------------------------------------------------------- HTML export
@needs_browser
def test_html_export_opens_offline_with_meshes_slices_and_legend(tmp_path, browser):
    from viz3d.outputs.web import write_html

    meshes = [sphere("left organ", (-40, 0, 0), 12, RED), sphere("right organ", (40, 0, 0), 12, BLUE),
              sphere("front organ", (0, 40, 10), 10, GREEN)]
    out = write_html(meshes, small_ct(), tmp_path / "scene.html", view="anterior", title="viz3d test")
    assert out == tmp_path / "scene.html"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.html"]  # written atomically
    text = out.read_text(encoding="utf-8")
    assert "<title>viz3d test</title>" in text and "left organ" in text
    assert "kitware.github.io/vtk-js/icon" not in text  # the viewer's web icon is replaced

    browser.get_log("performance")  # drop what came before
    browser.get(out.as_uri())
    wait_for(lambda: browser.execute_script("return document.querySelectorAll('canvas').length") > 0, 30,
             message="the vtk.js canvas")

    def rendered():
        image = page_image(browser)
        r0, r1, c0, c1 = element_box(browser, "canvas")
        legend = element_box(browser, "#viz3d-legend")
        view = image[r0:r1, c0:min(c1, legend[2])]  # the 3-D view left of the legend box
        if colour_mask(view, RED).sum() > 30 and colour_mask(view, BLUE).sum() > 30:
            return image, view
        return False

    image, view = wait_for(rendered, 40, interval=0.5, message="the scene in the vtk.js canvas")
    keep("html-export", image)
    assert len(np.unique(view.reshape(-1, 3), axis=0)) > 200  # shaded meshes and CT planes, not blank
    rows_r, cols_r = np.nonzero(colour_mask(view, RED))
    cols_b = np.nonzero(colour_mask(view, BLUE))[1]
    assert cols_r.mean() > cols_b.mean()  # anterior view: the patient's left (red) on the viewer's right
    assert colour_mask(view, GREEN).sum() > 30
    assert grey_mask(view).sum() > 500  # the CT planes, drawn as grey polygons
    legend_text = browser.find_element("id", "viz3d-legend").text
    assert all(name in legend_text for name in ("left organ", "right organ", "front organ"))

    fetched = [u for u in network_requests(browser) if re.match(r"(https?|wss?|ftp):", u)]
    assert not fetched, f"the HTML file asked the network for {fetched}"


@needs_browser
@pytest.mark.parametrize("view", ["anterior", "iso"])
def test_html_export_opens_framed_as_the_scene_with_a_marker_beside_the_surfaces(tmp_path, browser, view):
    """The page opens framed as the scene's camera (the view asked for) and fills the view as the
    screenshots do: the surfaces' pixels span most of the 3-D view's width or height, centred in
    it (vtk.js's own framing left them at about half its width, off centre). The orientation
    marker lies beside the view: no marker pixel over a surface pixel; its letters follow the
    camera (the patient's right on the viewer's left from the front, on the right from behind)."""
    from viz3d.outputs.web import write_html

    meshes = [sphere("left organ", (-40, 0, 0), 12, RED), sphere("right organ", (40, 0, 0), 12, BLUE),
              sphere("front organ", (0, 40, 10), 10, GREEN)]
    out = write_html(meshes, small_ct(), tmp_path / "scene.html", view=view)
    browser.get(out.as_uri())
    wait_for(lambda: browser.execute_script("return typeof viz3d !== 'undefined' && viz3d.fitted !== null"), 40,
             message="the camera framed by the page")

    def surfaces_in_view():
        image = page_image(browser)
        r0, r1, c0, c1 = element_box(browser, "canvas")
        view_px = image[r0:r1, c0:c1]
        drawn = colour_mask(view_px, RED) | colour_mask(view_px, BLUE) | colour_mask(view_px, GREEN)
        return (image, view_px, drawn) if colour_mask(view_px, RED).sum() > 30 and colour_mask(view_px, BLUE).sum() > 30 \
            else False

    image, view_px, drawn = wait_for(surfaces_in_view, 40, interval=0.5, message="the surfaces in the view")
    keep(f"html-export-framed-{view}", image)
    rows, cols = np.nonzero(drawn)
    height, width = drawn.shape
    across, up = (cols.max() - cols.min() + 1) / width, (rows.max() - rows.min() + 1) / height
    assert max(across, up) > 0.8, f"the surfaces span {across:.0%} of the view's width, {up:.0%} of its height"
    if across > up:  # centred along the side they fill (as far as perspective lets near parts swell)
        assert abs(cols.min() - (width - 1 - cols.max())) < 0.12 * width
    else:
        assert abs(rows.min() - (height - 1 - rows.max())) < 0.12 * height

    m0, m1, n0, n1 = element_box(browser, "#viz3d-marker")
    r0, r1, c0, c1 = element_box(browser, "canvas")
    assert n0 >= c1 or m0 >= r1  # beside (or below) the 3-D view, never over it
    marker = image[m0:m1, n0:n1]
    assert len(np.unique(marker.reshape(-1, 3), axis=0)) > 20  # drawn: arrows and letters
    assert not (colour_mask(marker, RED) | colour_mask(marker, BLUE) | colour_mask(marker, GREEN)).any()

    def letters():
        return json.loads(browser.execute_script("return document.getElementById('viz3d-marker').dataset.letters"))

    front = letters()
    assert front["R"][0] < front["L"][0] and front["S"][1] < front["I"][1]  # radiological: R on the viewer's left
    browser.execute_script("viz3d.camera.azimuth(180); window.global.renderWindow.render();")
    behind = wait_for(lambda: letters() if letters()["R"][0] > letters()["L"][0] else False, 10,
                      message="the marker turned with the camera")
    assert behind["S"][1] < behind["I"][1]


def test_page_titles_name_the_case(tmp_path):
    """The web view's and the HTML export's title: "viz3d — <case name>" (trame's default was "Trame")."""
    from viz3d.scene.scene import build_scene, case_name
    from viz3d.outputs.web import page_title, write_html

    assert case_name(Volume(np.zeros((2, 2, 2), np.int16), np.eye(4), source="/data/case_0042/ct.nii.gz")) == "case_0042"
    volume = Volume(np.zeros((2, 2, 2), np.int16), np.eye(4), source="/data/patient7_abdomen.nii.gz")
    assert case_name(volume) == "patient7_abdomen"
    assert case_name(None) == "scene"
    import dataclasses

    ct = dataclasses.replace(small_ct(), source="/data/totalseg_example/ct.nii.gz")
    scene = build_scene([sphere("organ", (0, 0, 0), 10, RED)], ct, off_screen=True, interactive=False, size=(64, 48))
    try:
        assert page_title(scene) == "viz3d — totalseg_example"
    finally:
        scene.close()
    out = write_html([sphere("organ", (0, 0, 0), 10, RED)], ct, tmp_path / "scene.html")
    assert "<title>viz3d — totalseg_example</title>" in out.read_text(encoding="utf-8")


def test_html_export_errors(tmp_path):
    from viz3d.outputs.web import write_html

    with pytest.raises(Viz3dError, match="html"):
        write_html([sphere("a", (0, 0, 0), 5, RED)], None, tmp_path / "scene.png")
    with pytest.raises(Viz3dError, match="does not exist"):
        write_html([sphere("a", (0, 0, 0), 5, RED)], None, tmp_path / "missing" / "scene.html")
    # without a CT: meshes only, and nothing left behind
    out = write_html([sphere("a", (0, 0, 0), 5, RED)], None, tmp_path / "mesh.html")
    assert out.stat().st_size > 100_000 and sorted(p.name for p in tmp_path.iterdir()) == ["mesh.html"]


# --------------------------------------------------------------------------- served web view
class Server:
    """`viz3d view --web --port 0` as a subprocess: waits for its URL, stops it at the end."""

    def __init__(self, args, timeout=90):
        env = dict(os.environ)
        env.pop("DISPLAY", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "viz3d", "view", *args, "--web", "--port", "0"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.url = self._read_url(timeout)

    def _read_url(self, timeout):
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not selector.select(timeout=max(deadline - time.monotonic(), 0.01)):
                    continue
                line = self.proc.stdout.readline()
                if not line:  # the server died
                    break
                match = re.search(r"(http://[^\s]+/)", line)
                if match:
                    return match.group(1)
        finally:
            selector.close()
        self.stop()
        raise AssertionError(f"the web view did not start; stderr: {self.proc.stderr.read()[-2000:]}")

    def stop(self, sig=signal.SIGINT, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError(f"the web view did not stop within {timeout} s of {sig.name}") from None
        return self.proc.returncode


@pytest.fixture
def served(sample_dir):
    servers = []

    def start(*args):
        server = Server([str(sample_dir / "ct.nii.gz"), "--label", str(sample_dir / "label.nii.gz"),
                         "--label-table", "totalsegmentator", "--view", "iso", *args])
        servers.append(server)
        return server

    yield start
    for server in servers:  # whatever happened in the test, no server outlives it
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=10)
        for stream in (server.proc.stdout, server.proc.stderr):
            stream.close()


@needs_browser
def test_web_view_serves_the_scene_and_its_controls_work(browser, served):
    from selenium.webdriver.common.keys import Keys

    from viz3d.io.labels import load_label_table

    server = served()
    assert server.url.startswith("http://127.0.0.1:")  # localhost only, by default
    browser.get(server.url)
    wait_for(lambda: bool(browser.execute_script("return !!document.querySelector('#viz3d-view img, #viz3d-view canvas')")),
             30, message="the remote view element")
    table = load_label_table("totalsegmentator")
    liver = table.color_of(5)

    def view_pixels():
        r0, r1, c0, c1 = element_box(browser, "#viz3d-view")
        image = page_image(browser)[r0:r1, c0:c1]
        return image[:, : int(0.62 * image.shape[1])]  # left of the legend the server draws at the upper right

    def settled(condition):
        """True once ``condition`` holds on two successive non-blank pictures of the view
        (the page swaps streamed frames, and a picture taken mid-swap may be blank)."""
        streak = []

        def check():
            view = view_pixels()
            ok = len(np.unique(view[::2, ::2].reshape(-1, 3), axis=0)) > 100 and bool(condition(view))
            streak.append(ok)
            return len(streak) >= 2 and streak[-1] and streak[-2]

        return check

    def showing_scene():
        view = view_pixels()
        return view if colour_mask(view, liver, cos_min=0.995).sum() > 200 else False

    first = wait_for(showing_scene, 45, interval=0.5, message="the served scene in the page")
    assert browser.title == "viz3d — totalseg_example"  # the case's name, not trame's "Trame"
    keep("web-view", page_image(browser))
    assert len(np.unique(first.reshape(-1, 3), axis=0)) > 500  # many shaded colours: the canvas is not blank
    present = sum(colour_mask(first, table.color_of(v), cos_min=0.995).sum() > 30 for v in (1, 2, 3, 5, 6, 7))
    assert present >= 4  # several label colours, as the desktop scene draws them

    # a camera drag in the page switches the server to the cheap drawing, and back on release
    from selenium.webdriver.common.action_chains import ActionChains

    def drawing():
        return browser.execute_script("return window.trame.state.get('drawing')")

    assert drawing() == "full"
    ActionChains(browser).move_to_element(browser.find_element("id", "viz3d-view")).click_and_hold() \
        .move_by_offset(40, 10).perform()
    wait_for(lambda: drawing() == "coarse", 15, interval=0.2, message="the cheap drawing while dragging")
    ActionChains(browser).move_by_offset(20, 0).release().perform()
    wait_for(lambda: drawing() == "full", 15, interval=0.2, message="the full drawing after the drag")

    # the axial slice slider (keyboard on its thumb) moves the axial plane
    before = view_pixels().astype(int)
    thumbs = browser.find_elements("css selector", "#viz3d-controls [role=slider]")
    assert len(thumbs) == 5  # window centre and width, axial, coronal, sagittal
    axial = float(thumbs[2].get_attribute("aria-valuenow"))
    thumbs[2].send_keys(Keys.PAGE_UP)
    wait_for(settled(lambda v: np.abs(v.astype(int) - before).mean() > 2), 20, interval=0.5,
             message="the axial plane moved")
    assert float(thumbs[2].get_attribute("aria-valuenow")) > axial

    # the controls drive the same scene: a window preset changes the CT planes, a camera preset the view
    grey_before = grey_mask(view_pixels(), lo=20).sum()
    browser.find_element("id", "preset-bone").click()
    wait_for(settled(lambda v: abs(grey_mask(v, lo=20).sum() - grey_before) > 0.05 * max(grey_before, 1)), 20,
             interval=0.5, message="the bone window on the CT planes")
    before = view_pixels().astype(int)
    browser.find_element("id", "view-anterior").click()
    wait_for(settled(lambda v: np.abs(v.astype(int) - before).mean() > 5), 20, interval=0.5,
             message="the anterior camera")
    browser.execute_script("document.getElementById('show-labels').click()")  # the switch's input
    wait_for(settled(lambda v: colour_mask(v, liver, cos_min=0.995).sum() < 50 and grey_mask(v, lo=20).sum() > 2000),
             20, interval=0.5, message="the labels hidden, the CT planes still shown")
    keep("web-view-bone-anterior-no-labels", page_image(browser))

    started = time.monotonic()
    assert server.stop(signal.SIGINT) == 0  # Ctrl-C: a clean stop
    assert time.monotonic() - started < 15
    assert "stopped" in server.proc.stderr.read()


def test_web_view_stops_on_sigterm(served):
    server = served("--no-bone")
    import urllib.request

    with urllib.request.urlopen(server.url, timeout=10) as response:  # it answers before it is stopped
        assert response.status == 200 and b"<html" in response.read().lower()
    assert server.stop(signal.SIGTERM) == 0


def test_view_without_display_points_to_the_web_view(sample_dir, monkeypatch, capsys):
    from viz3d.cli.main import main, make_parser

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["view", str(sample_dir / "ct.nii.gz")]) == 2
    assert "--web" in capsys.readouterr().err
    args = make_parser().parse_args(["view", "ct.nii.gz", "--web"])
    assert (args.host, args.port) == ("127.0.0.1", 8080)
    assert main(["view", "ct.nii.gz", "--web", "--port", "70000"]) == 2


def test_ssh_hint():
    from viz3d.outputs.web import ssh_hint

    assert ssh_hint(8080) == "ssh -L 8080:localhost:8080 user@server"


# --------------------------------------------------------------------------- notebooks
def test_notebook_falls_back_to_a_static_picture(monkeypatch):
    from PIL import Image

    import viz3d
    import viz3d.outputs.notebook as notebook

    meshes = [sphere("left organ", (-40, 0, 0), 12, RED), sphere("right organ", (40, 0, 0), 12, BLUE)]
    # as in a notebook without PyVista's trame backend installed
    monkeypatch.setattr(notebook, "NOTEBOOK_PACKAGES", {"viz3d_no_such_module": "trame-pyvista"})
    with pytest.warns(UserWarning, match="static picture.*trame-pyvista"):
        shown = viz3d.show_in_notebook(meshes, None, size=(200, 150))
    data = shown._repr_png_() if hasattr(shown, "_repr_png_") else shown.data
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.size == (200, 150)
        picture = np.asarray(im.convert("RGB"))
    assert colour_mask(picture, RED).sum() > 30 and colour_mask(picture, BLUE).sum() > 30
    with pytest.raises(Viz3dError, match="trame-pyvista"):
        viz3d.show_in_notebook(meshes, None, size=(200, 150), interactive=True)
    monkeypatch.undo()
    # outside a Jupyter kernel the picture is shown too, whatever is installed
    with pytest.warns(UserWarning, match="static picture"):
        viz3d.show_in_notebook(meshes, None, size=(64, 48))


def test_export_format_html_command(tmp_path, sample_dir):
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    base = [sys.executable, "-m", "viz3d", "export", str(sample_dir / "ct.nii.gz"), "--label",
            str(sample_dir / "label.nii.gz"), "--label-table", "totalsegmentator", "--labels", "1,5", "--no-bone",
            "--format", "html"]
    done = subprocess.run(base + ["--out", str(tmp_path / "scene.html")], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.html"]
    text = (tmp_path / "scene.html").read_text(encoding="utf-8")
    assert "OfflineLocalView.load" in text and "liver" in text and "spleen" in text
    # --out naming a folder: the page goes in it as scene.html
    done = subprocess.run(base + ["--out", str(tmp_path / "pages"), "-q"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "pages" / "scene.html").is_file()
    bad = subprocess.run(base + ["--out", str(tmp_path / "x.html"), "--combine"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, env=env)
    assert bad.returncode == 2 and "not for --format html" in bad.stderr and not (tmp_path / "x.html").exists()


def test_notebook_uses_pyvistas_trame_backend_in_a_kernel(monkeypatch):
    import types

    import viz3d
    import viz3d.outputs.notebook as notebook

    scene = viz3d.build_scene([sphere("organ", (0, 0, 0), 10, RED)], None, off_screen=True, interactive=False,
                              size=(120, 90))
    try:
        calls = []
        monkeypatch.setattr(notebook, "NOTEBOOK_PACKAGES", {"numpy": "numpy"})  # "everything installed"
        monkeypatch.setitem(sys.modules, "trame_pyvista", types.ModuleType("trame_pyvista"))
        monkeypatch.setattr(scene.plotter, "notebook", True)  # as PyVista sets it inside a Jupyter kernel
        monkeypatch.setattr(scene.plotter, "show", lambda **kwargs: calls.append(kwargs) or "the widget")
        assert viz3d.show_in_notebook(scene) == "the widget"
        assert calls == [{"jupyter_backend": "trame", "return_viewer": True, "window_size": (900, 600)}]
    finally:
        scene.close()


@needs_browser
def test_html_legend_names_every_structure_without_scrolling_beside_the_view(tmp_path, browser):
    """60 names in a 1100 x 720 page: every row of the HTML legend lies inside the page (columns
    and smaller type, no scroll bar), its first line says where the names came from, and the
    3-D view ends left of it, so the legend never covers a surface. Before, the box scrolled
    after 70 % of the page height and lay over the view."""
    from viz3d.outputs.web import write_html

    meshes = [sphere(f"structure number {i}", (8.0 * (i % 10) - 40, 0, 8.0 * (i // 10) - 24), 3,
                     (0.2 + 0.01 * i, 0.9 - 0.01 * i, 0.3), n=6) for i in range(60)]
    out = write_html(meshes, None, tmp_path / "many.html", view="anterior", names_source="sidecar case.json")
    browser.get(out.as_uri())
    wait_for(lambda: browser.execute_script("return document.querySelectorAll('canvas').length") > 0, 30,
             message="the vtk.js canvas")
    boxes = browser.execute_script(
        "return Array.from(document.querySelectorAll('#viz3d-legend .viz3d-row')).map(r => {"
        "const b = r.getBoundingClientRect(); return [b.top, b.bottom, b.left, b.right, r.textContent]; })")
    height, width = browser.execute_script("return [window.innerHeight, window.innerWidth]")
    assert len(boxes) == 61 and boxes[0][4] == "names: sidecar case.json"
    assert all(0 <= top and bottom <= height and 0 <= left and right <= width for top, bottom, left, right, _ in boxes)
    legend = browser.execute_script("return document.getElementById('viz3d-legend').getBoundingClientRect().left")
    view = browser.execute_script("return document.querySelector('canvas').getBoundingClientRect().right")
    assert view <= legend
