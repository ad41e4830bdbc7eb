"""Shared fixtures: tiny random models (fast) and the shared corpus beside the repo (real text)."""

import copy
from pathlib import Path

import great_expectations  # noqa: F401
import numpy as np
import pytest
import torch
import transformers.models.gpt2.modeling_gpt2  # noqa: F401
import transformers.models.gpt_neox.modeling_gpt_neox  # noqa: F401
import transformers.models.llama.modeling_llama  # noqa: F401
import transformers.models.opt.modeling_opt  # noqa: F401
from hypothesis import settings

from atlas import Store, load_corpus, load_model
from atlas._anatomy import decoder_layers

# pytester's in-process runs drop the modules first imported during a run. Lazily imported modules that
# keep global state (great-expectations' active context, the torch operators transformers' model code
# registers, which cannot be registered twice) are therefore imported here, once.
pytest_plugins = ["pytester"]

# Examples run models and write stores: their time depends on the machine's load, not on correctness.
settings.register_profile("atlas", deadline=None)
settings.load_profile("atlas")

SHARED_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "domains-v1.jsonl"


@pytest.fixture(scope="session", params=["tiny-gpt2", "tiny-opt", "tiny-llama"])
def tiny(request):
    """Each tiny layout in turn: GPT-2, OPT, Llama with grouped-query attention."""
    return load_model(request.param, device="cpu")


@pytest.fixture(scope="session")
def tiny_gpt2():
    return load_model("tiny-gpt2", device="cpu")


@pytest.fixture(scope="session")
def starter():
    return load_corpus("starter")


@pytest.fixture(scope="session")
def shared_corpus():
    if not SHARED_CORPUS.is_file():
        pytest.skip(f"the shared corpus is not beside the repo ({SHARED_CORPUS})")
    return load_corpus(SHARED_CORPUS)


@pytest.fixture
def store():
    return Store("sqlite://")


@pytest.fixture(scope="session")
def smollm2():
    """The real offline model; the first load converts its GGUF (~25 s), later loads take seconds."""
    return load_model("smollm2-135m-instruct", device="cpu")


def _naive_gradients(lm, passages, max_tokens: int) -> list[dict[str, np.ndarray]]:
    """Per passage, {block: flattened gradient} in float64, by ``model(labels=ids).loss.backward()`` on a copy
    (HF's loss: the mean NLL over every token after the first, the passage's mean NLL per scored token)."""
    model = copy.deepcopy(lm.model)
    out = []
    for p in passages:
        ids = torch.tensor([([lm.doc_start_id] + lm.tokenizer(p.text, add_special_tokens=False).input_ids)
                            [: max_tokens + 1]])
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        blocks = {"model": torch.cat([q.grad.reshape(-1) for q in model.parameters()])}
        for i, layer in enumerate(decoder_layers(model)):
            blocks[f"layer.{i}"] = torch.cat([q.grad.reshape(-1) for q in layer.parameters()])
        out.append({k: v.double().numpy() for k, v in blocks.items()})
    return out


@pytest.fixture(scope="session")
def naive_gradients():
    """Per-passage gradients computed independently of atlas.instruments._pergrad, one backward per passage."""
    return _naive_gradients
