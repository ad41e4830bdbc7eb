"""Interpolation: the loss along the straight line between two checkpoints (basin connectivity).

The Framework's *basin connectivity* (global geometry): two minima are *connected*
when a low-loss path joins them, *isolated* when moving between them means
climbing a barrier. The simplest path is the straight line

    θ(t) = (1 - t) θ_A + t θ_B,   t in [0, 1]

from the loaded model (A) to another checkpoint of the same architecture and
vocabulary (B, setting ``other``). Table ``interpolation`` holds L(t) at ``points``
evenly spaced t, the chord between the endpoints ``linear = (1 - t) L_A + t L_B``
and ``excess = L(t) - linear``. A flat or convex profile (excess <= 0) is linear
mode connectivity; a bump is a barrier, which the line only bounds from above
(a curved path may avoid it, Garipov et al. 2018).

Method. L is the token-weighted mean NLL (BOS policy ``prepend``, padding masked)
on ``max_tokens`` tokens of passages taken with the domains in turn
(``atlas._scoring.budgeted``), so a small budget still spans the corpus; table
``interpolation_passages`` keeps each passage's summed NLL at each t, so that a barrier can
be taken per domain and resampled over passages.
θ(t) is a dict of tensors (parameters and floating buffers, ``torch.lerp``: exact
at both ends) evaluated with ``torch.func.functional_call``: the loaded model is
never written to.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd
import torch
from torch.func import functional_call

from .._bounds import at_least
from .._corpus import Corpus
from .._errors import BadInput, SettingsError
from .._models import LoadedModel
from .._scoring import batches, budgeted, token_nll
from .._progress import progress_bar
from ._registry import instrument

__all__ = ["measure_interpolation", "interpolation_barrier"]


def interpolation_barrier(table: pd.DataFrame, *, n_resamples: int = 0, seed: int = 0) -> pd.DataFrame:
    """The barrier on the line, two ways (schema ``interpolation_barrier``).

    ``max_minus_mean_endpoints``: max_t L(t) - (L_A + L_B) / 2 (Frankle et al. 2020);
    ``max_minus_linear``: max_t L(t) - linear(t), the height above the chord (Entezari
    et al. 2022). ``t_at_max`` is where each maximum lies. No CI: the table pools all
    passages at each t, and the bootstrap settings are accepted but unused.
    """
    table = table.sort_values("t")
    t, loss = table["t"].to_numpy(float), table["loss"].to_numpy(float)
    linear = (1 - t) * loss[0] + t * loss[-1]
    above_mean, above_line = loss - (loss[0] + loss[-1]) / 2, loss - linear
    return pd.DataFrame({
        "definition": ["max_minus_mean_endpoints", "max_minus_linear"],
        "barrier": [float(above_mean.max()), float(above_line.max())],
        "t_at_max": [float(t[above_mean.argmax()]), float(t[above_line.argmax()])],
    })


@instrument("interpolation", version="2", measures=("interpolation", "interpolation_passages"),
            summaries={"interpolation_barrier": interpolation_barrier}, terms=("basin_connectivity",),
            models=("other",),
            split_refusal="it evaluates the model at other parameters (torch.func.functional_call), which the split "
                          "model's offloaded modules overwrite with their own weights")
def measure_interpolation(lm: LoadedModel, corpus: Corpus, *, other: LoadedModel | None = None, points: Annotated[int, at_least(2)] = 11,
                          max_tokens: Annotated[int, at_least(1)] = 512,
                          tokens_per_passage: Annotated[int, at_least(0)] = 0,
                          batch_size: Annotated[int, at_least(1)] = 8,
                          progress: bool = True) -> dict[str, pd.DataFrame]:
    """Loss at each t of the line from the model to checkpoint ``other`` (schema ``interpolation``).

    Settings:
        other: the checkpoint at t = 1 (a registry name, a local checkpoint directory or a hub id)
        points: evenly spaced t from 0 to 1, both ends included
        max_tokens: tokens scored at each t, the domains taking turns
        tokens_per_passage: at most this many tokens of each passage (0: whole passages)
        batch_size: passages per forward pass
    """
    if other is None:
        raise SettingsError("interpolation needs a second checkpoint to draw the line to: pass other=<registry name, "
                         "local checkpoint directory or hub id> (same architecture and tokenizer as the loaded model)")
    theta_a, theta_b = _state(lm.model), _state(other.model)
    _check_compatible(lm, other, theta_a, theta_b)
    chosen = budgeted(lm, corpus, max_tokens, tokens_per_passage)
    encoded = [ids for _, ids in chosen]
    scored = np.array([len(ids) - 1 for ids in encoded])  # [P]
    ts = np.linspace(0.0, 1.0, points)
    theta = {k: a.clone() for k, a in theta_a.items()}
    nll = np.zeros((points, len(encoded)))  # [points, P]: each passage's summed NLL at each t
    with torch.no_grad():
        for row, t in enumerate(progress_bar(ts, desc=f"interpolation {lm.name} -> {other.name}", unit="points",
                                             enabled=progress)):
            for k, a in theta_a.items():
                if a.is_floating_point():
                    torch.lerp(a, theta_b[k], float(t), out=theta[k])
            model = _Reparametrised(lm.model, theta)
            for idx, ids, mask in batches(encoded, batch_size, lm.doc_start_id, lm.device):
                nll[row, idx] = token_nll(model, ids, mask).double().sum(1).cpu().numpy()
    loss = nll.sum(1) / scored.sum()
    linear = (1 - ts) * loss[0] + ts * loss[-1]
    t_index, p_index = np.indices(nll.shape)
    passages = pd.DataFrame({"t": ts[t_index.ravel()], "passage_id": [chosen[i][0].id for i in p_index.ravel()],
                             "domain": [chosen[i][0].domain for i in p_index.ravel()], "nll_sum": nll.ravel(),
                             "n_tokens": scored[p_index.ravel()]})
    return {"interpolation": pd.DataFrame({"t": ts, "loss": loss, "linear": linear, "excess": loss - linear,
                                           "n_tokens": [int(scored.sum())] * points}),
            "interpolation_passages": passages}




def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in [*model.named_parameters(), *model.named_buffers()]}


def _check_compatible(a: LoadedModel, b: LoadedModel, theta_a: dict, theta_b: dict) -> None:
    """Raise one ValueError naming everything that keeps the two checkpoints from sharing a line."""
    problems = []
    if type(a.model) is not type(b.model):
        problems.append(f"architectures differ ({type(a.model).__name__} vs {type(b.model).__name__})")
    only_a, only_b = sorted(theta_a.keys() - theta_b.keys()), sorted(theta_b.keys() - theta_a.keys())
    if only_a or only_b:
        problems.append(f"parameter names differ ({len(only_a)} only in {a.name}, e.g. {only_a[:2]}; "
                        f"{len(only_b)} only in {b.name}, e.g. {only_b[:2]})")
    shapes = [f"{k}: {tuple(theta_a[k].shape)} vs {tuple(theta_b[k].shape)}"
              for k in sorted(theta_a.keys() & theta_b.keys()) if theta_a[k].shape != theta_b[k].shape]
    if shapes:
        problems.append(f"{len(shapes)} parameter shapes differ (e.g. {shapes[0]})")
    vocab_a, vocab_b = a.tokenizer.get_vocab(), b.tokenizer.get_vocab()
    if vocab_a != vocab_b:
        differ = sorted(t for t in vocab_a.keys() | vocab_b.keys() if vocab_a.get(t) != vocab_b.get(t))
        problems.append(f"tokenizer vocabularies differ ({len(vocab_a)} vs {len(vocab_b)} tokens; "
                        f"{len(differ)} tokens missing or with other ids, e.g. {differ[:3]})")
    if problems:
        raise BadInput(f"cannot interpolate between {a.name} and {b.name}: " + "; ".join(problems)
                         + ". Pass other= a checkpoint of the same architecture, size and tokenizer "
                         "(e.g. a fine-tuned copy of the loaded model).")


class _Reparametrised:
    """The model called with the tensors of ``theta`` in place of its own (``functional_call``)."""

    def __init__(self, model: torch.nn.Module, theta: dict[str, torch.Tensor]):
        self.model, self.theta = model, theta

    def __call__(self, **inputs):
        return functional_call(self.model, self.theta, args=(), kwargs=inputs)
