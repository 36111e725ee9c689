"""The prediction page in a real headless Chromium, against the service serving a tiny trained package."""
from __future__ import annotations

import io
import json
import re
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
from PIL import Image

from fixtures.browser import serve_wsgi
from modelarts_mnist.server.app import ServeConfig, create_app

HELD_OUT = slice(500, None)  # test digits outside the tiny model's training and evaluation sets
DRAW_TIMEOUT_MS = 30_000
TOKEN = "s3cret-token"


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 grayscale array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def post_file(url: str, name: str, content: bytes) -> tuple[int, dict, dict]:
    """POST one file as multipart field `images`, as a ModelArts client does: status, body, headers."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


@pytest.fixture(scope="module")
def service_url(tiny_package):
    """The real service (create_app on the tiny package, model loaded and warm) on a loopback port."""
    app = create_app(config=ServeConfig(model_dir=tiny_package, load_in_background=False, tf_threads=1))
    with serve_wsgi(app) as url:
        yield url


@pytest.fixture(scope="module")
def token_service_url(tiny_package):
    """The same service started with an auth token (TOKEN)."""
    app = create_app(config=ServeConfig(model_dir=tiny_package, load_in_background=False, tf_threads=1,
                                        auth_token=TOKEN))
    with serve_wsgi(app) as url:
        yield url


def watch_for_errors(context, page) -> list[str]:
    """Script errors and Content-Security-Policy violations of page, as they happen.

    The page's policy refuses eval, so tests wait with function predicates ("() => ..."):
    Playwright polls a bare expression by eval-ing it in the page.
    """
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text)
            if "Content Security Policy" in message.text else None)
    # Every violation, also those Chromium does not print: reported by the page's own event.
    context.add_init_script("document.addEventListener('securitypolicyviolation', e => "
                            "console.error(`Content Security Policy: ${e.violatedDirective} ${e.blockedURI}`))")
    return errors


@pytest.fixture()
def page(chromium, service_url):
    """A fresh page at /ui/ (1280 wide) whose script errors and CSP violations fail the test."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = watch_for_errors(context, page)
    page.goto(f"{service_url}/ui/")
    page.wait_for_function("() => document.getElementById('model-summary').textContent.startsWith('Serving')")
    yield page
    context.close()
    assert errors == []


@pytest.fixture(scope="module")
def held_out(embedded_arrays):
    """Held-out test digits and labels."""
    _, _, test_x, test_y = embedded_arrays
    return test_x[HELD_OUT], test_y[HELD_OUT]


def draw(page, strokes):
    """Draw strokes given as lists of (x, y) in pad fractions (0..1), pressing the mouse for each."""
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=4)
        page.mouse.up()


def wait_for_predictions(page, count):
    """Wait until the page has shown `count` answers (the script counts them on <body>)."""
    page.wait_for_function(f"() => document.body.dataset.predictions === '{count}'", timeout=DRAW_TIMEOUT_MS)


def upload(page, name, content, mime="image/png"):
    """Choose a file in the upload control (the page predicts it at once)."""
    page.set_input_files("#file", files=[{"name": name, "mimeType": mime, "buffer": content}])


def shown_label(page) -> str:
    """The big predicted digit on the page."""
    return page.text_content("#digit").strip()


def test_a_drawn_vertical_stroke_is_predicted_as_one(page, service_url, artifacts_dir):
    requests = []
    page.on("request", lambda r: requests.append(r) if r.method == "POST" else None)
    draw(page, [[(0.5, 0.15), (0.5, 0.5), (0.5, 0.85)]])
    page.click("#predict")
    wait_for_predictions(page, 1)
    assert shown_label(page) == "1"
    assert "Predicted digit 1" in page.text_content("#status")
    assert json.loads(page.text_content("#raw"))["predicted_label"] == "1"
    assert page.locator("#bars li").count() == 5
    to_root = next(r for r in requests if r.url == f"{service_url}/")
    # Chromium hides blob bodies from Playwright; the answer itself proves the field was `images`.
    assert to_root.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert "-F 'images=@digit.png'" in page.text_content("#curl")
    page.screenshot(path=artifacts_dir / "prediction-page-drawn-1.png", full_page=True)


def test_preview_shows_the_28x28_image_the_service_made(page):
    draw(page, [[(0.5, 0.15), (0.5, 0.85)]])
    page.click("#predict")
    wait_for_predictions(page, 1)
    page.wait_for_function("() => { const seen = document.getElementById('seen'); "
                           "return seen.complete && seen.naturalWidth > 0; }")
    assert page.eval_on_selector("#seen", "img => [img.naturalWidth, img.naturalHeight]") == [28, 28]
    # A vertical stroke centred by the service: ink in the middle columns, none in the corners.
    pixels = page.evaluate("""() => {
        const img = document.getElementById('seen'), c = document.createElement('canvas');
        c.width = c.height = 28; const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        return Array.from(g.getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 0));
    }""")
    square = np.array(pixels).reshape(28, 28)
    assert square[4:24, 12:16].mean() > 100
    assert square[:4, :4].max() == 0 and square[-4:, -4:].max() == 0


def test_drawn_seven_and_zero_are_recognised(page):
    draw(page, [[(0.25, 0.2), (0.75, 0.2)], [(0.75, 0.2), (0.6, 0.5), (0.45, 0.85)]])
    page.click("#predict")
    wait_for_predictions(page, 1)
    seven = shown_label(page)
    page.click("#clear")
    ring = [(0.5 + 0.22 * np.sin(t), 0.5 - 0.32 * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 25)]
    draw(page, [ring])
    page.click("#predict")
    wait_for_predictions(page, 2)
    assert (seven, shown_label(page)) == ("7", "0")


def test_uploaded_held_out_digits_show_their_labels(page, held_out, service_url, artifacts_dir):
    images, labels = held_out
    picks = [int(np.flatnonzero(labels == digit)[0]) for digit in (0, 2, 3, 5, 8)]
    shown, answered = [], []
    for n, index in enumerate(picks, start=1):
        content = png_bytes(images[index])
        upload(page, f"heldout-{index}.png", content)
        wait_for_predictions(page, n)
        shown.append(shown_label(page))
        answered.append(post_file(f"{service_url}/", f"heldout-{index}.png", content)[1]["predicted_label"])
    expected = [str(labels[i]) for i in picks]
    assert shown == answered  # the page shows what the service answers for that very file
    assert sum(s == e for s, e in zip(shown, expected)) >= 4, (shown, expected)
    assert f"-F 'images=@heldout-{picks[-1]}.png' {service_url}/" in page.text_content("#curl")
    page.screenshot(path=artifacts_dir / "prediction-page-upload.png", full_page=True)


def test_a_non_image_upload_shows_the_services_reason(page, service_url, artifacts_dir):
    content = b"this is a text file, not a digit"
    upload(page, "notes.txt", content, mime="text/plain")
    page.wait_for_selector("#error:not([hidden])")
    status, body, headers = post_file(f"{service_url}/", "notes.txt", content)
    assert status == 400 and body["erno"] == "MR.0105"
    message = page.text_content("#error")
    assert "HTTP 400" in message and "MR.0105" in message
    # The reason may name a Python object by address; that differs between two requests.
    same_reason = re.sub(r"0x[0-9a-f]+", "0x?", headers["X-Error-Detail"])
    assert same_reason in re.sub(r"0x[0-9a-f]+", "0x?", message)
    assert page.is_hidden("#result")
    assert "HTTP 400" in page.text_content("#status")
    page.screenshot(path=artifacts_dir / "prediction-page-error.png", full_page=True)


def test_a_dropped_file_is_predicted(page, held_out):
    images, labels = held_out
    index = int(np.flatnonzero(labels == 1)[0])
    page.evaluate("""bytes => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], 'dropped.png', {type: 'image/png'}));
        document.getElementById('dropzone').dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true}));
    }""", list(png_bytes(images[index])))
    wait_for_predictions(page, 1)
    assert shown_label(page) == "1"
    assert "-F 'images=@dropped.png'" in page.text_content("#curl")


def test_page_states_the_served_version_and_signature(page):
    summary = page.text_content("#model-summary")
    details = page.text_content("#model")
    assert "V0001" in summary and "predict_images" in summary
    assert "images float32 [None, 784]" in details
    assert "accuracy" in details


def test_controls_are_reachable_by_keyboard(page):
    reached = []
    for _ in range(12):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    assert {"predict", "clear", "file"} <= set(reached)
    draw(page, [[(0.5, 0.15), (0.5, 0.85)]])  # a blank pad is refused as "no digit found"
    page.focus("#predict")
    page.keyboard.press("Enter")
    wait_for_predictions(page, 1)


def test_phone_width_fits_without_sideways_scrolling(chromium, service_url, held_out, artifacts_dir):
    context = chromium.new_context(viewport={"width": 375, "height": 812}, has_touch=True, is_mobile=True)
    page = context.new_page()
    page.goto(f"{service_url}/ui/")
    images, _ = held_out
    upload(page, "digit.png", png_bytes(images[0]))
    wait_for_predictions(page, 1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert page.locator("#pad").bounding_box()["width"] >= 250
    page.screenshot(path=artifacts_dir / "prediction-page-phone.png", full_page=True)
    context.close()


def test_a_finger_stroke_on_a_phone_draws_and_predicts(chromium, service_url):
    context = chromium.new_context(viewport={"width": 375, "height": 812}, has_touch=True, is_mobile=True)
    page = context.new_page()
    page.goto(f"{service_url}/ui/")
    box = page.locator("#pad").bounding_box()
    touch = context.new_cdp_session(page)
    x = box["x"] + box["width"] / 2
    ys = [box["y"] + box["height"] * f for f in np.linspace(0.15, 0.85, 15)]
    touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": ys[0]}]})
    for y in ys[1:]:
        touch.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
    touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    assert page.evaluate("window.scrollY") == 0  # the stroke drew instead of scrolling the page
    page.tap("#predict")  # the first tap after a stroke must count
    wait_for_predictions(page, 1)
    assert shown_label(page) == "1"
    context.close()


def test_time_from_page_load_to_first_prediction(chromium, service_url, held_out, artifacts_dir):
    images, labels = held_out
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    started = time.perf_counter()
    page.goto(f"{service_url}/ui/")
    upload(page, "digit.png", png_bytes(images[1]))
    wait_for_predictions(page, 1)
    wall_ms = (time.perf_counter() - started) * 1000
    in_page_ms = page.evaluate("window.predictionTimes[0]")  # since navigation start
    loaded_ms = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
    sent_ms = page.evaluate(f"performance.getEntriesByName('{service_url}/')[0].startTime")
    context.close()
    timing = {"load_event_ms": loaded_ms, "request_sent_ms": sent_ms, "first_prediction_shown_ms": in_page_ms,
              "wall_clock_ms": wall_ms}
    print("\npage load to first prediction shown (ms since navigation start, noisy shared machine):",
          ", ".join(f"{name} {value:.0f}" for name, value in timing.items()))
    (artifacts_dir / "prediction-page-timing.json").write_text(json.dumps(timing), encoding="utf-8")
    assert 0 < loaded_ms < sent_ms < in_page_ms < wall_ms < 30_000


def test_the_page_sends_a_strict_policy_and_runs_under_it(chromium, service_url):
    context = chromium.new_context()
    page = context.new_page()
    errors = watch_for_errors(context, page)
    answer = page.goto(f"{service_url}/ui/")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
    assert answer.headers["x-content-type-options"] == "nosniff" and answer.headers["x-frame-options"] == "DENY"
    draw(page, [[(0.5, 0.15), (0.5, 0.85)]])
    page.click("#predict")
    wait_for_predictions(page, 1)
    page.wait_for_function("() => document.getElementById('seen').naturalWidth === 28")  # a data: image, allowed
    assert errors == []  # the page's own work raised no violation
    # The policy is enforced, not only sent: an injected inline script does not run.
    page.evaluate("""() => { const s = document.createElement('script');
                             s.textContent = 'window.ran = true'; document.body.append(s); }""")
    page.wait_for_timeout(200)
    assert page.evaluate("window.ran === undefined")
    assert errors and all("Content Security Policy" in error for error in errors)
    context.close()


def test_the_page_cannot_be_framed(chromium, service_url):
    context = chromium.new_context()
    page = context.new_page()
    page.set_content(f'<iframe id="f" src="{service_url}/ui/"></iframe>')
    page.wait_for_timeout(1000)
    frame = page.frame_locator("#f")
    assert frame.locator("#pad").count() == 0
    context.close()


def test_with_a_token_the_page_asks_for_it_then_works(chromium, token_service_url):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = watch_for_errors(context, page)
    sent = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("x-auth-token"))))
    assert page.goto(f"{token_service_url}/ui/").status == 200  # the page itself needs no token
    page.wait_for_function("() => document.getElementById('model-summary').textContent.includes('X-Auth-Token')")
    assert page.eval_on_selector("#options", "form => form.closest('details').open")
    page.fill("#token", "wrong")
    page.press("#token", "Enter")  # submits: stores the token and predicts the blank pad
    page.wait_for_selector("#error:not([hidden])")
    assert "HTTP 401" in page.text_content("#error")
    page.fill("#token", TOKEN)
    page.press("#token", "Enter")
    page.wait_for_function("() => document.getElementById('model-summary').textContent.startsWith('Serving')")
    page.click("#clear")
    draw(page, [[(0.5, 0.15), (0.5, 0.5), (0.5, 0.85)]])
    page.click("#predict")
    wait_for_predictions(page, 1)
    assert shown_label(page) == "1"
    page.wait_for_function("() => document.getElementById('seen').naturalWidth === 28")  # the preview was allowed too
    fetched = {url.rsplit("/", 1)[-1] or "/": token for url, token in sent if token == TOKEN}
    assert {"model.json", "preview", "/"} <= set(fetched)
    assert all(TOKEN not in url for url, _ in sent)
    # Kept for this tab only: a reload still has it, a new browser context does not.
    page.reload()
    page.wait_for_function("() => document.getElementById('model-summary').textContent.startsWith('Serving')")
    other = context.browser.new_context().new_page()
    other.goto(f"{token_service_url}/ui/")
    other.wait_for_function("() => document.getElementById('model-summary').textContent.includes('X-Auth-Token')")
    assert other.input_value("#token") == ""
    other.context.close()
    context.close()
    assert errors == []
