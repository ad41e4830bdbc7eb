"""Matrix-free spectral estimates of a symmetric operator known only through products ``v -> Hv``.

* ``lanczos``: m steps build an orthonormal Krylov basis V [m, n] and a tridiagonal
  T = V^T H V (diagonal alpha [m], off-diagonal beta [m-1]); every new vector is
  re-orthogonalised against the whole basis (twice), so no spurious copies of
  converged eigenvalues appear. The last beta (beta_m) couples the basis to the rest.
* ``ritz``: the eigenpairs (theta_i, s_i) of T (``scipy.linalg.eigh_tridiagonal``).
  Theta_i approximates an eigenvalue of H to within the residual bound
  ``|beta_m * s_{m,i}|`` (= ||H y_i - theta_i y_i||); it is *converged* when that
  bound is <= tol * |theta_i|. The extremes, at both ends, converge first.
* Stochastic Lanczos quadrature (SLQ): from a random unit start vector v, the
  spectral density of H is approximated by nodes theta_i with weights s_{1,i}^2
  (the squared first components), which sum to 1: sum_i w_i f(theta_i) ~ v^T f(H) v.
* ``hutchinson``: tr H = E[z^T H z] for Rademacher z; mean and standard error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal

from .._public import public

__all__ = ["Ritz", "hutchinson", "lanczos", "rademacher", "ritz"]

MatVec = Callable[[torch.Tensor], torch.Tensor]  # [n] -> [n]


@dataclass(frozen=True)
class Ritz:
    values: np.ndarray  # [m] ascending
    vectors: np.ndarray  # [m, m] eigenvectors of T in columns
    residuals: np.ndarray  # [m] |beta_m * s_{m,i}|

    def converged(self, tol: float) -> np.ndarray:
        return self.residuals <= tol * np.abs(self.values)

    @property
    def weights(self) -> np.ndarray:
        """SLQ weights: squared first components, summing to 1."""
        return self.vectors[0] ** 2


def rademacher(n: int, generator: torch.Generator, device: str) -> torch.Tensor:
    """[n] entries +-1, drawn on the CPU (the same on every device), float32."""
    return (torch.randint(0, 2, (n,), generator=generator) * 2 - 1).float().to(device)


def ritz(alpha: np.ndarray, beta: np.ndarray) -> Ritz:
    """Ritz pairs of the tridiagonal (alpha [m], beta [m]: beta[:-1] off-diagonal, beta[-1] = beta_m)."""
    values, vectors = eigh_tridiagonal(alpha, beta[:-1])
    return Ritz(values, vectors, np.abs(beta[-1] * vectors[-1]))


def lanczos(matvec: MatVec, start: torch.Tensor, steps: int,
            stop: Callable[[Ritz], bool] | None = None) -> tuple[Ritz, int]:
    """Lanczos with full reorthogonalisation; returns the Ritz pairs and the products spent.

    Runs ``min(steps, n)`` steps, fewer when ``stop(ritz)`` says enough (checked after
    every step) or the Krylov space is exhausted (an invariant subspace: exact values).
    Memory: the basis holds steps * n float32 numbers.
    """
    n = start.numel()
    steps = min(steps, n)
    basis = torch.empty(steps, n, dtype=torch.float32, device=start.device)  # [m, n]
    alpha, beta = [], []
    v = start.float() / start.float().norm()
    for j in range(steps):
        basis[j] = v
        w = matvec(v).float()  # [n]
        alpha.append(float(w @ v))
        past = basis[: j + 1]  # [j+1, n]
        for _ in range(2):  # "twice is enough" (Kahan-Parlett)
            w -= past.T @ (past @ w)
        beta.append(float(w.norm()))
        found = ritz(np.array(alpha), np.array(beta))
        scale = max(np.abs(found.values).max(), 1e-30)
        if beta[-1] <= 1e-6 * scale or (stop is not None and stop(found)):
            return found, j + 1
        v = w / beta[-1]
    return found, steps


def hutchinson(matvec: MatVec, n: int, samples: int, generator: torch.Generator, device: str
               ) -> tuple[float, float]:
    """Hutchinson's trace estimate with Rademacher probes: (mean, standard error) of z^T H z."""
    draws = np.array([float(z @ matvec(z).float()) for z in (rademacher(n, generator, device) for _ in range(samples))])
    se = float(draws.std(ddof=1) / np.sqrt(samples)) if samples > 1 else float("nan")
    return float(draws.mean()), se


public("atlas.instruments", Ritz, hutchinson, lanczos, rademacher)
