"""Files the encoder writes get the usual umask permissions, not those of a private temp dir."""

from __future__ import annotations

import os
import stat

import pytest

from sparseblob.encoder.config import CompressionConfig
from sparseblob.encoder.mlpackage import compress_package
from tests.conftest import FIXTURES


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_package_directory_mode_follows_umask(tmp_path, umask_022):
    output = tmp_path / "out.mlpackage"

    compress_package(FIXTURES / "formats/ios18/dense.mlpackage", output, CompressionConfig.from_options(sparsity=0.5, pattern="unstructured"))

    assert stat.S_IMODE(output.stat().st_mode) == 0o755


def test_onnx_files_mode_follows_umask(tmp_path, umask_022):
    magika = pytest.importorskip("magika")
    from pathlib import Path

    from sparseblob.encoder.onnx_compress import compress_onnx

    source = Path(magika.__file__).parent / "models" / "standard_v3_3" / "model.onnx"
    output = tmp_path / "out.onnx"
    compress_onnx(source, output, sparsity=0.5)

    for written in tmp_path.iterdir():
        assert stat.S_IMODE(written.stat().st_mode) == 0o644, written
