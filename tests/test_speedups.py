"""The optional C accelerator against the pure-Python reference, and its optional build."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from wsgiws import protocol
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
