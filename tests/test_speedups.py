"""The optional C accelerator against the pure-Python reference, and its optional build."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from wsgiws import limits, protocol
from wsgiws.limits import _request_header_bytes_python
from wsgiws.protocol import _apply_mask_python

ROOT = Path(__file__).resolve().parent.parent

try:
    from wsgiws import _speedups  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # not built: `python setup.py build_ext --inplace`
    _speedups = None

needs_c = pytest.mark.skipif(_speedups is None, reason="wsgiws._speedups is not built")

LENGTHS = [
    0,
    1,
    2,
    3,
    4,
    5,
    7,
    8,
    9,
    15,
    16,
    17,
    31,
    32,
    33,
    63,
    64,
    65,
    125,
    126,
    4095,
    4096,
    4097,
    65535,
    65536,
    65537,
    (1 << 20) + 3,
]


def bytewise(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 9, 33, 1000, 1001])
def test_python_mask_matches_bytewise_xor(n: int) -> None:
    data, key = os.urandom(n), os.urandom(4)
    assert _apply_mask_python(data, key) == bytewise(data, key)


@needs_c
def test_module_uses_the_extension_unless_disabled() -> None:
    disabled = os.environ.get("WSGIWS_NO_EXTENSIONS", "") not in ("", "0")
    expected = _apply_mask_python if disabled else _speedups.apply_mask
    assert protocol.apply_mask is expected


@needs_c
@pytest.mark.parametrize("n", LENGTHS)
def test_c_mask_matches_python_on_random_data(n: int) -> None:
    rng = random.Random(n)
    for _ in range(3):
        data = rng.randbytes(n)
        key = rng.randbytes(4)
        expected = _apply_mask_python(data, key)
        assert _speedups.apply_mask(data, key) == expected
        assert _speedups.apply_mask(bytearray(data), key) == expected
        assert _speedups.apply_mask(memoryview(data), bytearray(key)) == expected
        if n < 2000:
            assert expected == bytewise(data, key)


@needs_c
def test_c_mask_on_unaligned_slices_and_round_trip() -> None:
    data = os.urandom(10_000)
    key = b"\x9a\x00\xff\x13"
    view = memoryview(data)
    for start in range(9):
        piece = view[start : start + 5_000 - start]
        masked = _speedups.apply_mask(piece, key)
        assert type(masked) is bytes
        assert masked == _apply_mask_python(piece, key)
        assert _speedups.apply_mask(masked, key) == bytes(piece)


@needs_c
def test_c_mask_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        _speedups.apply_mask(b"abc", b"123")
    with pytest.raises(ValueError):
        _speedups.apply_mask(b"abc", b"12345")
    with pytest.raises(TypeError):
        _speedups.apply_mask("text", b"1234")
    with pytest.raises(TypeError):
        _speedups.apply_mask(b"abc")
    with pytest.raises(BufferError):  # a non-contiguous view
        _speedups.apply_mask(memoryview(b"abcdefgh")[::2], b"1234")


def header_environ() -> dict[str, object]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/a-long-path-that-is-not-a-header",
        "QUERY_STRING": "room=42&name=\u00e9",
        "HTTP_HOST": "example.com",
        "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
        "HTTP_X_\u00e9": "\u2603 snow",  # not latin-1: a wider string kind
        "HTTP_X_NUMBER": 12345,  # not a str: counted as str() of it
        "HTTP_": "",
        "HTTP": "not a header",
        "http_lower": "not a header either",
        "wsgi.input": object(),
    }


def test_python_header_bytes_counts_header_keys_values_and_the_query() -> None:
    expected = len("room=42&name=\u00e9") + sum(
        len(k) + len(str(v))
        for k, v in [
            ("HTTP_HOST", "example.com"),
            ("HTTP_SEC_WEBSOCKET_KEY", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("HTTP_X_\u00e9", "\u2603 snow"),
            ("HTTP_X_NUMBER", 12345),
            ("HTTP_", ""),
        ]
    )
    assert _request_header_bytes_python(header_environ()) == expected
    assert _request_header_bytes_python({}) == 0


@needs_c
def test_c_header_bytes_matches_python() -> None:
    environ = header_environ()
    assert _speedups.request_header_bytes(environ) == _request_header_bytes_python(environ)
    rng = random.Random(7)
    for _ in range(200):
        environ = {
            rng.choice(["HTTP_", "SERVER_", "wsgi.", "HTTP", ""])
            + "".join(rng.choice("AB_\u00e9\u2603") for _ in range(rng.randrange(6))): rng.choice(
                ["", "x" * rng.randrange(300), 7, None, b"bytes"]
            )
            for _ in range(rng.randrange(30))
        }
        assert _speedups.request_header_bytes(environ) == _request_header_bytes_python(environ)
    with pytest.raises(TypeError):
        _speedups.request_header_bytes([("HTTP_HOST", "x")])


@needs_c
def test_limits_use_the_extension_unless_disabled() -> None:
    disabled = os.environ.get("WSGIWS_NO_EXTENSIONS", "") not in ("", "0")
    expected = _request_header_bytes_python if disabled else _speedups.request_header_bytes
    assert limits.request_header_bytes is expected


def test_build_without_a_working_compiler_still_succeeds(tmp_path: Path) -> None:
    """``optional=True``: a failed compile is a warning and the install goes on."""
    env = dict(os.environ, CC="false", LDSHARED="false", WSGIWS_NO_EXTENSIONS="")
    result = subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "build_ext",
            "--build-lib",
            str(tmp_path / "lib"),
            "--build-temp",
            str(tmp_path / "tmp"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "_speedups" in result.stderr  # the warning names the skipped extension
    assert not list((tmp_path / "lib").rglob("_speedups*"))
