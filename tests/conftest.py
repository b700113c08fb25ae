"""Quiet, CPU-only TensorFlow for every test, and the run fixture of test_run_safety.py.
Shared helpers live in rae_keras.testing (importable from subprocesses too)."""

import os
import socket
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# The preprocessed-image cache of every test (and of the subprocesses tests start) goes
# to a fresh temporary directory, never to the user's ~/.cache/rae_keras.
os.environ["RAE_KERAS_CACHE"] = tempfile.mkdtemp(prefix="rae_keras_test_cache-")

import pytest  # noqa: E402

from rae_keras import testing  # noqa: E402


@pytest.fixture
def tiny_run_config(tmp_path):
    """A complete run configuration: a 2-stage network on 16x16 gray images, 1 epoch."""
    return testing.tiny_config(tmp_path / "run", filters=(4, 8))


@pytest.fixture
def no_network(monkeypatch):
    """Fail loudly if anything tries to open a connection."""
    def refuse(*args, **kwargs):
        raise AssertionError("test tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
