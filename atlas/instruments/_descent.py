"""Loss and gradient descent at points of parameter space, shared by the probes that move the weights
(``stiffness``, ``elasticity``).

A point θ is a dict {parameter name: tensor} evaluated with ``torch.func.functional_call``
(tied weights follow their tie), so the loaded model is never written to: the probes move
copies. ``Probe`` fixes one model and one token set; its loss is the token-weighted mean
NLL over the set (BOS policy ``prepend``, padding masked) and every step uses the whole
set's gradient (full-batch gradient descent, no momentum).

A quadratic anchor (EWC, Kirkpatrick et al. 2017: λ Σ_i F_i (θ_i - θ*_i)^2) is applied
exactly in each step rather than through its gradient: the step minimises the loss's
linearisation plus the anchor plus |θ - θ_t|^2 / (2 lr),

    θ_{t+1} = (θ_t - lr ∇L(θ_t) + 2 lr λ F θ*) / (1 + 2 lr λ F),

which is the plain gradient step on L + anchor to first order in lr λ F and, unlike it,
stays stable for any λ (the explicit step diverges once lr λ F_i > 1).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.func import functional_call

from .._models import LoadedModel
from .._scoring import batches, token_nll

__all__ = ["Point", "Probe", "distance", "start_point"]

Point = dict[str, torch.Tensor]


def start_point(lm: LoadedModel) -> Point:
    """The model's parameters as a point (detached views: read, never written)."""
    return {k: v.detach() for k, v in lm.model.named_parameters()}


def distance(a: Point, b: Point) -> float:
    """|a - b|, L2 over every parameter, in float64."""
    return float(sum((a[k].double() - b[k].double()).square().sum() for k in a) ** 0.5)


class Probe:
    """Loss and full-batch gradient descent of one model on one token set, at any point θ."""

    def __init__(self, lm: LoadedModel, encoded: list[list[int]], batch_size: int):
        self.lm, self.encoded, self.batch_size = lm, encoded, batch_size
        self.n_tokens = sum(len(ids) - 1 for ids in encoded)

    def _parts(self, theta: Point) -> Iterator[torch.Tensor]:
        def model(**inputs):
            return functional_call(self.lm.model, theta, args=(), kwargs=inputs)
        for _, ids, mask in batches(self.encoded, self.batch_size, self.lm.doc_start_id, self.lm.device):
            yield token_nll(model, ids, mask).sum() / self.n_tokens  # this batch's share of L

    def loss(self, theta: Point) -> float:
        with torch.no_grad():
            return float(sum(part.double() for part in self._parts(theta)))

    def descend(self, theta: Point, steps: int, lr: float, anchor: Point | None = None,
                anchor_weight: Point | None = None) -> Point:
        """``steps`` steps from a copy of θ: θ <- θ - lr ∇L(θ), or, with weights λF = ``anchor_weight`` (a tensor
        per parameter) pulling towards ``anchor``, the exact step of the module docstring."""
        theta = {k: v.detach().clone().requires_grad_(True) for k, v in theta.items()}
        for _ in range(steps):
            grads = [torch.zeros_like(v) for v in theta.values()]
            with torch.enable_grad():
                for part in self._parts(theta):
                    for acc, g in zip(grads, torch.autograd.grad(part, list(theta.values()), allow_unused=True)):
                        if g is not None:
                            acc += g
            with torch.no_grad():
                for (name, v), g in zip(theta.items(), grads):
                    v.sub_(lr * g)
                    if anchor_weight is not None:
                        pull = 2 * lr * anchor_weight[name]
                        v.add_(pull * anchor[name]).div_(1 + pull)
        return {k: v.detach() for k, v in theta.items()}
