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
* ``hutch_plus_plus``: Hutch++ (Meyer, Musco, Musco & Woodruff 2021, "Hutch++: Optimal
  Stochastic Trace Estimation", SOSA): a third of the products sketch H's dominant range,
  Q = orth(H S) [n, k] for Rademacher S [n, k]; a third take its trace exactly,
  tr(Q^T H Q); the rest estimate the remainder tr((I - QQ^T) H (I - QQ^T)) by Hutchinson
  on probes projected off Q. Unbiased for any symmetric H; its error falls as 1/m rather
  than Hutchinson's 1/sqrt(m) when a few eigenvalues carry most of ||H||_F, as in
  loss Hessians (a few outliers over a bulk near zero).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal

__all__ = ["Ritz", "hutch_plus_plus", "hutchinson", "lanczos", "rademacher", "ritz"]

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


def hutch_plus_plus(matvec: MatVec, n: int, products: int, generator: torch.Generator, device: str
                    ) -> tuple[float, float]:
    """Hutch++ trace estimate from ``products`` products (>= 3): (estimate, standard error).

    k = products // 3 sketch products, k for tr(Q^T H Q), the remaining products - 2k for
    the projected Hutchinson probes. Probes are Rademacher from ``generator``. The standard
    error is that of the projected Hutchinson mean (the sketch part has no sampling error
    given Q); NaN with a single residual probe. Memory: two [n, k] float32 blocks.
    """
    if products < 3:
        raise ValueError(f"Hutch++ needs at least 3 products (a third each for sketch, subspace and rest), "
                         f"not {products}; use hutchinson for fewer")
    k = min(products // 3, n)
    sketch = torch.stack([matvec(rademacher(n, generator, device)).float() for _ in range(k)], dim=1)  # [n, k]
    q, _ = torch.linalg.qr(sketch)  # [n, k] orthonormal basis of H S
    del sketch
    low = sum(float(q[:, i] @ matvec(q[:, i].contiguous()).float()) for i in range(k))  # tr(Q^T H Q)
    draws = []
    for _ in range(products - 2 * k):
        g = rademacher(n, generator, device)
        g -= q @ (q.T @ g)  # [n], projected off Q
        draws.append(float(g @ matvec(g).float()))
    draws = np.array(draws)
    se = float(draws.std(ddof=1) / np.sqrt(len(draws))) if len(draws) > 1 else float("nan")
    return low + float(draws.mean()), se
