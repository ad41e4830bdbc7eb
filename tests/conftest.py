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


@pytest.fixture(scope="session")
def instrument_tables():
    """Small schema-shaped tables of every instrument with a figure, with known shapes: 3 layers x 4 heads
    of ablation (ΔPPL changes sign), two attention blocks of Hessian eigenvalues and SLQ density (weights
    summing to 1 per block), three domains of gradient, and an interpolation with a barrier at t = 0.5."""
    import pandas as pd

    ablation = pd.DataFrame([{"layer": layer, "head": head, "delta_ppl": 0.5 * layer - 0.3 * head,
                              "ppl": 50.0 + 0.5 * layer - 0.3 * head, "baseline_ppl": 50.0,
                              "importance": 0.1 * (head + 1), "n_tokens": 256}
                             for layer in range(3) for head in range(4)])
    ablation_layers = pd.DataFrame({"layer": [0, 1, 2], "n_heads": [4] * 3, "mean_delta_ppl": [-0.45, 0.05, 0.55],
                                    "ci_low": [-0.8, -0.3, 0.2], "ci_high": [-0.1, 0.4, 0.9],
                                    "mean_importance": [0.25] * 3})
    hessian = pd.DataFrame(
        [{"block": f"layer.{i}.attention", "kind": "eigenvalue", "index": k, "value": v * (i + 1), "weight": None,
          "stderr": None, "backend": "atlas", "n_hvp": 16, "converged": k != 1, "n_params": 3072, "n_tokens": 64}
         for i in range(2) for k, v in ((0, 12.0), (1, 3.0), (-1, -0.02), (-2, -0.005))]
        + [{"block": f"layer.{i}.attention", "kind": "density", "index": j, "value": v, "weight": w, "stderr": None,
            "backend": "atlas", "n_hvp": 16, "converged": True, "n_params": 3072, "n_tokens": 64}
           for i in range(2) for j, (v, w) in enumerate(((-0.02, 0.1), (0.0001, 0.6), (0.5, 0.2), (12.0, 0.1)))]
        + [{"block": f"layer.{i}.attention", "kind": "trace", "index": 0, "value": 20.0, "weight": None,
            "stderr": 1.0, "backend": "atlas", "n_hvp": 20, "converged": True, "n_params": 3072, "n_tokens": 64}
           for i in range(2)])
    gradient = pd.DataFrame({"domain": ["poetry", "spanish", "academic_abstract"], "loss": [3.0, 3.5, 4.0],
                             "grad_norm": [1.5, 2.0, 2.5], "entropy": [2.0, 2.5, 3.0], "max_prob": [0.4, 0.3, 0.2],
                             "n_tokens": [500, 480, 510], "n_passages": [2, 2, 3]})
    ts = [0.0, 0.25, 0.5, 0.75, 1.0]
    loss = [3.0, 3.6, 4.2, 3.5, 3.2]
    linear = [3.0 + 0.2 * t for t in ts]
    interpolation = pd.DataFrame({"t": ts, "loss": loss, "linear": linear,
                                  "excess": [a - b for a, b in zip(loss, linear, strict=True)], "n_tokens": [900] * 5})
    barrier = pd.DataFrame({"definition": ["max_minus_mean_endpoints", "max_minus_linear"],
                            "barrier": [4.2 - 3.1, 4.2 - 3.1], "t_at_max": [0.5, 0.5]})
    return {"ablation": ablation, "ablation_layers": ablation_layers, "hessian": hessian, "gradient": gradient,
            "interpolation": interpolation, "interpolation_barrier": barrier}


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
