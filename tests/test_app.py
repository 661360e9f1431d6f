"""The web app: driven in headless Chromium it shows what `instantrestore restore` writes; bad inputs get the
command line's one-line message and the page keeps working; the server stops cleanly.

The page's handler is also called directly (no browser) for the other bad inputs.
"""

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlsplit
from pathlib import Path

import numpy as np
import pytest

from instantrestore import imageio
from instantrestore.cli import main
from instantrestore.imageio import read_image, write_image

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# The flags that let Chromium start on this closed network without reaching out.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1300"]
PHOTO = "data/real-lq/whole_imgs/Blake_Lively.jpg"
REFERENCES = ["data/frll/images/005/005_01.jpg", "data/frll/images/005/005_02.jpg"]
TIMEOUT = 300  # seconds to start the app or run one restore: generous, for a 2-core machine under load


def _no_op_progress(*args, **kwargs) -> None:
    pass


# ------------------------------------------------------------------------- the handler, without a browser
@pytest.fixture(scope="module")
def page_app():
    pytest.importorskip("gradio")
    from instantrestore.app import RestoreApp

    app = RestoreApp()
    yield app
    app.close()
    assert not app.workdir.exists()


def _restore(app, photo, refs=(), session=None, kind="auto-detect", model="bicubic", num_refs=4, detail_strength=1):
    return app.restore(str(photo), kind, [str(r) for r in refs], model, num_refs, detail_strength, False, 1, 0, session,
                       progress=_no_op_progress)


def test_bad_inputs_get_the_cli_line(page_app, shared, tmp_path, monkeypatch):
    y, x = np.mgrid[0:200, 0:300]
    noface = write_image(tmp_path / "noface.png", np.stack([x % 256, y % 256, (x * y) % 256], 2).astype(np.uint8))
    status, comparison, *_ = _restore(page_app, noface)
    assert status == "error: noface.png: no face found" and comparison is None

    # a reference with no face: the command line's lines, then a blind restoration
    photo = shared / PHOTO
    status, comparison, _, used, _, _ = _restore(page_app, photo, refs=[noface])
    assert status.splitlines()[1:] == ["references: reference 1: no face found; skipped",
                                       "warning: no usable reference face; restoring blind"]
    assert status.startswith("restored Blake_Lively.jpg") and comparison is not None and used == []

    monkeypatch.setattr(imageio, "MAX_PIXELS", 1000)
    status, *_ = _restore(page_app, photo)
    assert status == "error: Blake_Lively.jpg: 700x464 is larger than 1000 pixels; refusing to decode"



def test_a_typed_model_path_is_refused(page_app, shared, tmp_path, monkeypatch):
    """With --share anyone can press Restore: the page must not open a file a request names."""
    import gradio as gr

    from instantrestore import app as app_module

    opened = []
    monkeypatch.setattr(app_module, "load_restorer", lambda *args, **kwargs: opened.append(args) or None)
    for typed in (str(tmp_path / "no-such-model"), "/etc/passwd", "gfpgan-v1.4"):
        status, comparison, *_ = _restore(page_app, shared / PHOTO, model=typed)
        assert status.startswith(f"error: model {typed!r} is not offered by this page") and comparison is None
        assert "\n" not in status
    assert opened == []
    dropdowns = [block for block in page_app.build().blocks.values() if isinstance(block, gr.Dropdown)]
    assert [d.choices for d in dropdowns] == [[(m, m) for m in page_app.models]]
    with pytest.raises(gr.Error):  # gradio itself refuses a value the dropdown does not offer
        dropdowns[0].preprocess("/etc/passwd")


def test_uploads_are_capped(monkeypatch, capsys):
    gr = pytest.importorskip("gradio")
    from instantrestore.app import MAX_UPLOAD

    launched = {}

    def launch(page, **kwargs):
        launched.update(kwargs)
        raise OSError("stopped by the test")

    monkeypatch.setattr(gr.Blocks, "launch", launch)
    assert main(["app", "--model", "bicubic"]) == 2 and "stopped by the test" in capsys.readouterr().err
    assert launched["max_file_size"] == MAX_UPLOAD


def test_models_named_at_start_are_offered(tmp_path):
    pytest.importorskip("gradio")
    from instantrestore.app import RestoreApp

    app = RestoreApp(["runs/mine/final", "bicubic"], workdir=str(tmp_path))
    try:
        assert app.models[:3] == ["runs/mine/final", "bicubic", "default"] and app.models.count("bicubic") == 1
    finally:
        app.close()


def test_reference_cache_is_kept_downloaded_and_reloaded(page_app, shared, tmp_path):
    refs = [shared / r for r in REFERENCES]
    status, _, faces, used, downloads, session = _restore(page_app, shared / PHOTO, refs)
    assert status.startswith("restored") and len(used) == 2 and session is not None
    assert [caption.startswith("face ") and "identity" in caption for _, caption in faces] == [True] * len(faces)
    cache_file = next(Path(f) for f in downloads if f.endswith(".safetensors"))

    status, _, _, _, downloads_again, _ = _restore(page_app, shared / PHOTO, refs, session)
    assert "reused (not encoded again)" in status
    assert any(f.endswith(".safetensors") for f in downloads_again)

    uploaded = shutil.copy(cache_file, tmp_path / "grandma.safetensors")
    status, _, _, used, _, _ = _restore(page_app, shared / PHOTO, [uploaded])
    assert "2 faces from the saved cache grandma.safetensors" in status and len(used) == 2
    report = json.loads(Path(next(f for f in downloads if f.endswith("report.json"))).read_text())
    assert report["inputs"][0]["input"] == "Blake_Lively.jpg" and report["references"]["used"] == 2


def test_model_choices_are_what_loads_offline(page_app, tmp_path, monkeypatch):
    from instantrestore.app import model_choices

    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path))
    assert model_choices() == ["default", "gfpgan", "bicubic"]
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "GFPGANv1.4.pth").write_bytes(b"present")  # official weights put in place by hand
    (tmp_path / "weights" / "RealESRGAN_x2plus.pth").write_bytes(b"present")  # a background upsampler: not a face model
    assert model_choices(["runs/mine/final"]) == ["runs/mine/final", "default", "gfpgan", "bicubic", "gfpgan-v1.4"]


def test_missing_gradio_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # makes `import gradio` fail
    monkeypatch.delitem(sys.modules, "instantrestore.app", raising=False)
    assert main(["app"]) == 2
    assert "pip install 'instantrestore[app]'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ in a real browser
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_port_in_use_is_one_line(page_app, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["app", "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot serve on 127.0.0.1:") and len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`instantrestore app` in its own process; at the end, SIGTERM must stop it cleanly."""
    pytest.importorskip("gradio")
    tmp = tmp_path_factory.mktemp("app")
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp / "gradio")}
    log = tmp / "app.log"  # a file, not a pipe: a pipe nobody reads until the end could fill and stall the app
    with log.open("w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "instantrestore.cli", "app", "--port", str(port)],
                                   env=env, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                pytest.fail(f"the app did not start:\n{log.read_text()}")
            time.sleep(0.5)
    yield url
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail("the app did not stop within 60 s of SIGTERM")
    output = log.read_text()
    assert process.returncode == 0, output
    assert "Traceback" not in output, output
    assert not list(tmp.glob("instantrestore-app-*")), "the app left its work folder behind"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    pytest.importorskip("selenium")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = "no /usr/bin/chromium and /usr/bin/chromedriver (make browser installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # with the driver's path below: no Selenium Manager download
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request the page makes
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()  # ends chromium and chromedriver


def _upload(driver, element_id: str, paths) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    selector = f"#{element_id} input[type=file]"  # the page renders it once its scripts have run
    upload = WebDriverWait(driver, 30).until(lambda d: d.find_element(By.CSS_SELECTOR, selector))
    upload.send_keys("\n".join(map(str, paths)))


def _press_restore_and_wait(driver) -> str:
    """Clear the status, press Restore, and return the status once the page has answered."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    status = driver.find_element(By.CSS_SELECTOR, "#status textarea")
    driver.execute_script("arguments[0].value = ''", status)
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.CSS_SELECTOR, "#restore").is_enabled())
    driver.find_element(By.CSS_SELECTOR, "#restore").click()
    return WebDriverWait(driver, TIMEOUT).until(lambda d: status.get_attribute("value"))


def _fetch_image(url: str) -> np.ndarray:
    from PIL import Image

    with urllib.request.urlopen(url, timeout=30) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))


def test_browser_shows_what_the_cli_writes(served, browser, shared, tmp_path):
    from selenium.webdriver.common.by import By

    photo, refs = shared / PHOTO, [shared / r for r in REFERENCES]
    browser.get(served)
    _upload(browser, "photo", [photo])
    _upload(browser, "refs", refs)
    status = _press_restore_and_wait(browser)
    assert status.startswith("restored Blake_Lively.jpg"), status

    shown = [img.get_attribute("src") for img in browser.find_elements(By.CSS_SELECTOR, "#comparison img")]
    after = next(src for src in shown if src.endswith("/Blake_Lively.jpg"))  # the restored photo, as written
    assert main(["restore", str(photo), "--refs", *map(str, refs), "-o", str(tmp_path), "-q"]) == 0
    written = read_image(tmp_path / "restored_imgs" / "Blake_Lively.jpg")
    shown_after = _fetch_image(after)
    assert shown_after.shape == written.shape
    # within JPEG rounding of what the command line wrote; the input itself is far from it
    assert np.abs(shown_after.astype(int) - written).mean() < 1.0
    assert np.abs(read_image(photo).astype(int) - written).mean() > 2.0

    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#downloads a")]
    report_url = next(link for link in links if link.endswith("/report.json"))
    with urllib.request.urlopen(report_url, timeout=30) as response:
        report = json.loads(response.read())
    cli_report = json.loads((tmp_path / "report.json").read_text())
    assert report["inputs"][0]["identity"] == cli_report["inputs"][0]["identity"]
    assert any(link.endswith("/references.safetensors") for link in links)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#faces img")) == len(cli_report["inputs"][0]["identity"])

    requested = {json.loads(entry["message"])["message"]["params"]["request"]["url"]
                 for entry in browser.get_log("performance") if '"Network.requestWillBeSent"' in entry["message"]}
    network = {url for url in requested if urlsplit(url).scheme in ("http", "https", "ws", "wss")}
    outside = {url for url in network if urlsplit(url).netloc != urlsplit(served).netloc}
    assert network and not outside, f"the page fetched from elsewhere: {sorted(outside)[:5]}"

    if os.environ.get("INSTANTRESTORE_SCREENSHOT"):  # the README's screenshot: `make screenshot`
        _save_screenshot(browser, Path(os.environ["INSTANTRESTORE_SCREENSHOT"]))


def _save_screenshot(driver, path: Path) -> None:
    from PIL import Image

    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=128, dither=Image.Dither.NONE).save(path, optimize=True)  # well under 300 KB


def test_browser_bad_upload_then_next_photo(served, browser, shared, tmp_path, capsys):
    from selenium.webdriver.common.by import By

    text = tmp_path / "grandma.jpg"
    text.write_text("not a photo\n")
    browser.get(served)
    _upload(browser, "photo", [text])
    status = _press_restore_and_wait(browser)
    assert main(["restore", str(text), "-o", str(tmp_path / "out"), "-q"]) == 1
    cli_line = capsys.readouterr().err.splitlines()[0]  # error: /tmp/.../grandma.jpg: not an image file ...
    assert "not an image" in cli_line and status == cli_line.replace(f"{tmp_path}{os.sep}", "")

    # the app still answers: clear the upload, restore a real photo
    browser.find_element(By.CSS_SELECTOR, "#photo button[aria-label='Clear']").click()
    _upload(browser, "photo", [shared / PHOTO])
    status = _press_restore_and_wait(browser)
    assert status.startswith("restored Blake_Lively.jpg"), status
