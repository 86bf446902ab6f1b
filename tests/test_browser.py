"""The web page in a real browser (headless Chromium) against the real local stack.

Drives web/ with Playwright against the session's local stack (conftest.local_stack:
`python -m scripts.local_stack` on free ports, stopped with Ctrl-C at the end and
checked to leave nothing running). Screenshots go to test-artifacts/ at the repository
root.

Needs /usr/bin/chromium (or CHROMIUM=path; scripts/setup.sh installs Debian's); never
downloads a browser.
"""
from __future__ import annotations

import base64
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.stack import free_port

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
WAIT_MS = 60_000
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}

expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def health(local_stack) -> dict:
    return local_stack.get("/health")


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run scripts/setup.sh (installs Debian's chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, local_stack):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and problems.append(f"console: {msg.text}"))
    page.goto(local_stack.page)
    expect(page.locator("#model-info")).to_contain_text("px")  # /health answered
    page.problems = problems  # checked by tests that expect a clean console
    yield page
    context.close()


# ---- helpers ------------------------------------------------------------------------

def png_of(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:60]
    return Image.open(io.BytesIO(base64.b64decode(src[len(prefix):])))


def check_image(img, size: int) -> str:
    """The <img> decoded in the browser to a size x size image with real content; returns its src."""
    expect(img).to_be_visible()
    page = img.page
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    assert img.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [size, size]
    src = img.get_attribute("src")
    pixels = np.asarray(png_of(src).convert("RGB"), dtype=np.float64)
    assert pixels.shape == (size, size, 3)
    assert pixels.std() > 2.0, "the image is blank"
    return src


def reconstruct(page, photo: Path):
    page.set_input_files("#recon-file", str(photo))
    expect(page.locator("#recon-output")).to_be_visible()


def sample(page, seed: int | None, n: int) -> list[str]:
    page.fill("#sample-seed", "" if seed is None else str(seed))
    page.fill("#sample-n", str(n))
    with page.expect_response(lambda r: r.url.endswith("/sample") and r.request.method == "POST"):
        page.click("#sample-button")  # the grid empties when the request starts
    images = page.locator("#sample-grid img")
    expect(images).to_have_count(n)
    expect(page.locator("#sample-button")).to_be_enabled()
    return [images.nth(i).get_attribute("src") for i in range(n)]


def drop_file(page, selector: str, path: Path, mime: str = "image/jpeg"):
    """Drag-and-drop a file onto an element, the way a browser delivers it."""
    data = base64.b64encode(path.read_bytes()).decode()
    transfer = page.evaluate_handle(
        """([data, name, mime]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: mime}));
            return transfer;
        }""", [data, path.name, mime])
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def morph(page, a: Path, b: Path, steps: int):
    page.set_input_files("#morph-a", str(a))
    drop_file(page, "#morph-b-drop", b)
    page.fill("#morph-steps", str(steps))
    page.click("#morph-button")
    expect(page.locator("#morph-strip img")).to_have_count(steps)


def no_horizontal_overflow(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


# ---- tests --------------------------------------------------------------------------

def test_reconstruct_real_photo(page, health, real_photos):
    size = health["model"]["image_size"]
    reconstruct(page, real_photos[0])
    seen = check_image(page.locator("#recon-input"), size)
    recon = check_image(page.locator("#recon-result"), size)
    assert seen != recon
    psnr = float(page.locator("#recon-psnr").inner_text())
    assert 5 < psnr < 60
    expect(page.locator("#recon-error")).to_be_hidden()
    assert not page.problems, page.problems


def test_sample_same_seed_same_cars(page, health):
    size, n = health["model"]["image_size"], 4
    first = sample(page, 1234, n)
    for i in range(n):
        check_image(page.locator("#sample-grid img").nth(i), size)
    assert len(set(first)) == n, "the samples are all the same"
    assert sample(page, 1234, n) == first, "the same seed gave different cars"
    assert sample(page, 1235, n) != first, "a different seed gave the same cars"
    # No seed: the server picks one, and the page shows it so the result can be reproduced.
    random_cars = sample(page, None, 2)
    seed = page.input_value("#sample-seed")
    assert seed.isdigit()
    assert sample(page, int(seed), 2) == random_cars
    assert not page.problems, page.problems


def test_morph_two_photos(page, health, real_photos):
    size, steps = health["model"]["image_size"], 5
    a, b = real_photos[0], real_photos[-1]
    assert a.read_bytes() != b.read_bytes()
    morph(page, a, b, steps)
    frames = [check_image(page.locator("#morph-strip img").nth(i), size) for i in range(steps)]
    assert frames[0] != frames[-1]
    view, slider = page.locator("#morph-view"), page.locator("#morph-slider")
    assert slider.get_attribute("max") == str(steps - 1)
    assert check_image(view, size) == frames[0]
    slider.focus()
    page.keyboard.press("End")  # scrub to the last frame, as a user would
    expect(view).to_have_attribute("src", frames[-1])
    expect(page.locator("#morph-frame")).to_have_text(f"{steps} / {steps}")
    page.keyboard.press("ArrowLeft")
    expect(view).to_have_attribute("src", frames[-2])
    assert not page.problems, page.problems


def test_busy_indicator_while_a_request_runs(page):
    held = []
    page.route("**/sample", lambda route: held.append(route))  # hold the request until the busy state is checked
    page.click("#sample-button")
    expect(page.locator("#sample-button")).to_be_disabled()
    expect(page.locator("#sample-status")).to_be_visible()
    expect(page.locator("#sample")).to_have_attribute("aria-busy", "true")
    page.screenshot(path=str(ARTIFACTS / "busy.png"))
    deadline = time.monotonic() + 30
    while not held and time.monotonic() < deadline:  # the route callback runs on Playwright's events
        page.wait_for_timeout(50)
    held[0].continue_()
    expect(page.locator("#sample-grid img")).to_have_count(8)
    expect(page.locator("#sample-status")).to_be_hidden()
    expect(page.locator("#sample-button")).to_be_enabled()


def test_non_image_shows_the_api_message(page, local_stack, tmp_path):
    text_file = tmp_path / "not-a-car.txt"
    text_file.write_text("this is not a photo of a car\n")
    status, body = local_stack.post_form("/reconstruct", {"image": text_file.read_bytes()})
    assert status == 400
    message = body["error"]["message"]
    page.set_input_files("#recon-file", str(text_file))
    error = page.locator("#recon-error")
    expect(error).to_be_visible()
    assert message.lower() in error.inner_text().lower()
    expect(page.locator("#recon-output")).to_be_hidden()
    expect(page.locator("#recon-file")).to_be_enabled()  # busy state cleared
    page.screenshot(path=str(ARTIFACTS / "error.png"))


def test_friendly_messages_when_the_api_misbehaves(browser, local_stack):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    # No API at all: config.js without an address and no ?api=.
    page.route("**/config.js", lambda route: route.fulfill(body="", content_type="text/javascript"))
    page.goto(local_stack.page)
    expect(page.locator("#error")).to_contain_text("does not know where the API is")
    expect(page.locator("#sample-button")).to_be_disabled()
    page.unroute("**/config.js")
    # An address where nothing listens.
    page.goto(f"{local_stack.page}?api=http://127.0.0.1:{free_port()}/dev")
    expect(page.locator("#error")).to_contain_text("Could not reach the service")
    # A gateway error page instead of JSON.
    page.route("**/sample", lambda route: route.fulfill(status=502, body="<html>Bad Gateway</html>",
                                                        content_type="text/html"))
    page.goto(local_stack.page)
    page.click("#sample-button")
    expect(page.locator("#sample-error")).to_contain_text("unexpected reply (HTTP 502)")
    expect(page.locator("#sample-button")).to_be_enabled()
    context.close()


def test_a_wrong_or_missing_api_address_sends_nothing_and_says_so(browser, local_stack, real_photos):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    sent = []
    page.on("request", lambda request: request.method == "POST" and sent.append(request.url))
    # No address: a photo dropped anyway goes nowhere, and the controls stay off.
    page.route("**/config.js", lambda route: route.fulfill(body="", content_type="text/javascript"))
    page.goto(local_stack.page)
    expect(page.locator("#error")).to_contain_text("does not know where the API is")
    drop_file(page, "#recon-drop", real_photos[0])
    page.wait_for_timeout(500)
    assert not sent
    expect(page.locator("#recon-file")).to_be_disabled()
    page.unroute("**/config.js")
    # An address without a scheme would be a path on the page's own server.
    page.goto(f"{local_stack.page}?api=127.0.0.1:{free_port()}/dev")
    expect(page.locator("#error")).to_contain_text("must start with http:// or https://")
    expect(page.locator("#sample-button")).to_be_disabled()
    # An address where a server answers, but not this API (here: the page's own server, a 404).
    page.goto(f"{local_stack.page}?api={local_stack.page}nothing-here")
    expect(page.locator("#error")).to_contain_text("No Car VAE API answers at")
    expect(page.locator("#error")).to_contain_text("HTTP 404")
    assert not sent
    context.close()


def test_the_page_recovers_and_explains_server_failures(browser, local_stack, real_photos):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    # /health fails once (a cold start that timed out, say); the next request that works clears the banner.
    failures = {"health": 1}

    def health(route):
        if failures["health"]:
            failures["health"] -= 1
            route.fulfill(status=503, content_type="application/json", body=json.dumps(
                {"error": {"code": "model_unavailable", "message": "the model is not available: S3 is slow"},
                 "request_id": "r-1"}))
        else:
            route.continue_()

    page.route("**/health", health)
    page.goto(local_stack.page)
    expect(page.locator("#error")).to_contain_text("The model is not available")
    expect(page.locator("#model-info")).to_have_text("Model: unavailable")
    sample(page, 3, 2)
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#model-info")).to_contain_text("px")

    # A server failure asks the user to quote the request id: the page shows it.
    page.route("**/sample", lambda route: route.fulfill(status=500, content_type="application/json", body=json.dumps(
        {"error": {"code": "internal_error", "message": "the server failed; quote the request_id when reporting it"},
         "request_id": "req-abc-123"})))
    page.click("#sample-button")
    expect(page.locator("#sample-error")).to_contain_text("(request id: req-abc-123)")
    page.unroute("**/sample")

    # Of two photos, the one the service cannot read is named, before anything is uploaded.
    page.set_input_files("#morph-a", str(real_photos[0]))
    page.set_input_files("#morph-b", files=[{"name": "IMG_0001.HEIC", "mimeType": "image/heic",
                                             "buffer": real_photos[1].read_bytes()}])  # the type says HEIC
    page.click("#morph-button")
    expect(page.locator("#morph-error")).to_contain_text("The second car's photo is HEIC")
    context.close()


def test_keyboard_users_keep_their_place(page):
    # The slider is named by its label, and focus comes back to the button a request disabled.
    expect(page.get_by_label("Temperature")).to_have_attribute("type", "range")
    page.focus("#sample-button")
    with page.expect_response(lambda r: r.url.endswith("/sample")):
        page.keyboard.press("Enter")
    expect(page.locator("#sample-grid img")).to_have_count(8)
    expect(page.locator("#sample-button")).to_be_focused()


@pytest.mark.parametrize("name,viewport", [("desktop", DESKTOP), ("phone", PHONE)])
def test_layout_screenshots(page, real_photos, name, viewport):
    page.set_viewport_size(viewport)
    reconstruct(page, real_photos[1])
    sample(page, 7, 8)
    morph(page, real_photos[1], real_photos[4], 8)
    page.locator("#morph-slider").fill("3")
    expect(page.locator("#morph-frame")).to_have_text("4 / 8")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    overflow = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert no_horizontal_overflow(page), f"the page is wider than the window: {overflow}"
    assert not page.problems, page.problems
