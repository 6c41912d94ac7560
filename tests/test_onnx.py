"""kernels.onnx: the session factory (explicit options, provider choice, forcing, cache, errors)."""
from __future__ import annotations

import base64

import numpy as np
import onnxruntime as ort
import pytest

from emote.engine.exceptions import ConfigError, EmoteError, ModelFileError
from emote.kernels import onnx as K

# y = 2 * x, opset 17 (made with onnx.helper; embedded so the test needs neither torch nor onnx)
DOUBLE = base64.b64decode("CAg6TQoQCgF4CgN0d28SAXkiA011bBIGZG91YmxlKg0QASIEAAAAQEIDdHdvWhAKAXgSCwoJCAESBQoDEgFuYhAKAXkS"
                          "CwoJCAESBQoDEgFuQgQKABAR")


@pytest.fixture
def model(tmp_path):
    p = tmp_path / "double.onnx"
    p.write_bytes(DOUBLE)
    K.clear_cache()
    yield p
    K.clear_cache()


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(K.ENV_PROVIDER, raising=False)
    monkeypatch.delenv(K.ENV_THREADS, raising=False)


def test_runs_and_caches(model):
    s = K.session(model)
    y = s.run(None, {"x": np.arange(4, dtype=np.float32)})[0]
    np.testing.assert_array_equal(y, [0, 2, 4, 6])
    assert K.session(model) is s                      # cached
    assert K.session(model, threads=2) is not s       # different options, different session
    assert s.get_providers()[-1] == "CPUExecutionProvider"


def test_options_explicit():
    so = K.session_options()
    assert so.intra_op_num_threads == 1 and so.inter_op_num_threads == 1
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert K.session_options(3).intra_op_num_threads == 3


def test_threads_env_and_errors(monkeypatch):
    monkeypatch.setenv(K.ENV_THREADS, "2")
    assert K.session_options().intra_op_num_threads == 2
    monkeypatch.setenv(K.ENV_THREADS, "two")
    with pytest.raises(ConfigError, match=K.ENV_THREADS):
        K.session_options()
    with pytest.raises(ConfigError):
        K.session_options(0)


@pytest.mark.parametrize("have, want", [
    (["CPUExecutionProvider"], ["CPUExecutionProvider"]),
    (["AzureExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    (["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"],
     ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]),
])
def test_preference_order(monkeypatch, have, want):
    monkeypatch.setattr(K, "available_providers", lambda: have)
    assert K.choose_providers() == want


def test_force(monkeypatch):
    have = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(K, "available_providers", lambda: have)
    assert K.choose_providers("cpu") == ["CPUExecutionProvider"]
    assert K.choose_providers("CUDA") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert K.choose_providers("auto")[0] == "TensorrtExecutionProvider"
    monkeypatch.setenv(K.ENV_PROVIDER, "cuda")
    assert K.choose_providers()[0] == "CUDAExecutionProvider"
    assert K.choose_providers("cpu") == ["CPUExecutionProvider"]     # the argument beats the env


def test_forced_missing_is_clear(monkeypatch, model):
    monkeypatch.setattr(K, "available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(K.ProviderError, match=r"TensorrtExecutionProvider.*only CPUExecutionProvider.*\[gpu\]"):
        K.choose_providers("tensorrt")
    monkeypatch.setenv(K.ENV_PROVIDER, "cuda")
    with pytest.raises(EmoteError, match="CUDAExecutionProvider"):
        K.session(model)
    with pytest.raises(ConfigError, match="unknown ONNX execution provider"):
        K.choose_providers("quantum")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        K.session(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="cannot load"):
        K.session(bad)
