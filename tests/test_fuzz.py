"""Property-based fuzzing of handler.handler with generated and mutated API Gateway events.

Whatever arrives, the reply must be well formed: a 2xx or 4xx status (a 5xx means bad
input crashed the server), CORS and JSON headers, a JSON body, {"error": {code, message},
"request_id"} on errors, and the handler never raises. benchmarks/fuzz_handler.py runs
the same strategies (TARGETS) for 10,000+ requests.

FUZZ_EXAMPLES sets the examples per test. CI runs a fixed (derandomized) set of examples;
FUZZ_RANDOM=1 explores fresh ones, and a failure then prints a blob to reproduce it.
"""
from __future__ import annotations

import base64
import functools
import io
import json
import logging
import os
import string
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import handler
from tests.conftest import real_photo_paths
from tests.support.events import Context, multipart_body, rest_event
from tests.test_images import huge_png_header

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 100))
RANDOM = os.environ.get("FUZZ_RANDOM", "0") == "1"
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # requests that reach the model take 10-50 ms, far more on a busy machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    derandomize=not RANDOM,
    print_blob=RANDOM,
    **({} if RANDOM else {"database": None}),
)


# ---- counting and checking --------------------------------------------------------

class Tally:
    """Handler calls and how they ended, for the benchmark's report."""

    def __init__(self):
        self.requests = 0
        self.by_status: Counter[str] = Counter()  # "200", "400", ...
        self.by_class: Counter[str] = Counter()  # "2xx", "4xx", "5xx", "exception", "malformed"
        self.exceptions: Counter[str] = Counter()  # exception type -> count


TALLY = Tally()


def call(event) -> dict:
    """handler.handler(event, Context()), counted in TALLY."""
    TALLY.requests += 1
    try:
        response = handler.handler(event, Context())
    except Exception as exc:
        TALLY.by_class["exception"] += 1
        TALLY.exceptions[type(exc).__name__] += 1
        raise
    status = response.get("statusCode") if isinstance(response, dict) else None
    TALLY.by_status[str(status)] += 1
    TALLY.by_class[f"{status // 100}xx" if type(status) is int else "malformed"] += 1
    return response


def _not_json(name):
    raise ValueError(f"{name} is not JSON")  # Python accepts NaN/Infinity; browsers' JSON.parse does not


def check_response(response) -> None:
    assert isinstance(response, dict), f"the response is a {type(response).__name__}"
    status, headers, body = response.get("statusCode"), response.get("headers"), response.get("body")
    assert type(status) is int and (200 <= status < 300 or 400 <= status < 500), f"status {status!r}: {body!r:.500}"
    assert isinstance(headers, dict) and headers.get("Access-Control-Allow-Origin"), headers
    assert headers.get("Content-Type") == "application/json", headers
    assert isinstance(body, str), f"the body is a {type(body).__name__}"
    if status == 204:
        assert body == ""
        return
    value = json.loads(body, parse_constant=_not_json)
    assert isinstance(value, dict), body[:200]
    if status >= 400:
        error = value.get("error")
        assert isinstance(error, dict) and isinstance(error.get("code"), str) and error["code"], body[:500]
        assert isinstance(error.get("message"), str) and error["message"], body[:500]
        assert isinstance(value.get("request_id"), str) and value["request_id"], body[:500]


def request(event) -> dict:
    """Call the handler and insist on a well-formed reply."""
    response = call(event)
    check_response(response)
    return response


# Text, half the time with a lone surrogate: a JSON event can carry "\ud800", and Python decodes it.
any_text = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, s, b: a + s + b, st.text(max_size=20), st.characters(categories=["Cs"]), st.text(max_size=20)),
)


# ---- bytes: real photos, damage, odd images -------------------------------------------

@functools.cache
def photo_bytes() -> tuple[bytes, ...]:
    return tuple(path.read_bytes() for path in real_photo_paths())


# Deferred so that importing this module does not read the photos.
photos = st.deferred(lambda: st.sampled_from(photo_bytes()))


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """data as networks, proxies and buggy clients mangle it."""
    if not data:
        return draw(st.binary(max_size=64))
    how = draw(st.sampled_from(["truncate", "flip", "flip-framing", "insert", "delete", "lf", "repeat"]))
    i = draw(st.integers(0, len(data) - 1))
    if how == "truncate":
        return data[:i]
    if how in ("flip", "flip-framing"):
        # flip-framing: the first and last 256 bytes, where multipart headers and boundaries live
        edge = min(256, len(data))
        where = st.integers(0, len(data) - 1) if how == "flip" else st.one_of(
            st.integers(0, edge - 1), st.integers(len(data) - edge, len(data) - 1))
        out = bytearray(data)
        for pos in draw(st.lists(where, min_size=1, max_size=8)):
            out[pos] ^= draw(st.integers(1, 255))
        return bytes(out)
    if how == "insert":
        return data[:i] + draw(st.binary(min_size=1, max_size=32)) + data[i:]
    if how == "delete":
        return data[:i] + data[i + draw(st.integers(1, 64)):]
    if how == "lf":
        return data.replace(b"\r\n", b"\n")
    return data[:i] + data[i:i + draw(st.integers(1, 256))] * draw(st.integers(2, 4)) + data[i:]


def encode(im: Image.Image, fmt: str, **save_args) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **save_args)
    return out.getvalue()


IMAGE_KINDS = ("1", "L", "LA", "P", "P+transparency", "RGBA", "I;16", "CMYK JPEG", "L JPEG", "progressive JPEG",
               "EXIF", "WebP", "RGBA WebP", "animated WebP", "animated PNG", "animated GIF", "GIF", "BMP", "TIFF",
               "bomb")
SIZES = st.one_of(st.tuples(st.integers(1, 64), st.integers(1, 64)),
                  st.sampled_from([(1, 1), (1, 3000), (3000, 1), (2, 1500), (1500, 2)]))
# PNG IHDRs claiming sizes no photo has; 6000x6000 is just under the pixel limit.
BOMB_SIZES = [(50_000, 50_000), (7_000, 6_000), (65_535, 65_535), (2**31 - 1, 1), (1, 2**31 - 1), (6_000, 6_000)]


@st.composite
def images(draw) -> bytes:
    """An image of an odd mode, format or shape (sometimes damaged), as uploaded bytes."""
    kind = draw(st.sampled_from(IMAGE_KINDS))
    if kind == "bomb":
        return huge_png_header(*draw(st.sampled_from(BOMB_SIZES)))
    width, height = draw(SIZES)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    else:
        rgb = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 256, 3)))
    alpha = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), "L")
    if kind in ("1", "L", "P"):
        data = encode(rgb.convert(kind), "PNG")
    elif kind in ("LA", "RGBA"):
        im = rgb.convert("RGBA")
        im.putalpha(alpha)
        data = encode(im.convert(kind), "PNG")
    elif kind == "P+transparency":
        colours = draw(st.integers(1, 256))
        im = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=colours)
        # tRNS as one transparent index, or as alpha bytes for the first palette entries
        transparency = draw(st.one_of(st.integers(0, colours - 1), st.binary(min_size=1, max_size=colours)))
        data = encode(im, "PNG", transparency=transparency)
    elif kind == "I;16":
        data = encode(Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16)), "PNG")
    elif kind in ("CMYK JPEG", "L JPEG", "progressive JPEG"):
        im = rgb.convert(kind.split()[0]) if kind != "progressive JPEG" else rgb
        data = encode(im, "JPEG", quality=draw(st.integers(1, 95)), progressive=kind == "progressive JPEG")
    elif kind == "EXIF":
        exif = Image.Exif()
        exif[0x0112] = draw(st.integers(0, 9))  # orientation: 1-8 are defined, 0 and 9 are not
        data = encode(rgb, draw(st.sampled_from(["JPEG", "PNG", "WEBP"])), exif=exif.tobytes())
    elif kind in ("WebP", "RGBA WebP"):
        im = rgb if kind == "WebP" else rgb.convert("RGBA")
        if kind == "RGBA WebP":
            im.putalpha(alpha)
        data = encode(im, "WEBP", lossless=draw(st.booleans()), quality=draw(st.integers(0, 100)))
    elif kind.startswith("animated"):
        frames = [rgb, rgb.transpose(Image.Transpose.ROTATE_180), Image.new("RGB", rgb.size, (255, 0, 0))]
        fmt = {"animated WebP": "WEBP", "animated PNG": "PNG", "animated GIF": "GIF"}[kind]
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    else:
        data = encode(rgb, kind)
    return draw(damaged(data)) if draw(st.integers(0, 3)) == 3 else data


# ---- multipart ----------------------------------------------------------------------

ODD_STEPS = ["５", "８", "٨", "𝟖", "²", "Ⅷ", "二", "  8 ", "\t8\r\n", "-0", "+8", "1e3", "8.0", "0x8", "1_0", "", " ",
             "\x00", "8\x00", "9" * 5000, "1" * 4300, "1" * 4301, "0" * 5000 + "8", "-" + "9" * 100]
steps_text = st.one_of(
    st.sampled_from(ODD_STEPS),
    st.integers(-20, 40).map(str),
    st.text(alphabet="0123456789٠١٢٣٤٥٦٧٨٩０１２３４５６７８９ _+-.eE", max_size=12),
    st.text(max_size=12),
)
steps_bytes = st.one_of(steps_text.map(lambda s: s.encode("utf-8")), st.binary(max_size=12))

# RFC 2046 boundary characters (a space is allowed, but not last).
BCHARS = string.ascii_letters + string.digits + "'()+_,-./:=? "
boundaries = st.one_of(
    st.text(alphabet=BCHARS, min_size=1, max_size=70),
    st.integers(71, 20_000).map(lambda n: "b" * n),  # longer than RFC 2046 allows
    st.text(min_size=1, max_size=20),  # any unicode at all
)
MULTIPART_TYPES = ["multipart/form-data", "Multipart/Form-Data", "MULTIPART/FORM-DATA", " multipart/form-data ",
                   "multipart/mixed", "multipart/", "multipart/form-data, text/plain"]


@st.composite
def multipart_content_types(draw, boundary: str) -> str:
    """A Content-Type for a body framed with boundary: right, quoted, missing, wrong or mangled."""
    main = draw(st.sampled_from(MULTIPART_TYPES))
    how = draw(st.sampled_from(["same", "quoted", "missing", "empty", "other", "prefix", "rfc2231", "upper",
                                "twice", "charset first", "garbage"]))
    param = {
        "same": f"boundary={boundary}",
        "quoted": f'boundary="{boundary}"',
        "missing": "charset=utf-8",
        "empty": "boundary=",
        "other": f"boundary={draw(st.text(alphabet=BCHARS, min_size=1, max_size=70))}",
        "prefix": f"boundary={boundary[: len(boundary) // 2]}",
        "rfc2231": f"boundary*=utf-8''{boundary}",
        "upper": f"BOUNDARY={boundary}",
        "twice": f"boundary={boundary}; boundary=other",
        "charset first": f"charset=utf-8; boundary={boundary}",
        "garbage": draw(any_text),
    }[how]
    return f"{main}; {param}" if how != "missing" or draw(st.booleans()) else main


DISPOSITIONS = [
    'form-data; name="{name}"; filename="car.jpg"',
    'form-data; name="{name}"',
    "form-data; name={name}",
    "form-data; name*=utf-8''{name}",
    'FORM-DATA; NAME="{name}"',
    'form-data; filename="car.jpg"',  # no name
    "form-data",
    'attachment; name="{name}"',
    None,  # no Content-Disposition header at all
]


@st.composite
def form_parts(draw, names: list[str]) -> tuple[bytes, bytes]:
    """One multipart part: (header lines, content); the name may be missing, odd or a duplicate."""
    name = draw(st.one_of(st.sampled_from([*names, "photo", "", "IMAGE"]), st.text(max_size=12)))
    template = draw(st.sampled_from(DISPOSITIONS))
    lines = [] if template is None else [f"Content-Disposition: {template.format(name=name)}".encode()]
    if draw(st.booleans()):
        lines.append(b"Content-Type: " + draw(st.sampled_from([b"image/jpeg", b"text/plain", b"", b"\xff\xfe"])))
    content = draw(st.one_of(photos, images(), steps_bytes, st.binary(max_size=64)))
    return b"\r\n".join(lines), content


def raw_multipart(parts: list[tuple[bytes, bytes]], boundary: bytes) -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + content + b"\r\n" for head, content in parts)
    return body + b"--" + boundary + b"--\r\n"


def as_event(path: str, body: bytes, content_type: str | None, draw, method: str = "POST") -> dict:
    """A REST proxy event, the body base64-encoded (a binary media type) or passed as text."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    return rest_event(method, path, body, headers, base64_encoded=draw(st.booleans()))


@st.composite
def handmade_multipart_events(draw) -> dict:
    """Multipart built by hand: parts without names, duplicate fields, boundaries that do not match."""
    path = draw(st.sampled_from(["/reconstruct", "/interpolate"]))
    names = ["image"] if path == "/reconstruct" else ["a", "b", "steps"]
    parts = draw(st.lists(form_parts(names), max_size=5))
    if parts and draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), draw(st.sampled_from(parts)))  # a duplicate field
    boundary = draw(boundaries)
    body = raw_multipart(parts, boundary.encode("utf-8"))
    return as_event(path, body, draw(multipart_content_types(boundary)), draw)


@st.composite
def real_requests(draw) -> tuple[str, bytes, str]:
    """A correct request from a real client: (path, body, content type)."""
    route = draw(st.sampled_from(["/reconstruct", "/interpolate", "/sample"]))
    if route == "/sample":
        payload = {"n": draw(st.integers(1, 16)), "seed": draw(st.integers(0, 2**32 - 1))}
        return route, json.dumps(payload).encode(), "application/json"
    boundary = draw(st.text(alphabet=string.hexdigits.lower(), min_size=32, max_size=32))
    if route == "/reconstruct":
        fields = {"image": draw(photos)}
    else:
        fields = {"a": draw(photos), "b": draw(photos), "steps": str(draw(st.integers(2, 16)))}
    return (route, *multipart_body(fields, boundary))


@st.composite
def damaged_real_events(draw) -> dict:
    """Real multipart and JSON requests built from real photos, then truncated or byte-flipped."""
    path, body, content_type = draw(real_requests())
    if draw(st.integers(0, 9)):  # one in ten goes through intact and reaches the model
        body = draw(damaged(body))
    return as_event(path, body, content_type, draw)


@st.composite
def odd_image_events(draw) -> dict:
    """Well-formed multipart carrying images of odd modes, formats, shapes and sizes."""
    if draw(st.booleans()):
        path, fields = "/reconstruct", {"image": draw(images())}
    else:
        fields = {"a": draw(images()), "b": draw(st.one_of(images(), photos)), "steps": "3"}
        path = "/interpolate"
    return as_event(path, *multipart_body(fields, "fuzz-boundary"), draw)


@st.composite
def interpolate_steps_events(draw) -> dict:
    """/interpolate with two real photos and odd text in 'steps'."""
    body = raw_multipart([
        (b'Content-Disposition: form-data; name="a"; filename="a.jpg"', draw(photos)),
        (b'Content-Disposition: form-data; name="b"; filename="b.jpg"', draw(photos)),
        (b'Content-Disposition: form-data; name="steps"', draw(steps_bytes)),
    ], b"fuzz-boundary")
    return as_event("/interpolate", body, "multipart/form-data; boundary=fuzz-boundary", draw)


# ---- JSON for /sample -----------------------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8,
)
field_values = st.one_of(
    st.integers(-2, 20), st.integers(), st.floats(),
    st.sampled_from([10**400, -(10**400), 2**32, 2**32 - 1, 0.5, 16.0, 2.0, True, False, None, "8", "NaN", [8], {}]),
    json_values,
)
sample_objects = st.builds(
    lambda fields, extra: {**fields, **extra},
    st.fixed_dictionaries({}, optional={"n": field_values, "seed": field_values, "temperature": field_values}),
    st.one_of(st.just({}), st.dictionaries(st.text(max_size=8), json_values, max_size=2)),
)
# Number literals as they arrive on the wire: huge, overflowing, not numbers at all.
NUMBER_LITERALS = ["1" * 400, "1" * 4300, "1" * 4301, "-" + "9" * 10_000, "1e309", "-1e309", "1e-400", "1E400",
                   "NaN", "Infinity", "-Infinity", "-0", "0.5e1", "1" * 400 + ".5", "0x10", "+1", "01", ".5"]
NESTING = st.one_of(st.integers(1, 3000), st.sampled_from([999, 1000, 5000, 50_000, 200_000]))
CHARSETS = ["latin-1", "utf-16", "utf-32", "cp1252", "utf-8-sig"]


@st.composite
def sample_bodies(draw) -> bytes | str:
    kind = draw(st.sampled_from(["object", "literal", "nested", "charset", "damaged", "random"]))
    if kind == "object":
        return json.dumps(draw(sample_objects))  # NaN and Infinity come out as bare literals
    if kind == "literal":
        field = draw(st.sampled_from(["n", "seed", "temperature"]))
        return f'{{"{field}": {draw(st.sampled_from(NUMBER_LITERALS))}}}'
    if kind == "nested":
        depth, opener = draw(NESTING), draw(st.sampled_from(["[", '{"n":', '[{"a":']))
        closer = "]" if opener == "[" else "}" if opener == '{"n":' else "}]"
        inner = opener * depth + "1" + closer * depth
        return inner if draw(st.booleans()) else f'{{"n": 1, "extra": {inner}}}'
    if kind == "charset":
        text = json.dumps({"n": 2, "seed": draw(st.text(min_size=1, max_size=5))}, ensure_ascii=False)
        return text.encode(draw(st.sampled_from(CHARSETS)), "replace")
    if kind == "damaged":
        return draw(damaged(json.dumps(draw(sample_objects)).encode()))
    return draw(st.one_of(st.binary(max_size=200), any_text))


JSON_TYPES = [None, "application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/plain",
              "application/json; charset=latin-1", "application/x-www-form-urlencoded"]


@st.composite
def sample_events(draw) -> dict:
    body = draw(sample_bodies())
    headers = {} if (ct := draw(st.sampled_from(JSON_TYPES))) is None else {"Content-Type": ct}
    if isinstance(body, str):
        return rest_event("POST", "/sample", body, headers, base64_encoded=False)
    return rest_event("POST", "/sample", body, headers, base64_encoded=draw(st.booleans()))


# ---- the envelope: headers, body types, methods, paths ----------------------------------

CONTENT_TYPE_KEYS = ["Content-Type", "content-type", "CONTENT-TYPE", "Content-type", "cOnTeNt-TyPe"]
GARBAGE_TYPES = ["", ";", "multipart", "multipart/form-data;", "image/jpeg", "application/json", "*/*", "\x00",
                 "text/plain; charset=utf-8", "multipart/form-data; boundary", "ü/ß; boundary=ü", "a" * 10_000]
METHODS = [None, "", "get", "post", "Post", "POST ", " GET", "OPTIONS", "options", "HEAD", "DELETE", "PATCH", "PUT",
           123, 1.5, True, ["POST"], {"m": "POST"}]
PATHS = [None, "", "/", "/reconstruct/", "/Reconstruct", "//sample", "/sample?x=1", "/health\x00", "/{proxy+}",
         "/dev/health", "../health", "/ｈealth", "/health/..", "*", 42, ["/health"], {"p": "/health"}, "/" * 5000]
BODY_VALUES = [None, "", 0, 1, -1, 2.5, True, False, [], [1, 2], ["a"], {}, {"n": 1}, b"", b"{}"]
FLAG_VALUES = [True, False, None, "true", "false", "", 1, 0, [], {}]


@st.composite
def valid_events(draw) -> dict:
    if draw(st.booleans()):
        return rest_event(draw(st.sampled_from(["GET", "OPTIONS"])), draw(st.sampled_from(sorted(handler.PATHS))))
    path, body, content_type = draw(real_requests())
    return as_event(path, body, content_type, draw)


def _odd_headers(draw, event: dict) -> None:
    headers = event["headers"]
    content_type = headers.pop("Content-Type", None)
    how = draw(st.sampled_from(["None", "no content-type", "list", "multiValueHeaders only", "case", "garbage",
                                "not a string", "two spellings", "not a dict"]))
    if how == "None":
        event["headers"] = None
    elif how == "list":
        event["headers"] = [[key, value] for key, value in headers.items()]
    elif how == "multiValueHeaders only":
        event["headers"] = None
        event["multiValueHeaders"] = {"Content-Type": [content_type], **{k: [v] for k, v in headers.items()}}
    elif how == "case":
        headers[draw(st.sampled_from(CONTENT_TYPE_KEYS))] = content_type
    elif how == "garbage":
        headers[draw(st.sampled_from(CONTENT_TYPE_KEYS))] = draw(st.one_of(st.sampled_from(GARBAGE_TYPES), any_text))
    elif how == "not a string":
        headers["Content-Type"] = draw(st.sampled_from([None, 0, True, [content_type], {"value": content_type}]))
    elif how == "two spellings":
        headers["Content-Type"], headers["content-type"] = content_type, draw(st.sampled_from(GARBAGE_TYPES))
    elif how == "not a dict":
        event["headers"] = draw(st.sampled_from(["Content-Type: application/json", 42, [], True]))


def _odd_body(draw, event: dict) -> None:
    body = event.get("body")
    raw = base64.b64decode(body) if event.get("isBase64Encoded") and isinstance(body, str) else None
    how = draw(st.sampled_from(["other type", "base64 flag but not base64", "binary as text", "odd flag"]))
    if how == "other type":
        event["body"] = draw(st.one_of(st.sampled_from(BODY_VALUES), json_values))
    elif how == "base64 flag but not base64":
        event["isBase64Encoded"] = True
        event["body"] = draw(st.one_of(any_text, st.sampled_from(["%%%", "=", "YQ", "YQ==\n", "ab cd", "é"])))
    elif how == "binary as text" and raw is not None:
        # Binary that API Gateway did not base64-encode, as latin-1 or with lone surrogates.
        event["isBase64Encoded"] = False
        event["body"] = raw.decode(draw(st.sampled_from(["latin-1", "utf-8"])), "surrogateescape")
    else:
        event["isBase64Encoded"] = draw(st.sampled_from(FLAG_VALUES))


def _odd_method(draw, event: dict) -> None:
    event["httpMethod"] = draw(st.one_of(st.sampled_from(METHODS), any_text))


def _odd_path(draw, event: dict) -> None:
    path = draw(st.one_of(st.sampled_from(PATHS), any_text))
    for key in draw(st.sampled_from([["resource"], ["path"], ["resource", "path"]])):
        event[key] = path
    if draw(st.booleans()):
        event.pop("resource")  # only "path", as some test tools send


PERTURBATIONS = [_odd_headers, _odd_body, _odd_method, _odd_path]


@st.composite
def odd_envelope_events(draw) -> dict:
    """Valid requests with wrong or missing headers, bodies of other types, odd methods and paths."""
    event = draw(valid_events())
    for perturb in draw(st.lists(st.sampled_from(PERTURBATIONS), min_size=1, max_size=4, unique=True)):
        perturb(draw, event)
    return event


not_dict_events = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=50), st.binary(max_size=50),
    st.lists(json_values, max_size=3), st.builds(lambda event: [event], valid_events()),
    st.builds(lambda event: json.dumps(event), valid_events()),  # the event still serialised
)


# ---- random bodies on any route ---------------------------------------------------------

def random_body_event(draw) -> dict:
    """Any route, a random or truncated body, a content type that may not fit it."""
    method, path = draw(st.sampled_from(sorted(handler.ROUTES)))
    if draw(st.booleans()):
        _, body, content_type = draw(real_requests())
        body = body[: draw(st.integers(0, len(body)))]
    else:
        body = draw(st.binary(max_size=2000))
        content_type = draw(st.one_of(
            st.sampled_from([None, "application/json", "multipart/form-data; boundary=x"]),
            boundaries.map(lambda b: f"multipart/form-data; boundary={b}"),
            any_text,
        ))
    return as_event(path, body, content_type, draw, method=draw(st.sampled_from([method, "POST"])))


# Every fuzz target as a strategy of events; the benchmark draws from these.
TARGETS = {
    "random_bodies": st.composite(random_body_event)(),
    "damaged_real_requests": damaged_real_events(),
    "handmade_multipart": handmade_multipart_events(),
    "odd_envelopes": odd_envelope_events(),
    "not_dict_events": not_dict_events,
    "odd_images": odd_image_events(),
    "sample_json": sample_events(),
    "interpolate_steps": interpolate_steps_events(),
}


# ---- the tests ------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def quiet_request_log():
    """One INFO line per request adds up over thousands; errors and tracebacks still show."""
    logger = logging.getLogger("car-vae")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)
    print(f"\nfuzz: {TALLY.requests} requests, {dict(sorted(TALLY.by_status.items()))}")


@FUZZ
@given(st.data())
def test_random_and_truncated_bodies(data):
    request(random_body_event(data.draw))


@FUZZ
@given(TARGETS["damaged_real_requests"])
def test_truncated_and_flipped_real_requests(event):
    request(event)


@FUZZ
@given(TARGETS["handmade_multipart"])
def test_broken_boundaries_nameless_parts_duplicate_fields(event):
    request(event)


@FUZZ
@given(TARGETS["odd_envelopes"])
def test_wrong_headers_body_types_methods_and_paths(event):
    request(event)


@FUZZ
@given(TARGETS["not_dict_events"])
def test_events_that_are_not_dicts(event):
    assert request(event)["statusCode"] == 404


@FUZZ
@given(TARGETS["odd_images"])
def test_images_of_odd_modes_and_shapes(event):
    request(event)


@FUZZ
@given(TARGETS["sample_json"])
def test_sample_json(event):
    request(event)


@FUZZ
@given(TARGETS["interpolate_steps"])
def test_interpolate_steps_text(event):
    request(event)
