import pytest
import torch

from atlas import MODELS, ModelUnavailable, load_model
from atlas._models import cache_dir


def test_registry_names():
    for name in ["smollm2-135m-instruct", "gpt2", "opt-125m", "mistral-7b", "mistral-7b-instruct",
                 "tiny-gpt2", "tiny-opt", "tiny-llama"]:
        assert name in MODELS


@pytest.mark.parametrize("name, token", [("tiny-gpt2", "<|endoftext|>"), ("tiny-opt", "</s>"),
                                         ("tiny-llama", "<s>")])
def test_tiny_models_are_seeded_and_start_documents_with_their_registry_token(name, token):
    a, b = load_model(name, device="cpu"), load_model(name, device="cpu")
    assert a.doc_start_token == token and a.doc_start_from == "registry"
    assert a.revision.endswith("random-init seed=0") and a.dtype == "float32" and a.device == "cpu"
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)


def test_unavailable_hub_model_says_where_atlas_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelUnavailable) as info:
        load_model("opt-125m", device="cpu")
    message = str(info.value)
    assert "'opt-125m'" in message and "facebook/opt-125m" in message
    assert "Hugging Face cache" in message and "hf download facebook/opt-125m" in message


def test_bad_device_and_dtype():
    with pytest.raises(ValueError, match="unknown device"):
        load_model("tiny-gpt2", device="tpu")
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model("tiny-gpt2", device="cpu", dtype="int8")


def test_local_directory_loads(tmp_path, tiny_gpt2):
    tiny_gpt2.model.save_pretrained(tmp_path)
    tiny_gpt2.tokenizer.save_pretrained(tmp_path)
    lm = load_model(str(tmp_path), device="cpu")
    assert lm.revision.startswith("dir:")
    ids = torch.tensor([[1, 50, 60, 70]])
    assert torch.allclose(lm.model(ids).logits, tiny_gpt2.model(ids).logits, atol=1e-5)


@pytest.mark.slow
def test_offline_model_loads_from_cache_with_endoftext_as_document_start(smollm2):
    assert smollm2.doc_start_token == "<|endoftext|>" and smollm2.doc_start_from == "registry"
    assert smollm2.revision.startswith("gguf-sha256:")
    assert smollm2.n_layers == 30 and smollm2.n_heads == 9
    converted = [p for p in (cache_dir() / "models").iterdir()  # beside it: the conversion's lock file
                 if p.name.startswith("smollm2-135m-instruct-") and p.is_dir()]
    assert converted and "quantization_config" not in (converted[0] / "config.json").read_text()
