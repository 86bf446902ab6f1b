"""handler.handler called with real API Gateway events, real multipart bodies, real photos."""
import base64
import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

import handler
from model.images import psnr
from tests.support.events import Context, json_event, multipart_body, multipart_event, rest_event
from tests.test_images import huge_png_header


def call(event):
    response = handler.handler(event, Context())
    assert response["headers"]["Access-Control-Allow-Origin"], "CORS on every response"
    assert response["headers"]["Content-Type"] == "application/json"
    body = json.loads(response["body"]) if response["body"] else None
    return response["statusCode"], body


def decode_png(b64: str) -> np.ndarray:
    data = base64.b64decode(b64)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def size():
    return handler.get_model().image_size


def assert_error(status, body, want_status, want_code):
    assert (status, body["error"]["code"]) == (want_status, want_code), body
    assert body["error"]["message"] and body["request_id"]
    assert "Traceback" not in json.dumps(body)


def test_health_describes_the_model(size):
    status, body = call(rest_event("GET", "/health"))
    assert status == 200 and body["status"] == "ok"
    model = body["model"]
    assert model["format_version"] == 2 and model["image_size"] == size and model["latent_dim"] > 0
    assert model["backend"] == "onnx" and model["source"].startswith("local:")
    assert model["sampling"].startswith("fitted")  # the bundled model ships its latent_prior.npz
    assert body["limits"]["max_side"] == 20_000  # no side longer (issue 20: a thin image's cost is per row)


def test_reconstruct_a_real_photo(real_photos, size):
    for path in real_photos[:2]:
        status, body = call(multipart_event("/reconstruct", {"image": path.read_bytes()}))
        assert status == 200, body
        seen, recon = decode_png(body["input"]), decode_png(body["reconstruction"])
        assert seen.shape == recon.shape == (size, size, 3)
        assert recon.std() > 5, "not a blank image"
        assert body["psnr"] == pytest.approx(psnr(seen, recon), abs=0.01)
        assert body["psnr"] > 10


def test_headers_are_case_insensitive_and_plain_bodies_work(real_jpeg):
    body, content_type = multipart_body({"image": real_jpeg})
    upper = rest_event("POST", "/reconstruct", body, {"CONTENT-TYPE": content_type})
    assert call(upper)[0] == 200
    # isBase64Encoded false: an ASCII-only JSON body arrives as text.
    status, plain = call(rest_event("POST", "/sample", '{"n": 1, "seed": 3}', {"content-type": "application/json"}))
    assert status == 200 and (plain["n"], plain["seed"], len(plain["images"])) == (1, 3, 1)  # the body was read
    # isBase64Encoded true for JSON (e.g. a */* binary media type) is honoured too.
    encoded = rest_event("POST", "/sample", b'{"n": 1, "seed": 3}', {"Content-Type": "application/json"})
    status, decoded = call(encoded)
    assert encoded["isBase64Encoded"] and status == 200 and decoded["images"] == plain["images"]


def test_sample_is_reproducible_by_seed(size):
    status, first = call(json_event("/sample", {"n": 4, "seed": 7, "temperature": 0.8}))
    assert status == 200 and first["seed"] == 7 and first["n"] == 4 and len(first["images"]) == 4
    images = [decode_png(b) for b in first["images"]]
    assert all(im.shape == (size, size, 3) for im in images)
    assert not np.array_equal(images[0], images[1])
    assert call(json_event("/sample", {"n": 4, "seed": 7, "temperature": 0.8}))[1]["images"] == first["images"]
    assert call(json_event("/sample", {"n": 4, "seed": 8, "temperature": 0.8}))[1]["images"] != first["images"]
    status, default = call(json_event("/sample", {}))
    assert status == 200 and len(default["images"]) == 8 and isinstance(default["seed"], int)
    # Temperature 0 decodes the centre of the prior component each draw falls in (the prior's mean for a
    # one-Gaussian prior); the same draws at a higher temperature land further from those centres.
    zero = [decode_png(b).astype(float) for b in call(json_event("/sample", {"n": 4, "seed": 7, "temperature": 0}))[1]["images"]]
    means = handler.get_model().prior.means
    assert len(means) == 1 or len({b.tobytes() for b in zero}) > 1, "a mixture's draws fall in several components"
    distance = {t: np.mean([np.abs(decode_png(b) - centre).mean() for b, centre in zip(
                            call(json_event("/sample", {"n": 4, "seed": 7, "temperature": t}))[1]["images"], zero)])
                for t in (0.3, 1.5)}
    assert distance[1.5] > 1.5 * distance[0.3] > 0, distance


def test_the_bundled_model_samples_catalogue_cars_in_several_colours():
    """What /sample gives with the shipped model: pictures on white, as the catalogue photos are
    (codes from N(0, I) gave street scenes for models that saw every photo), in several colours."""
    from benchmarks.sample_quality import dominant_colour, white_border

    status, body = call(json_event("/sample", {"n": 16, "seed": 11}))
    assert status == 200 and handler.get_model().prior is not None, "the bundled model samples its fitted prior"
    images = np.stack([decode_png(b) for b in body["images"]])
    assert white_border(images).mean() >= 0.9
    colours = {dominant_colour(im) for im in images} - {"grey"}
    assert len(colours) >= 3, colours


def test_interpolate_two_real_photos(real_photos, size):
    a, b = real_photos[0].read_bytes(), real_photos[3].read_bytes()
    status, body = call(multipart_event("/interpolate", {"a": a, "b": b, "steps": "5"}))
    assert status == 200 and body["steps"] == 5 and len(body["images"]) == 5
    frames = [decode_png(f) for f in body["images"]]
    recon_a = decode_png(call(multipart_event("/reconstruct", {"image": a}))[1]["reconstruction"])
    recon_b = decode_png(call(multipart_event("/reconstruct", {"image": b}))[1]["reconstruction"])
    assert np.abs(frames[0].astype(int) - recon_a).max() <= 2, "the morph starts at car a"
    assert np.abs(frames[-1].astype(int) - recon_b).max() <= 2, "and ends at car b"
    middle = frames[2].astype(int)
    assert np.abs(middle - recon_a).mean() > 1 and np.abs(middle - recon_b).mean() > 1


def test_preflight_gets_cors():
    response = handler.handler(rest_event("OPTIONS", "/reconstruct", headers={"Origin": "https://cars.example"}), Context())
    assert response["statusCode"] == 204
    assert response["headers"]["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response["headers"]["Access-Control-Allow-Methods"]


def test_cors_origins_are_configurable(monkeypatch):
    monkeypatch.setattr(handler, "ALLOWED_ORIGINS", ["https://cars.example", "http://localhost:8000"])
    ok = handler.handler(rest_event("GET", "/health", headers={"Origin": "http://localhost:8000"}), Context())
    assert ok["headers"]["Access-Control-Allow-Origin"] == "http://localhost:8000"
    other = handler.handler(rest_event("GET", "/health", headers={"Origin": "https://evil.example"}), Context())
    assert other["headers"]["Access-Control-Allow-Origin"] == "https://cars.example"


def test_no_allowed_origin_means_no_browser_may_call(monkeypatch):
    # CORS_ALLOW_ORIGIN="": an "Access-Control-Allow-Origin: null" would admit sandboxed pages and file:// ones.
    monkeypatch.setattr(handler, "ALLOWED_ORIGINS", [])
    for method in ("OPTIONS", "GET"):
        response = handler.handler(rest_event(method, "/health", headers={"Origin": "null"}), Context())
        assert "Access-Control-Allow-Origin" not in response["headers"]


# ---- bad input: a clear 4xx, never a 500 --------------------------------------------

def test_missing_field(real_jpeg):
    assert_error(*call(multipart_event("/reconstruct", {"photo": real_jpeg})), 400, "missing_field")
    assert_error(*call(multipart_event("/interpolate", {"a": real_jpeg})), 400, "missing_field")


def test_empty_body_and_empty_field():
    event = rest_event("POST", "/reconstruct", b"", {"Content-Type": "multipart/form-data; boundary=xyz"})
    assert_error(*call(event), 400, "empty_body")
    assert_error(*call(multipart_event("/reconstruct", {"image": b""})), 400, "empty_image")


def test_not_an_image_and_truncated_image(real_jpeg):
    assert_error(*call(multipart_event("/reconstruct", {"image": b"hello, I am text"})), 400, "not_an_image")
    truncated = real_jpeg[: len(real_jpeg) // 3]
    assert_error(*call(multipart_event("/reconstruct", {"image": truncated})), 400, "corrupt_image")


def test_unsupported_image_format():
    gif = io.BytesIO()
    Image.new("RGB", (20, 20), "red").save(gif, format="GIF")
    assert_error(*call(multipart_event("/reconstruct", {"image": gif.getvalue()})), 415, "unsupported_format")


def test_wrong_content_type(real_jpeg):
    event = rest_event("POST", "/reconstruct", real_jpeg, {"Content-Type": "image/jpeg"})
    assert_error(*call(event), 415, "unsupported_media_type")
    assert_error(*call(json_event("/sample", "n=3", content_type="text/plain")), 415, "unsupported_media_type")


def test_multipart_without_boundary_or_broken(real_jpeg):
    body, content_type = multipart_body({"image": real_jpeg})
    no_boundary = rest_event("POST", "/reconstruct", body, {"Content-Type": "multipart/form-data"})
    assert_error(*call(no_boundary), 400, "bad_multipart")
    broken = rest_event("POST", "/reconstruct", body.replace(b"\r\n\r\n", b"\r\n"), {"Content-Type": content_type})
    assert_error(*call(broken), 400, "bad_multipart")
    euro = rest_event("POST", "/reconstruct", body, {"Content-Type": "multipart/form-data; boundary*=utf-8''%E2%82%AC"})
    assert_error(*call(euro), 400, "bad_multipart")  # an RFC 2231 boundary outside ASCII: it was a 500


def test_forms_are_parsed_in_linear_time_and_bounded(real_jpeg):
    # A quadratic corner of the email parser: a long parameter list in a part's Content-Disposition.
    # 100,000 of them took 6 s of CPU here (200,000 took 26 s: past API Gateway's 29 s on Lambda).
    head = b'Content-Disposition: form-data; name="image"; filename="car.jpg"; x="' + b";" * 100_000 + b'"'
    body = b"--b\r\n" + head + b"\r\nContent-Type: image/jpeg\r\n\r\n" + real_jpeg + b"\r\n--b--\r\n"
    event = rest_event("POST", "/reconstruct", body, {"Content-Type": "multipart/form-data; boundary=b"})
    status, reply = call(event)
    assert_error(status, reply, 400, "bad_multipart")
    assert "Content-Disposition is over 4096 bytes" in reply["error"]["message"]
    many = b"".join(b'--b\r\nContent-Disposition: form-data; name="x%d"\r\n\r\n\r\n' % i for i in range(5000))
    event = rest_event("POST", "/reconstruct", many + b"--b--\r\n", {"Content-Type": "multipart/form-data; boundary=b"})
    status, reply = call(event)
    assert_error(status, reply, 400, "bad_multipart")
    assert "more than 16 parts" in reply["error"]["message"]


def test_a_file_name_in_a_legacy_code_page_is_accepted(real_jpeg, size):
    # Windows tools send the name in the system's code page: "café.jpg" in cp1252 is not UTF-8.
    head = b'Content-Disposition: form-data; name="image"; filename="caf\xe9.jpg"'
    body = b"--b\r\n" + head + b"\r\nContent-Type: image/jpeg\r\n\r\n" + real_jpeg + b"\r\n--b--\r\n"
    status, reply = call(rest_event("POST", "/reconstruct", body, {"Content-Type": "multipart/form-data; boundary=b"}))
    assert status == 200 and decode_png(reply["reconstruction"]).shape == (size, size, 3), reply


def test_bad_base64():
    event = rest_event("POST", "/reconstruct", "%%%not base64%%%", {"Content-Type": "multipart/form-data; boundary=x"},
                       base64_encoded=True)
    assert_error(*call(event), 400, "bad_request")


@pytest.mark.parametrize("payload", ["{", "[1, 2]", '"text"', "\udcff", "{\"n\": 1,}"])
def test_malformed_json(payload):
    assert_error(*call(json_event("/sample", payload)), 400, "bad_json")


def test_non_utf8_json():
    event = rest_event("POST", "/sample", b'{"n": "\xff\xfe"}', {"Content-Type": "application/json"})
    assert_error(*call(event), 400, "bad_json")


def test_body_over_the_lambda_payload_limit(real_jpeg):
    big = real_jpeg + b"\0" * (6 * 1024 * 1024)
    assert_error(*call(multipart_event("/reconstruct", {"image": big})), 413, "body_too_large")


def test_the_largest_body_accepted_fits_in_the_event_lambda_takes(real_jpeg):
    # API Gateway hands Lambda the upload base64-encoded inside the event JSON, and Lambda takes
    # at most 6 MB of that: a bigger body would get AWS's error, not this handler's 413.
    def event_of(size: int) -> dict:
        body, content_type = multipart_body({"image": real_jpeg})
        padded, _ = multipart_body({"image": real_jpeg + b"\0" * (size - len(body))}, content_type.split("=")[1])
        assert len(padded) == size
        return rest_event("POST", "/reconstruct", padded, {"Content-Type": content_type})

    largest = event_of(handler.MAX_BODY_BYTES)
    assert len(json.dumps(largest)) <= handler.LAMBDA_EVENT_BYTES
    assert call(largest)[0] == 200  # JPEG decoders ignore what follows the image
    assert_error(*call(event_of(handler.MAX_BODY_BYTES + 1)), 413, "body_too_large")


def test_too_many_pixels():
    bomb = huge_png_header(20_000, 20_000)
    assert_error(*call(multipart_event("/reconstruct", {"image": bomb})), 413, "image_too_large")


@pytest.mark.parametrize("payload, code", [
    ({"n": 0}, "out_of_range"), ({"n": 17}, "out_of_range"), ({"n": "five"}, "bad_request"),
    ({"n": True}, "bad_request"), ({"n": 2.5}, "bad_request"), ({"n": 10**100}, "out_of_range"),
    ({"seed": -1}, "out_of_range"), ({"seed": 2**32}, "out_of_range"),
    ({"temperature": -0.1}, "out_of_range"), ({"temperature": 2.5}, "out_of_range"),
    ({"temperature": "hot"}, "bad_request"), ({"bogus": 1}, "bad_request"),
])
def test_sample_bounds(payload, code):
    assert_error(*call(json_event("/sample", payload)), 400, code)


def test_non_finite_temperature():
    assert_error(*call(json_event("/sample", '{"temperature": NaN}')), 400, "bad_request")
    assert_error(*call(json_event("/sample", '{"temperature": 1e999}')), 400, "bad_request")


def test_interpolate_says_which_photo_is_wrong(real_jpeg):
    status, body = call(multipart_event("/interpolate", {"a": real_jpeg, "b": b"not a photo at all"}))
    assert_error(status, body, 400, "not_an_image")
    assert body["error"]["message"].startswith("photo b: ")


@pytest.mark.parametrize("steps, code", [("1", "out_of_range"), ("17", "out_of_range"), ("many", "bad_request")])
def test_interpolate_steps_bounds(real_jpeg, steps, code):
    assert_error(*call(multipart_event("/interpolate", {"a": real_jpeg, "b": real_jpeg, "steps": steps})), 400, code)


def test_unknown_route_and_wrong_method():
    assert_error(*call(rest_event("GET", "/nope")), 404, "not_found")
    assert_error(*call(rest_event("GET", "/reconstruct")), 405, "method_not_allowed")
    assert_error(*call(rest_event("DELETE", "/health")), 405, "method_not_allowed")


def test_a_server_fault_is_a_500_with_request_id_and_a_logged_traceback(monkeypatch, caplog, real_jpeg):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(handler.inference, "reconstruct", broken)
    event = multipart_event("/reconstruct", {"image": real_jpeg})
    with caplog.at_level(logging.ERROR, logger="car-vae"):
        response = handler.handler(event, Context())
    body = json.loads(response["body"])
    # API Gateway's id, which the caller also gets as x-amzn-RequestId
    request_id = event["requestContext"]["requestId"]
    assert response["statusCode"] == 500 and body["request_id"] == request_id
    assert "disk on fire" not in response["body"], "no internals leak to the client"
    assert "Traceback" in caplog.text and "disk on fire" in caplog.text and request_id in caplog.text
    # A direct invocation (no API Gateway) falls back to the Lambda's id.
    del event["requestContext"]
    context = Context()
    assert json.loads(handler.handler(event, context)["body"])["request_id"] == context.aws_request_id
