"""Where the parts of a decoder live in each supported architecture.

Instruments reach into attention layers (maps, head gates, per-block Hessians);
this module is the one place that knows the module paths of GPT-2, OPT,
Llama/Mistral (and GPT-NeoX/Pythia) layouts.

    layer i           attention module        its output projection   MLP
    GPT-2             transformer.h[i].attn   .c_proj (Conv1D)        transformer.h[i].mlp
    OPT               model.decoder.layers[i].self_attn  .out_proj     .fc1/.fc2 (on the layer)
    Llama / Mistral   model.layers[i].self_attn          .o_proj       model.layers[i].mlp
    GPT-NeoX          gpt_neox.layers[i].attention       .dense        gpt_neox.layers[i].mlp

The input of the output projection is the heads' outputs concatenated:
[B, T, n_heads * head_dim], head h in columns h*head_dim:(h+1)*head_dim.

Weights as arrays. Where a family of units sits inside the parameters is an ``Axis``:
a parameter name (as ``model.named_parameters()`` gives it, tied weights once), the
axis that indexes the units, and the offset where the family starts on it. Layouts:

    nn.Linear        weight [out, in]     bias [out]     (OPT, Llama)
    Conv1D (GPT-2)   weight [in, out]     bias [out]
    GPT-2 c_attn     weight [d, 3d]: q, k, v side by side on axis 1 (offsets 0, d, 2d)

    projections       MLP in            MLP out     q / k / v                    attention out
    GPT-2             mlp.c_fc          mlp.c_proj  attn.c_attn (fused)          attn.c_proj
    OPT               fc1               fc2         self_attn.q_proj/k_proj/v_proj  self_attn.out_proj
    Llama / Mistral   mlp.gate_proj, mlp.up_proj    mlp.down_proj  self_attn.q_proj/k_proj/v_proj  o_proj
    GPT-NeoX          mlp.dense_h_to_4h  mlp.dense_4h_to_h  (query_key_value interleaves q, k, v per head:
                                                           no head axes)

``mlp_axes``, ``head_axes`` and ``residual_axes`` list every parameter axis indexed by
a layer's MLP hidden units, by its attention heads (q, k, v, o), and by the residual
stream's features: what a permutation of those units must move together.

Hooks. An instrument that reads or changes what flows through these parts (a layer's
output, an output projection's input) adds PyTorch hooks for one computation with
``hooks``, the one owner of the add-then-remove lifecycle; ``hook_count`` counts what
is attached, which CISP compares before and after a run.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from torch import nn
from transformers.pytorch_utils import Conv1D

from ._errors import BadInput
from ._public import public

__all__ = ["Axis", "attention", "attention_params", "decoder_layers", "eager_attention", "final_norm", "head_axes",
           "head_dim", "hook_count", "hooks", "kv_groups", "mlp_axes", "mlp_params", "mlp_projections",
           "output_projection", "qkv_projections", "residual_axes"]


def _first_path(model: nn.Module, paths: tuple[str, ...]) -> nn.Module | None:
    """The module at the first dotted attribute path that exists in ``model``."""
    for path in paths:
        module = model
        try:
            for part in path.split("."):
                module = getattr(module, part)
        except AttributeError:
            continue
        return module
    return None


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    layers = _first_path(model, ("transformer.h", "model.decoder.layers", "model.layers", "gpt_neox.layers"))
    if layers is not None:
        return list(layers)
    raise BadInput(f"unsupported architecture {type(model).__name__}: Atlas knows GPT-2, OPT, Llama/Mistral "
                     "and GPT-NeoX layouts (see atlas._anatomy)")


def final_norm(model: nn.Module) -> nn.Module:
    """What maps the last decoder layer's output to the input of ``model.get_output_embeddings()``.

    GPT-2 ``transformer.ln_f``; OPT ``model.decoder.final_layer_norm`` then ``project_out``
    (each may be absent); Llama/Mistral ``model.norm``; GPT-NeoX ``gpt_neox.final_layer_norm``.
    A new ``nn.Sequential`` over the model's own modules: the model is not changed."""
    norm = _first_path(model, ("transformer.ln_f", "model.norm", "gpt_neox.final_layer_norm"))
    if norm is not None:
        return norm
    decoder = getattr(getattr(model, "model", None), "decoder", None)
    if decoder is not None and hasattr(decoder, "final_layer_norm"):
        return nn.Sequential(*[m for m in (decoder.final_layer_norm, getattr(decoder, "project_out", None))
                               if m is not None])
    raise BadInput(f"unsupported architecture {type(model).__name__}: no final norm found (see atlas._anatomy)")


def attention(model: nn.Module, layer: int) -> nn.Module:
    block = decoder_layers(model)[layer]
    for name in ("attn", "self_attn", "attention"):
        if hasattr(block, name):
            return getattr(block, name)
    raise BadInput(f"layer {layer} of {type(model).__name__} has no attention module")


def output_projection(model: nn.Module, layer: int) -> nn.Module:
    attn = attention(model, layer)
    for name in ("c_proj", "out_proj", "o_proj", "dense"):
        if hasattr(attn, name):
            return getattr(attn, name)
    raise BadInput(f"layer {layer}: attention module {type(attn).__name__} has no output projection")


def head_dim(model: nn.Module) -> int:
    config = model.config
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def kv_groups(model: nn.Module) -> int:
    """Query heads per key/value head: 1 for multi-head attention, >1 for grouped-query attention.

    Query head h reads KV head h // kv_groups(model)."""
    config = model.config
    return config.num_attention_heads // (getattr(config, "num_key_value_heads", None) or config.num_attention_heads)


def attention_params(model: nn.Module, layer: int) -> list[nn.Parameter]:
    return list(attention(model, layer).parameters())


def mlp_params(model: nn.Module, layer: int) -> list[nn.Parameter]:
    block = decoder_layers(model)[layer]
    if hasattr(block, "mlp"):
        return list(block.mlp.parameters())
    return [p for name in ("fc1", "fc2") for p in getattr(block, name).parameters()]  # OPT


def mlp_projections(model: nn.Module, layer: int) -> tuple[list[nn.Module], nn.Module]:
    """The MLP's input projections (their outputs are the hidden units) and its output projection.

    Llama/Mistral have two inputs, ``gate_proj`` and ``up_proj``: unit u is silu(gate_u) * up_u."""
    block = decoder_layers(model)[layer]
    for inputs, output in ((("mlp.c_fc",), "mlp.c_proj"), (("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"),
                           (("fc1",), "fc2"), (("mlp.dense_h_to_4h",), "mlp.dense_4h_to_h")):
        found = [_first_path(block, (path,)) for path in (*inputs, output)]
        if all(m is not None for m in found):
            return found[:-1], found[-1]
    raise BadInput(f"layer {layer} of {type(model).__name__}: no MLP projections found (see atlas._anatomy)")


def qkv_projections(model: nn.Module, layer: int) -> dict[str, tuple[nn.Module, int]]:
    """``{"q" | "k" | "v": (module, offset)}``: where each projection's outputs start in its module.

    Query head h owns outputs offset + h*head_dim ... + head_dim; KV head j likewise in k and v."""
    attn = attention(model, layer)
    if hasattr(attn, "c_attn"):  # GPT-2: fused [d, 3d], q | k | v
        width = model.config.hidden_size
        return {"q": (attn.c_attn, 0), "k": (attn.c_attn, width), "v": (attn.c_attn, 2 * width)}
    if all(hasattr(attn, f"{x}_proj") for x in "qkv"):
        return {x: (getattr(attn, f"{x}_proj"), 0) for x in "qkv"}
    raise BadInput(f"layer {layer}: attention module {type(attn).__name__} has no separate or GPT-2-fused q/k/v "
                     "projections (GPT-NeoX interleaves q, k, v per head in query_key_value: not supported)")


@dataclass(frozen=True)
class Axis:
    """Units indexed along ``axis`` of parameter ``param``, starting at index ``offset``."""

    param: str  # a name from model.named_parameters()
    axis: int
    offset: int = 0


def mlp_axes(model: nn.Module, layer: int) -> list[Axis]:
    """Every parameter axis indexed by layer ``layer``'s MLP hidden units [d_ff].

    The input projections' output axis and their biases, and the output projection's input axis."""
    names = _names(model)
    inputs, output = mlp_projections(model, layer)
    return [a for m in inputs for a in _axes(names, m, "out")] + _axes(names, output, "in")


def head_axes(model: nn.Module, layer: int) -> dict[str, list[Axis]]:
    """``{"q", "k", "v", "o": [Axis]}``: the axes indexed by head * head_dim + i in layer ``layer``.

    "q" (query projection outputs and bias) and "o" (the output projection's input) are
    indexed by the n_heads query heads; "k" and "v" by the n_heads / kv_groups KV heads."""
    names = _names(model)
    found = {x: _axes(names, m, "out", offset) for x, (m, offset) in qkv_projections(model, layer).items()}
    return {**found, "o": _axes(names, output_projection(model, layer), "in")}


def residual_axes(model: nn.Module) -> list[Axis]:
    """Every parameter axis indexed by the residual stream's features [d_model], each once.

    Token and position embeddings (their feature axis) or OPT's ``project_in``/``project_out``
    where the residual is wider than the embeddings; every norm's weight and bias (LayerNorm
    and RMSNorm act on all features alike); the input axis of every projection that reads the
    stream (q, k, v, MLP in) and the output axis and bias of every one that writes to it
    (attention out, MLP out); the output embeddings' feature axis when not tied to the input ones."""
    names = _names(model)
    decoder = getattr(getattr(model, "model", None), "decoder", None)  # OPT
    project_in, project_out = (getattr(decoder, "project_in", None), getattr(decoder, "project_out", None))
    axes = _axes(names, project_in, "out") if project_in is not None else [
        Axis(names[id(model.get_input_embeddings().weight)], 1)]
    for path in ("transformer.wpe", "model.decoder.embed_positions"):
        positions = _first_path(model, (path,))
        if positions is not None:
            axes.append(Axis(names[id(positions.weight)], 1))
    for layer, block in enumerate(decoder_layers(model)):
        axes += _norm_axes(names, block.children())  # the block's own norms, not any inside attention
        readers = {id(m): m for m, _ in qkv_projections(model, layer).values()}  # GPT-2's c_attn once
        inputs, output = mlp_projections(model, layer)
        for m in [*readers.values(), *inputs]:
            axes += _axes(names, m, "in")
        for m in (output_projection(model, layer), output):
            axes += _axes(names, m, "out")
    axes += _norm_axes(names, final_norm(model).modules())
    if project_out is not None:
        axes += _axes(names, project_out, "in")
    else:
        axes.append(Axis(names[id(model.get_output_embeddings().weight)], 1))
    return list(dict.fromkeys(axes))  # tied output embeddings are the input ones: listed once


def _names(model: nn.Module) -> dict[int, str]:
    return {id(p): name for name, p in model.named_parameters()}


def _axes(names: dict[int, str], module: nn.Module, side: str, offset: int = 0) -> list[Axis]:
    """The axis of ``module``'s weight indexing its inputs (``side="in"``) or its outputs (``"out"``,
    with the bias)."""
    out_axis = 1 if isinstance(module, Conv1D) else 0
    axes = [Axis(names[id(module.weight)], out_axis if side == "out" else 1 - out_axis, offset)]
    if side == "out" and getattr(module, "bias", None) is not None:
        axes.append(Axis(names[id(module.bias)], 0, offset))
    return axes


def _norm_axes(names: dict[int, str], modules) -> list[Axis]:
    return [Axis(names[id(p)], 0) for m in modules if "norm" in type(m).__name__.lower()
            for p in (getattr(m, "weight", None), getattr(m, "bias", None)) if p is not None]


@contextmanager
def eager_attention(model: nn.Module):
    """Switch to eager attention for the block (attention maps, double backward), then restore.

    SDPA returns no attention weights and has no double backward."""
    before = model.config._attn_implementation
    if before != "eager":
        model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        if before != "eager":
            model.set_attn_implementation(before)


#: what each hook kind registers, and what its function receives (and may return to replace):
#: ``forward``            fn(module, args, output)    -> new output or None  (after forward)
#: ``forward_pre``        fn(module, args)            -> new args or None    (before forward)
#: ``forward_pre_kwargs`` fn(module, args, kwargs)    -> (args, kwargs) or None
#: ``backward``           fn(module, grad_input, grad_output) -> new grad_input or None
_REGISTER: dict[str, Callable] = {
    "forward": lambda module, fn: module.register_forward_hook(fn),
    "forward_pre": lambda module, fn: module.register_forward_pre_hook(fn),
    "forward_pre_kwargs": lambda module, fn: module.register_forward_pre_hook(fn, with_kwargs=True),
    "backward": lambda module, fn: module.register_full_backward_hook(fn),
}


@contextmanager
def hooks(*specs: tuple[nn.Module, str, Callable]):
    """Attach every ``(module, kind, fn)`` hook for the block, and remove every one on the way out.

    PyTorch hooks are state of the model: a hook left behind changes every later
    forward pass of every instrument (and CISP stores the run as failed, since the
    model's hook count changed). TransformerLens makes this the job of one owner:
    a ``HookPoint`` on each activation and the ``HookedRootModule.hooks(fwd_hooks=...,
    bwd_hooks=...)`` context manager, which adds the hooks and resets them when the
    block ends (https://github.com/TransformerLensOrg/TransformerLens,
    ``transformer_lens/hook_points.py``). Atlas measures Hugging Face models as they
    are, without hook points, so the hooks go on the modules this module finds
    (``decoder_layers``, ``attention``, ``output_projection``...), and this is the one
    place that adds and removes them. ``kind`` is one of ``_REGISTER``'s keys: ``forward``,
    ``forward_pre``, ``forward_pre_kwargs`` (the keyword arguments too: mask, rotary
    embeddings...) or ``backward`` (``register_full_backward_hook``).

    Hooks are added in the order given (hooks on one module run in that order); if
    adding one fails, those already added are removed before the error propagates, and
    an exception in the block removes them all too. Each decoder layer's output, kept
    for one forward pass:

    >>> import torch
    >>> from atlas import load_model
    >>> model = load_model("tiny-gpt2").model
    >>> outputs = []
    >>> keep = lambda module, args, output: outputs.append(output)
    >>> with hooks(*[(layer, "forward", keep) for layer in decoder_layers(model)]):
    ...     logits = model(torch.tensor([[1, 2, 3]])).logits
    >>> len(outputs), hook_count(model)
    (2, 0)
    """
    with ExitStack() as added:
        for module, kind, fn in specs:
            if kind not in _REGISTER:
                raise BadInput(f"hook kind {kind!r}: one of {', '.join(_REGISTER)}")
            added.callback(_REGISTER[kind](module, fn).remove)
        yield


def hook_count(model: nn.Module) -> int:
    """Hooks attached to ``model`` and its submodules, of every kind ``hooks`` adds (and backward pre-hooks)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


public("atlas.models", attention, decoder_layers, eager_attention, final_norm, head_dim, hook_count, hooks,
       output_projection)
