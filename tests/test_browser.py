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

from tests.support.stack import free_port

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


def hold(page, pattern: str) -> list:
    """Holds the requests matching pattern (for checking busy states); continue_() releases them."""
    held = []
    page.route(pattern, lambda route: held.append(route))
    return held


def release(page, held: list):
    deadline = time.monotonic() + 30
    while not held and time.monotonic() < deadline:  # the route callback runs on Playwright's events
        page.wait_for_timeout(50)
    held.pop(0).continue_()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def check_composite(link, frames: list[str], cols: int, size: int, gap: int = 4):
    """A download link holding the frames laid out on one PNG, cols to a row with a gap."""
    expect(link).to_be_visible()
    whole = png_of(link.get_attribute("href"))
    rows = -(-len(frames) // cols)
    assert whole.size == (cols * size + (cols - 1) * gap, rows * size + (rows - 1) * gap)
    for i in (0, len(frames) - 1):
        x, y = (i % cols) * (size + gap), (i // cols) * (size + gap)
        assert np.array_equal(pixels(whole.crop((x, y, x + size, y + size))), pixels(png_of(frames[i])))


# WCAG contrast of every visible text on the page (disabled controls are exempt), as "where: ratio".
LOW_CONTRAST_JS = """() => {
    const rgb = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
    const lum = (c) => c.slice(0, 3).map((v) => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4)
                        .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
    const background = (el) => {
        for (; el; el = el.parentElement) {
            const c = rgb(getComputedStyle(el).backgroundColor);
            if (c.length === 3 || c[3] > 0.9) return c;
        }
        return [255, 255, 255];
    };
    const low = [];
    const check = (where, color, el) => {
        const [hi, lo] = [lum(rgb(color)), lum(background(el))].sort((x, y) => y - x);
        const ratio = (hi + 0.05) / (lo + 0.05);
        if (ratio < 4.5) low.push(`${where}: ${ratio.toFixed(2)}`);
    };
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node; (node = walker.nextNode());) {
        const el = node.parentElement;
        if (!node.textContent.trim() || !el.checkVisibility() || el.closest(":disabled, [aria-hidden=true]")) continue;
        check(`${el.id || el.className || el.tagName} "${node.textContent.trim().slice(0, 30)}"`,
              getComputedStyle(el).color, el);
    }
    for (const input of document.querySelectorAll("input[placeholder]:not(:disabled)")) {
        check(`${input.id} placeholder`, getComputedStyle(input, "::placeholder").color, input);
    }
    return low;
}"""


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
    # The reconstruction can be saved, named after the photo.
    link = page.locator("#recon-download")
    assert link.get_attribute("href") == recon
    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename == f"{real_photos[0].stem}-reconstruction.png"
    assert not page.problems, page.problems
    # A photo that fails keeps the previous result on screen, and the error says whose it is.
    page.set_input_files("#recon-file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"no car"}])
    expect(page.locator("#recon-error")).to_contain_text("The result below is still the previous photo's.")
    expect(page.locator("#recon-output")).to_be_visible()
    assert page.locator("#recon-result").get_attribute("src") == recon


def test_sample_seeds_temperature_and_download(page, health):
    size, n = health["model"]["image_size"], 4
    first = sample(page, 1234, n)
    for i in range(n):
        check_image(page.locator("#sample-grid img").nth(i), size)
    assert len(set(first)) == n, "the samples are all the same"
    expect(page.locator("#sample-seed-used")).to_have_text("1234")
    assert sample(page, 1234, n) == first, "the same seed gave different cars"
    assert sample(page, 1235, n) != first, "a different seed gave the same cars"
    # No seed typed: each Generate draws new cars, and shows the seed it used, to reproduce them.
    random_cars = sample(page, None, 2)
    seed = page.locator("#sample-seed-used").inner_text()
    assert seed.isdigit() and page.input_value("#sample-seed") == ""
    again = sample(page, None, 2)
    assert again != random_cars, "Generate without a seed repeated the cars"
    assert page.locator("#sample-seed-used").inner_text() != seed
    assert sample(page, int(seed), 2) == random_cars
    # All of them download as one grid.
    check_composite(page.locator("#sample-download"), random_cars, 2, size)
    assert page.locator("#sample-download").get_attribute("download") == f"cars-seed-{seed}-temperature-1.0.png"
    # The temperature slider redraws the cars shown (same seed) once it settles: one request.
    expect(page.locator("#sample-temp-hint")).to_contain_text("lower stays closer to typical cars")
    sent = []
    page.on("request", lambda r: r.url.endswith("/sample") and sent.append(json.loads(r.post_data)))
    page.fill("#sample-seed", "")  # the redraw keeps the seed of the cars shown
    page.focus("#sample-temp")
    with page.expect_response(lambda r: r.url.endswith("/sample")):
        for _ in range(3):
            page.keyboard.press("ArrowLeft")
    expect(page.locator("#sample-temp-used")).to_have_text("0.7")
    expect(page.locator("#sample-temp")).to_be_focused()  # focus came back after the request
    page.wait_for_timeout(500)
    assert sent == [{"temperature": 0.7, "n": 2, "seed": int(seed)}]
    assert page.locator("#sample-seed-used").inner_text() == seed
    redrawn = [img.get_attribute("src") for img in page.locator("#sample-grid img").all()]
    assert len(redrawn) == 2 and redrawn != random_cars
    assert not page.problems, page.problems


def test_morph_two_photos(page, health, real_photos):
    size, steps = health["model"]["image_size"], 5
    a, b = real_photos[0], real_photos[-1]
    assert a.read_bytes() != b.read_bytes()
    button, hint, error = page.locator("#morph-button"), page.locator("#morph-hint"), page.locator("#morph-error")
    expect(button).to_be_disabled()
    expect(hint).to_have_text("Choose both cars to morph.")
    # A file the service cannot read is refused as soon as it is chosen, in the morph panel.
    page.set_input_files("#morph-a", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"no car"}])
    expect(error).to_have_text("The first car's photo is not a JPEG, PNG or WebP image.")
    page.set_input_files("#morph-a", str(a))
    expect(error).to_be_hidden()
    expect(hint).to_have_text("Choose the second car to morph.")
    page.set_input_files("#morph-b", files=[{"name": "IMG_0001.HEIC", "mimeType": "image/heic",
                                             "buffer": b.read_bytes()}])
    expect(error).to_contain_text("The second car's photo is HEIC")
    expect(button).to_be_disabled()
    # One that only the service finds unreadable: its message, in the page's words.
    page.set_input_files("#morph-b", files=[{"name": "broken.jpg", "mimeType": "image/jpeg", "buffer": b"no car"}])
    expect(hint).to_be_hidden()
    page.click("#morph-button")
    expect(error).to_have_text("The second car's photo: the file is not a JPEG, PNG or WebP image.")
    page.problems.clear()  # the console's line for that 400, expected

    morph(page, a, b, steps)
    expect(error).to_be_hidden()
    frames = [check_image(page.locator("#morph-strip img").nth(i), size) for i in range(steps)]
    assert frames[0] != frames[-1]
    view, slider = page.locator("#morph-view"), page.locator("#morph-slider")
    # The slider counts frames from 1, like the text beside it.
    assert (slider.get_attribute("min"), slider.get_attribute("max")) == ("1", str(steps))
    assert check_image(view, size) == frames[0]
    slider.focus()
    page.keyboard.press("End")  # scrub to the last frame, as a user would
    expect(view).to_have_attribute("src", frames[-1])
    expect(page.locator("#morph-frame")).to_have_text(f"{steps} / {steps}")
    page.keyboard.press("ArrowLeft")
    expect(view).to_have_attribute("src", frames[-2])
    expect(page.locator("#morph-frame")).to_have_text(f"{steps - 1} / {steps}")
    assert slider.input_value() == str(steps - 1)
    expect(slider).to_have_attribute("aria-valuetext", f"frame {steps - 1} of {steps}")
    expect(view).to_have_attribute("alt", f"Morph frame {steps - 1} of {steps}")
    # All frames download as one strip.
    check_composite(page.locator("#morph-download"), frames, steps, size)
    assert page.locator("#morph-download").get_attribute("download") == f"morph-{a.stem}-to-{b.stem}.png"
    # Another car makes the morph on screen out of date.
    page.set_input_files("#morph-a", str(real_photos[1]))
    expect(page.locator("#morph-output")).to_be_hidden()
    assert not page.problems, page.problems


def test_busy_indicator_while_a_request_runs(page):
    held = hold(page, "**/sample")  # hold the request until the busy state is checked
    page.click("#sample-button")
    expect(page.locator("#sample-button")).to_be_disabled()
    expect(page.locator("#sample-status")).to_be_visible()
    expect(page.locator("#sample")).to_have_attribute("aria-busy", "true")
    page.screenshot(path=str(ARTIFACTS / "busy.png"))
    release(page, held)
    expect(page.locator("#sample-grid img")).to_have_count(8)
    expect(page.locator("#sample-status")).to_be_hidden()
    expect(page.locator("#sample-button")).to_be_enabled()


def test_non_image_shows_the_api_message(page, health, local_stack, tmp_path):
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
    # Too large to send, and not an image the browser can read: said so, not the size limit.
    junk = tmp_path / "huge.jpg"
    junk.write_bytes(np.random.default_rng(0).bytes(5 * 1024 * 1024))
    page.set_input_files("#recon-file", str(junk))
    expect(error).to_have_text("The photo is not a readable image. Please choose a JPEG, PNG or WebP photo.")
    # A small file of more pixels than the service takes is shrunk in the browser too.
    side = int(health["limits"]["max_pixels"] ** 0.5) + 1
    many_pixels = tmp_path / "many-pixels.png"
    Image.new("1", (side, side), 1).save(many_pixels)
    assert many_pixels.stat().st_size < 2 * 1024 * 1024
    page.set_input_files("#recon-file", str(many_pixels))
    expect(page.locator("#recon-output")).to_be_visible()
    expect(error).to_be_hidden()


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

    # Of two photos, the one the service cannot read is named as soon as it is chosen.
    page.set_input_files("#morph-a", str(real_photos[0]))
    page.set_input_files("#morph-b", files=[{"name": "IMG_0001.HEIC", "mimeType": "image/heic",
                                             "buffer": real_photos[1].read_bytes()}])  # the type says HEIC
    expect(page.locator("#morph-error")).to_contain_text("The second car's photo is HEIC")
    expect(page.locator("#morph-button")).to_be_disabled()
    context.close()


def test_errors_clear_when_the_service_is_back(browser, local_stack, real_photos):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.clock.install()  # the page's retry timer, fast-forwarded below

    def down(route):
        route.abort("connectionrefused")

    # The page is opened while the API is down: it keeps asking /health, and clears itself when it answers.
    page.route("**/health", down)
    page.route("**/sample", down)
    page.goto(local_stack.page)
    expect(page.locator("#error")).to_contain_text("Could not reach the service")
    expect(page.locator("#model-info")).to_have_text("Model: unavailable")
    page.click("#sample-button")
    expect(page.locator("#sample-error")).to_contain_text("Could not reach the service")
    page.unroute("**/health")
    page.unroute("**/sample")
    page.clock.fast_forward(10_000)
    expect(page.locator("#model-info")).to_contain_text("px")
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#sample-error")).to_be_hidden()  # every panel's, not only the banner
    # Connected: a request that gets through in one panel clears another's "could not reach".
    page.route("**/sample", down)
    page.click("#sample-button")
    expect(page.locator("#sample-error")).to_contain_text("Could not reach the service")
    page.unroute("**/sample")
    reconstruct(page, real_photos[0])
    expect(page.locator("#sample-error")).to_be_hidden()
    context.close()


def test_phone_morph_zones_reduced_motion_and_busy_drops(browser, local_stack, real_photos):
    context = browser.new_context(viewport={"width": 390, "height": 844}, reduced_motion="reduce")
    page = context.new_page()
    page.goto(local_stack.page)
    expect(page.locator("#model-info")).to_contain_text("px")
    # A long file name is cut with an ellipsis: both drop zones keep one height.
    photo = real_photos[0].read_bytes()
    page.set_input_files("#morph-a", files=[{"name": "a-very-long-file-name-straight-off-the-phone-" * 3 + ".jpg",
                                             "mimeType": "image/jpeg", "buffer": photo}])
    page.set_input_files("#morph-b", files=[{"name": "b.jpg", "mimeType": "image/jpeg", "buffer": photo}])
    heights = [page.locator(f"#morph-{s}-drop").bounding_box()["height"] for s in "ab"]
    assert heights[0] == heights[1], heights
    name = page.locator("#morph-a-drop small")
    assert name.evaluate("el => getComputedStyle(el).textOverflow") == "ellipsis"
    assert name.evaluate("el => el.scrollWidth > el.clientWidth")
    assert no_horizontal_overflow(page)
    # A busy panel says why a dropped file is not taken; the spinner keeps still for reduced motion.
    held = hold(page, "**/reconstruct")
    page.set_input_files("#recon-file", str(real_photos[1]))
    status = page.locator("#recon-status")
    expect(status).to_contain_text("Working")
    assert page.locator("#recon-status .spinner").evaluate("el => getComputedStyle(el).animationName") == "none"
    drop_file(page, "#recon-drop", real_photos[2])
    expect(status).to_contain_text("drop it again")
    release(page, held)
    expect(page.locator("#recon-output")).to_be_visible()
    expect(status).to_be_hidden()
    context.close()


def test_keyboard_and_screen_reader_users(page, health):
    # The slider is named by its label, and focus comes back to the button a request disabled.
    expect(page.get_by_label("Temperature")).to_have_attribute("type", "range")
    page.focus("#sample-button")
    with page.expect_response(lambda r: r.url.endswith("/sample")):
        page.keyboard.press("Enter")
    expect(page.locator("#sample-grid img")).to_have_count(8)
    expect(page.locator("#sample-button")).to_be_focused()
    # ... but never out of another panel the user has gone to meanwhile (a click, or the keyboard).
    for leave in (lambda: page.click("#morph-title"), lambda: page.focus("#morph-steps")):
        held = hold(page, "**/sample")
        page.click("#sample-button")
        leave()
        release(page, held)
        page.unroute("**/sample")
        expect(page.locator("#sample-button")).to_be_enabled()
        expect(page.locator("#sample-button")).not_to_be_focused()
        assert page.evaluate("document.activeElement.closest('#sample') === null")
    # "Working…" and the results are announced.
    for live in ("#recon-status", "#sample-status", "#morph-status", "#recon-output", "#sample-grid", "#morph-strip"):
        expect(page.locator(live)).to_have_attribute("aria-live", "polite")
    # Which model answers, and every text readable (WCAG AA: 4.5:1).
    expect(page.locator("#model-info")).to_contain_text(f"exported {health['model']['exported_at'][:10]}")
    assert page.evaluate(LOW_CONTRAST_JS) == []


@pytest.mark.parametrize("name,viewport", [("desktop", DESKTOP), ("phone", PHONE)])
def test_layout_screenshots(page, real_photos, name, viewport):
    page.set_viewport_size(viewport)
    reconstruct(page, real_photos[1])
    sample(page, 7, 8)
    morph(page, real_photos[1], real_photos[4], 8)
    page.locator("#morph-slider").fill("3")
    expect(page.locator("#morph-frame")).to_have_text("3 / 8")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    overflow = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert no_horizontal_overflow(page), f"the page is wider than the window: {overflow}"
    assert not page.problems, page.problems
