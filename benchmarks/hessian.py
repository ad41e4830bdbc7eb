"""Hessian eigenvalues, trace and density: Atlas against hessian-eigenthings, curvlinops + SciPy eigsh and PyHessian.

Same model, same batch, same parameter block, same loss (the token-weighted mean NLL of one
batch, ``atlas.instruments.hessian``), in one process, against a ground truth:

* ``tiny``: a random 1-layer GPT-2 (2 heads, width 8, 100 positions, std 0.2, seed 0; 3,776
  parameters, the whole model is the block) on 96 byte tokens of the corpus (its passages cut
  to 96 characters: the first one). Truth: its dense Hessian, rows by double backward of an
  independently written float64 loss (``torch.func.functional_call``), symmetrised, and the
  exact spectrum (``numpy.linalg.eigh``).
* ``smollm2``: per-layer attention blocks of SmolLM2-135M (884,736 parameters each) on
  ``--max-tokens`` tokens. Truth: Atlas's Lanczos with full reorthogonalisation (``_lanczos``)
  from another start vector, run until the top-5 and bottom-5 Ritz values have residual
  bounds |beta_m s_mi| <= 1e-8 |theta_i| (float32 products: the values are then exact to
  the products' rounding, ~1e-6 relative, a thousand times below the 1e-3 target).

Tasks (column ``task``; ``error`` is relative in every task):

* ``eigen``: products (``n_hvp``), wall time and peak memory to reach the top-5 eigenvalues at
  BOTH ends at relative error <= 1e-3 (``error``: the largest over the ten). Each method's
  accuracy knob walks one ladder, loosest first; the first setting whose result meets the
  target is reported (``setting``), timed on a run of its own (setup included: forward and
  gradient with a graph):
    - atlas: ``measure_hessian(top_k=5, tol=...)``: Lanczos that stops once the ten Ritz
      values' residual bounds are <= tol |theta|; tol walks 1e-1, 5e-2, 2e-2, 1e-2, 5e-3, ...;
      a second row gives the instrument at tol 1e-3, where the residual bound alone
      guarantees the target without knowing the truth.
    - hessian-eigenthings ``lanczos(HessianOperator, k=m, max_iter=m, which="LA",
      reorthogonalize=True)`` (all m Ritz values from one run: both ends). It has no stopping
      test, so it gets the smallest m that reaches the target, m = 10, 11, 12, ..., each read off
      one long run of its own recursion (``lanczos_tridiagonal``, its own start vector) on
      Atlas's products: an m-step run is that run's prefix. The chosen m is then run and timed
      on its own operator (a forward and a gradient with a graph per product).
    - SciPy ``eigsh(k=10, which="BE", tol=..., v0=Atlas's start vector)`` (ARPACK's implicitly
      restarted Lanczos): tol walks the ladder on Atlas's products (row ``scipy eigsh on
      Atlas's products``: the algorithm alone), then the chosen tol is timed on curvlinops'
      ``HessianLinearOperator.to_scipy()`` (forward-over-reverse products, ``torch.func``).
      torch has no forward-mode rule for ``silu_backward``, so on SmolLM2 (SiLU MLPs)
      curvlinops runs with each ``act_fn`` replaced by the identical x * sigmoid(x). On the
      tiny GPT-2 its products are wrong on the LayerNorm weights (torch 2.13's forward-mode
      derivative of the layer-norm backward with respect to the weight, when the input depends
      on the parameters too: a 10-line case reproduces it), which the note under the table
      shows against the dense Hessian; the walk then goes on to its tightest tol.
    - PyHessian 0.1 ``eigenvalues(top_n=5, maxIter=1000, tol=...)``, tol walks 1e-3 ... 1e-6:
      power iteration with deflation finds the largest |lambda| only, so it is scored on the
      five eigenvalues of largest magnitude (``ends``: ``|lambda|``).
* ``trace`` (tiny): root-mean-square relative error of tr H over ``--seeds`` seeds at equal
  products (30 and 90): Hutchinson (Rademacher; Atlas, hessian-eigenthings, curvlinops,
  PyHessian's ``trace``) and Hutch++ (Meyer, Musco, Musco & Woodruff 2021; hessian-eigenthings,
  curvlinops). Time: mean per estimate.
* ``trace@30 (stderr)`` (offline block, no exact trace): Atlas's Hutchinson and
  hessian-eigenthings' Hutch++ (on Atlas's products), each one's own standard error over
  |trace| at 30 products (both are unbiased: it is their RMS error), mean over seeds. Hutch++
  wins when a few eigenvalues carry most of ||H||_F; Atlas keeps Hutchinson, the better one
  on these blocks at the budgets its profiles use (see README, Benchmarks).
* ``density`` (tiny): stochastic Lanczos quadrature with 4 runs x 30 steps (120 products),
  ``error`` = Wasserstein-1 distance between the quadrature measure (nodes, weights) and the
  exact spectrum (1/n at each eigenvalue), both smoothed by a Gaussian of sigma = 1% of the
  exact spectrum's width, as the integral of |F_slq - F_exact| over a 20,001-point grid,
  divided by that width; mean over ``--seeds`` seeds. curvlinops' quadrature is its
  ``fast_lanczos`` (Papyan 2020; no reorthogonalisation), without the extra ``eigsh`` calls
  its ``lanczos_approximate_spectrum`` spends on the grid's boundaries. PyHessian's
  ``density()`` calls ``torch.eig``, removed from torch: reported as failing.

Then the ratios Atlas / best peer per task (time, products, memory, error). Goals: Atlas
needs no more HVPs than eigsh at equal accuracy, is >= 3x faster than hessian-eigenthings
and >= 5x faster than PyHessian on the offline model's per-layer attention blocks.

    python benchmarks/hessian.py                          # tiny + smollm2 layer 29, 64 tokens
    python benchmarks/hessian.py --layers 0,15,29 --json hessian.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from unittest import mock

import hessian_eigenthings as he
import numpy as np
import torch
import torch.nn.functional as F
from _common import Report, arguments, measure, warm_up
from curvlinops import HessianLinearOperator, hutchinson_trace, hutchpp_trace
from curvlinops.papyan2020traces.spectrum import fast_lanczos
from scipy.linalg import eigh_tridiagonal
from scipy.sparse.linalg import LinearOperator, eigsh
from scipy.stats import norm
from torch import nn

from atlas import Corpus, LoadedModel, load_corpus, load_model
from atlas.instruments import hutchinson, lanczos, rademacher
from atlas.instruments.hessian import (BlockHessian, PyHessianLM, density_rows, hessian_batch, hessian_blocks,
                                       masked_mean_nll, mean_nll, measure_hessian, only_block_requires_grad)
from atlas.models import eager_attention, tiny_model

ph = importlib.import_module("pyhessian.hessian")  # the package's __init__ shadows the module with the class

TOP_K = 5
TARGET = 1e-3
TOLS = (1e-1, 5e-2, 2e-2, 1e-2, 5e-3, 2e-3, 1e-3, 1e-4, 1e-5)
LANCZOS_CAP = 300
PY_TOLS = (1e-3, 1e-4, 1e-5, 1e-6)
PY_MAX_ITER = 1000
TRACE_BUDGETS = (30, 90)
SLQ_RUNS, SLQ_STEPS = 4, 30
REFERENCE_TOL = 1e-8


# --- the problems -----------------------------------------------------------------------------

@dataclass
class Problem:
    """A block of a model on a batch, with the true extremes: ``top`` descending, ``bottom`` ascending."""

    model_name: str
    lm: LoadedModel
    corpus: object
    settings: dict  # measure_hessian's blocks / layers
    max_tokens: int
    params: list
    ids: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T]
    top: np.ndarray
    bottom: np.ndarray
    spectrum: np.ndarray | None = None  # every eigenvalue, ascending (tiny only)
    trace: float | None = None
    dense: np.ndarray | None = None  # the Hessian itself [n, n] (tiny only)

    @property
    def block(self) -> str:
        return "model" if self.settings["blocks"] == "model" else f"layer.{self.settings['layers']}.attention"

    @property
    def n(self) -> int:
        return sum(p.numel() for p in self.params)

    @property
    def largest_magnitude(self) -> np.ndarray:
        both = np.concatenate([self.top, self.bottom])
        return both[np.argsort(-np.abs(both))][:TOP_K]

    @contextmanager
    def hessian(self):
        """Atlas's operator on this block (graph built once); every other parameter frozen."""
        with self.frozen():
            H = BlockHessian(self.params, mean_nll(self.lm.model, self.ids, self.mask))
            yield H
            del H

    @contextmanager
    def frozen(self):
        with eager_attention(self.lm.model), torch.enable_grad(), only_block_requires_grad(self.lm.model, self.params):
            yield

    def error(self, top, bottom) -> float:
        """Largest relative error over both ends."""
        return float(max(np.max(np.abs(np.asarray(top)[:TOP_K] - self.top) / np.abs(self.top)),
                         np.max(np.abs(np.asarray(bottom)[:TOP_K] - self.bottom) / np.abs(self.bottom))))

    def magnitude_error(self, values) -> float:
        values = np.asarray(values)
        values = values[np.argsort(-np.abs(values))][:TOP_K]
        truth = self.largest_magnitude
        return float(np.max(np.abs(values - truth) / np.abs(truth)))


def micro_gpt2() -> LoadedModel:
    """1 layer, 2 heads, width 8, 100 positions, byte tokenizer, std 0.2, seed 0 (3,776 parameters)."""
    return tiny_model("gpt2", name="micro-gpt2", n_layer=1, n_head=2, n_embd=8, n_positions=100, initializer_range=0.2)


def dense_hessian(lm: LoadedModel, ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """The whole model's Hessian [n, n] in float64: an independent loss, rows by (batched) double backward."""
    model = copy.deepcopy(lm.model).double()
    names, params = zip(*model.named_parameters())
    sizes = [p.numel() for p in params]
    flat = torch.cat([p.detach().reshape(-1) for p in params]).requires_grad_()
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100).flatten()  # [B * (T-1)]
    values = dict(zip(names, (x.view_as(p) for x, p in zip(flat.split(sizes), params))))
    logits = torch.func.functional_call(model, values, kwargs={"input_ids": ids, "attention_mask": mask}).logits
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets, ignore_index=-100)  # mean over scored tokens
    (grad,) = torch.autograd.grad(loss, flat, create_graph=True)
    eye = torch.eye(flat.numel(), dtype=torch.float64)
    rows = [torch.autograd.grad(grad, flat, grad_outputs=chunk, retain_graph=True, is_grads_batched=True)[0]
            for chunk in eye.split(256)]  # [256, n] rows at a time
    H = torch.cat(rows).numpy()
    return (H + H.T) / 2


def tiny_problem(corpus: Corpus, max_tokens: int) -> Problem:
    lm = micro_gpt2()
    corpus = Corpus(f"{corpus.name}[:96 chars]",  # byte tokens: every passage within the 100 positions
                    tuple(dataclasses.replace(p, text=p.text[:96]) for p in corpus.passages))
    ids, mask = hessian_batch(lm, corpus, max_tokens)
    H = dense_hessian(lm, ids, mask)
    spectrum = np.linalg.eigvalsh(H)
    (_, params), = hessian_blocks(lm.model, "model", "all")
    return Problem("tiny", lm, corpus, {"blocks": "model", "layers": "all"}, max_tokens, params, ids, mask,
                   spectrum[::-1][:TOP_K].copy(), spectrum[:TOP_K].copy(), spectrum, float(np.trace(H)), H)


def offline_problem(lm: LoadedModel, corpus, layer: int, max_tokens: int, report: Report) -> Problem:
    """A per-layer attention block with the reference Lanczos (reported as a row of its own)."""
    settings = {"blocks": "attention", "layers": str(layer)}
    (_, params), = hessian_blocks(lm.model, **settings)
    ids, mask = hessian_batch(lm, corpus, max_tokens)
    problem = Problem("smollm2", lm, corpus, settings, max_tokens, params, ids, mask, np.array([]), np.array([]))

    def both_ends(found) -> bool:
        m = len(found.values)
        ends = [*range(TOP_K), *range(m - TOP_K, m)]
        return m >= 2 * TOP_K and bool(found.converged(REFERENCE_TOL)[ends].all())

    def run():
        with problem.hessian() as H:
            start = rademacher(H.n, torch.Generator().manual_seed(1), "cpu")  # not the methods' start vector
            return lanczos(H, start, 400, stop=both_ends)

    m = measure(run)
    found, used = m.value
    problem.top, problem.bottom = found.values[::-1][:TOP_K].copy(), found.values[:TOP_K].copy()
    ends = [*range(TOP_K), *range(len(found.values) - TOP_K, len(found.values))]
    worst = float(np.max(found.residuals[ends] / np.abs(found.values[ends])))
    report.add(task="eigen", model="smollm2", block=problem.block, method="reference lanczos",
               setting=f"tol={REFERENCE_TOL:g}", ends="both", seconds=m.seconds, n_hvp=used, peak_mb=m.peak_mb,
               error=worst, reached=both_ends(found))
    return problem


# --- eigenvalues at both ends ----------------------------------------------------------------

def _row(report, problem, method, setting, m, n_hvp, error, ends="both", task="eigen"):
    report.add(task=task, model=problem.model_name, block=problem.block, method=method, setting=setting, ends=ends,
               seconds=m.seconds, n_hvp=n_hvp, peak_mb=m.peak_mb, error=error,
               reached=bool(error <= TARGET) if task == "eigen" else None)


def atlas_eigen(report, problem) -> int:
    def run(tol):
        return measure(lambda: measure_hessian(problem.lm, problem.corpus, **problem.settings, top_k=TOP_K,
                                               lanczos_steps=LANCZOS_CAP, hutchinson_samples=0, slq_runs=0,
                                               max_tokens=problem.max_tokens, tol=tol, progress=False)["hessian"])

    def result(m):
        rows = m.value.set_index("index")["value"]
        return problem.error([rows[i] for i in range(TOP_K)], [rows[-1 - i] for i in range(TOP_K)]), \
            int(m.value["n_hvp"].iloc[0])

    for tol in TOLS:
        m = run(tol)
        error, n_hvp = result(m)
        if error <= TARGET:
            break
    _row(report, problem, "atlas lanczos", f"tol={tol:g}", m, n_hvp, error)
    m = run(TARGET)
    error, n_hvp_at_target = result(m)
    _row(report, problem, "atlas lanczos (residual tol 1e-3)", f"tol={TARGET:g}", m, n_hvp_at_target, error)
    return n_hvp


def _counted(fn, counter: list[int]):
    def wrapped(*args, **kwargs):
        counter[0] += 1
        return fn(*args, **kwargs)
    return wrapped


def _walk(report, problem, method, settings, cheap, timed, label, cheap_method=None) -> None:
    """The first of ``settings`` whose ``cheap(setting)`` (the method on Atlas's products) reaches the target,
    then ``timed(setting)`` on the method's own operator, measured; should that run miss the target (its
    products differ), the walk goes on with timed runs. Both return ((top, bottom), products). One row, and
    with ``cheap_method`` a row for the cheap run at its first passing setting too (the algorithm alone)."""
    start = len(settings) - 1
    for i, setting in enumerate(settings):
        m = measure(lambda: cheap(setting))
        if problem.error(*m.value[0]) <= TARGET:
            start = i
            break
    if cheap_method:
        _row(report, problem, cheap_method, label(settings[start]), m, m.value[1], problem.error(*m.value[0]))
    for setting in settings[start:]:
        m = measure(lambda: timed(setting))
        (top, bottom), n_hvp = m.value
        if problem.error(top, bottom) <= TARGET:
            break
    _row(report, problem, method, label(setting), m, n_hvp, problem.error(top, bottom))


def eigenthings_eigen(report, problem, atlas_hvp: int) -> None:
    """The smallest m >= 2 top_k, each m-step run read off ONE long run of eigenthings' own recursion on
    Atlas's products (an m-step run is its prefix, from the same start vector); then timed on its own operator."""
    cap = min(problem.n - 1, max(2 * atlas_hvp, 40))
    with problem.hessian() as H:
        start = torch.randn(problem.n, generator=torch.Generator().manual_seed(0))  # what lanczos(seed=0) draws
        td = he.lanczos_tridiagonal(he.LambdaOperator(H, problem.n), start, cap, reorthogonalize=True)
    alphas, betas = td.alphas.double().numpy(), td.betas.double().numpy()

    def prefix(m):
        values = eigh_tridiagonal(alphas[:m], betas[: m - 1], eigvals_only=True)  # ascending
        return (values[::-1], values), m

    def run(m):
        with problem.frozen():
            count = [0]
            found = he.lanczos(_eigenthings_operator(problem, count), k=m, max_iter=m, which="LA",
                               reorthogonalize=True, seed=0)  # all m Ritz values, descending: both ends
            values = found.eigenvalues.double().numpy()
            return (values, values[::-1]), count[0]

    _walk(report, problem, "hessian-eigenthings lanczos", list(range(2 * TOP_K, cap + 1)), prefix, run,
          lambda m: f"max_iter={m}")


class _Logits(nn.Module):
    """curvlinops' model_func: inputs [2, B, T] (ids, mask) -> logits of the scored positions [B * (T-1), V]."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs):
        return self.model(input_ids=inputs[0], attention_mask=inputs[1]).logits[:, :-1].flatten(0, 1)


class _SiLU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


@contextmanager
def _forward_mode_silu(model):
    """Each SiLU activation replaced by x * sigmoid(x) (torch has no forward-mode silu_backward); restored after."""
    swapped = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if type(child).__name__ in ("SiLU", "SiLUActivation")]
    for parent, name, _ in swapped:
        setattr(parent, name, _SiLU())
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


@contextmanager
def curvlinops_hessian(problem):
    targets = problem.ids[:, 1:].masked_fill(problem.mask[:, 1:] == 0, -100).flatten()
    with problem.frozen(), _forward_mode_silu(problem.lm.model):
        yield HessianLinearOperator(_Logits(problem.lm.model), nn.CrossEntropyLoss(ignore_index=-100),
                                    problem.params, [(torch.stack([problem.ids, problem.mask]), targets)],
                                    check_deterministic=False)


def _scipy(apply, n: int, counter: list[int]) -> LinearOperator:
    """A SciPy operator over ``apply`` (torch [n] -> [n]) counting every product (a matmat counts its columns)."""
    def matvec(x):
        counter[0] += 1
        return apply(torch.as_tensor(np.ravel(x), dtype=torch.float32)).double().numpy()
    return LinearOperator((n, n), matvec=matvec, dtype=np.float64)


def eigsh_eigen(report, problem) -> None:
    v0 = rademacher(problem.n, torch.Generator().manual_seed(0), "cpu").double().numpy()  # Atlas's start vector

    def solve(apply, tol):
        count = [0]
        values = np.sort(eigsh(_scipy(apply, problem.n, count), k=2 * TOP_K, which="BE", tol=tol, v0=v0,
                               return_eigenvectors=False))
        return (values[::-1], values), count[0]

    def cheap(tol):
        with problem.hessian() as H:
            return solve(H, tol)

    def timed(tol):
        with curvlinops_hessian(problem) as A:
            return solve(lambda v: A @ v, tol)

    _walk(report, problem, "curvlinops + scipy eigsh", TOLS, cheap, timed, lambda tol: f"tol={tol:g}",
          cheap_method="scipy eigsh on Atlas's products")


@contextmanager
def pyhessian_engine(problem):
    targets = problem.ids[:, 1:].masked_fill(problem.mask[:, 1:] == 0, -100)  # [B, T-1]
    count = [0]
    with ExitStack() as stack:
        stack.enter_context(problem.frozen())
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
        stack.enter_context(mock.patch.object(ph, "hessian_vector_product",
                                              _counted(ph.hessian_vector_product, count)))
        engine = ph.hessian(PyHessianLM(problem.lm.model), masked_mean_nll,
                            data=(torch.stack([problem.ids, problem.mask]), targets), cuda=False)
        yield engine, count
        del engine


def pyhessian_eigen(report, problem) -> None:
    def run(tol):
        torch.manual_seed(0)  # its random start vectors come from torch's global generator
        with pyhessian_engine(problem) as (engine, count):
            values, _ = engine.eigenvalues(top_n=TOP_K, maxIter=PY_MAX_ITER, tol=tol)
            return values, count[0]

    for tol in PY_TOLS:
        m = measure(lambda: run(tol))
        values, n_hvp = m.value
        error = problem.magnitude_error(values)
        if error <= TARGET:
            break
    _row(report, problem, "pyhessian power iteration", f"tol={tol:g}", m, n_hvp, error, ends="|lambda|")


# --- trace and density (tiny model) --------------------------------------------------------

def _hf_batch(problem) -> dict:
    return {"input_ids": problem.ids, "attention_mask": problem.mask,
            "labels": problem.ids.masked_fill(problem.mask == 0, -100)}  # HF's loss: mean over scored tokens


def _eigenthings_operator(problem, count: list[int]):
    ids = {id(p) for p in problem.params}
    op = he.HessianOperator(problem.lm.model, [_hf_batch(problem)], he.hf_lm_loss(),
                            param_filter=lambda name, p: id(p) in ids)
    op.matvec = _counted(op.matvec, count)
    return op


class _CountedOperator:
    """A curvlinops operator whose products are counted (each column of a matrix product counts)."""

    def __init__(self, A, count: list[int]):
        self.A, self.count = A, count
        self.shape, self.device, self.dtype = A.shape, A.device, A.dtype

    def __matmul__(self, X):
        self.count[0] += 1 if X.dim() == 1 else X.shape[1]
        return self.A @ X


def _rms(x) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def _repeat(report, problem, task, name, setting, seeds, run, error, aggregate=np.mean) -> None:
    """``run(seed, count)`` once per seed, each measured (operator setup included); one row: mean time and
    products, largest peak, ``aggregate`` of the errors."""
    errors, seconds, peaks, hvps = [], [], [], []
    for seed in range(seeds):
        count = [0]
        m = measure(lambda: run(seed, count))
        errors.append(error(m.value))
        seconds.append(m.seconds)
        peaks.append(m.peak_mb)
        hvps.append(count[0])
    report.add(task=task, model=problem.model_name, block=problem.block, method=name, setting=setting, ends=None,
               seconds=float(np.mean(seconds)), n_hvp=float(np.mean(hvps)), peak_mb=float(np.max(peaks)),
               error=float(aggregate(errors)),
               reached=None)


def trace_task(report, problem, seeds: int) -> None:
    n = problem.n

    def atlas(budget, seed, count):
        with problem.hessian() as H:
            value = hutchinson(H, n, budget, torch.Generator().manual_seed(seed), "cpu")[0]
            count[0] += H.count
        return value

    def eigenthings(method):
        def run(budget, seed, count):
            with problem.frozen():
                return he.trace(_eigenthings_operator(problem, count), num_matvecs=budget, method=method,
                                seed=seed).estimate
        return run

    def curvlinops(estimator):
        def run(budget, seed, count):
            torch.manual_seed(seed)  # its probes come from torch's global generator
            with curvlinops_hessian(problem) as A:
                return float(estimator(_CountedOperator(A, count), budget))
        return run

    def pyhessian(budget, seed, count):
        torch.manual_seed(seed)
        with pyhessian_engine(problem) as (engine, products):
            draws = engine.trace(maxIter=budget, tol=float("-inf"))  # exactly `budget` probes
            count[0] += products[0]
        return float(np.mean(draws))

    methods = [("atlas hutchinson", atlas),
               ("hessian-eigenthings hutch++", eigenthings("hutch++")),
               ("hessian-eigenthings hutchinson", eigenthings("hutchinson")),
               ("curvlinops hutch++", curvlinops(hutchpp_trace)), ("curvlinops hutchinson", curvlinops(hutchinson_trace)),
               ("pyhessian hutchinson", pyhessian)]
    for budget in TRACE_BUDGETS:
        for name, estimate in methods:
            _repeat(report, problem, f"trace@{budget}", name, f"{seeds} seeds", seeds,
                    lambda seed, count: estimate(budget, seed, count),
                    lambda value: (value - problem.trace) / abs(problem.trace), _rms)


def smoothed_w1(nodes: np.ndarray, weights: np.ndarray, spectrum: np.ndarray) -> float:
    """W1 between the quadrature measure and the exact spectrum, both smoothed by N(0, sigma^2), / spectrum width."""
    width = spectrum[-1] - spectrum[0]
    sigma = 0.01 * width
    lo, hi = min(nodes.min(), spectrum[0]) - 6 * sigma, max(nodes.max(), spectrum[-1]) + 6 * sigma
    grid = np.linspace(lo, hi, 20_001)  # [G]

    def cdf(points, w):  # the smoothed measure's distribution function on the grid [G]
        return sum(norm.cdf((grid[:, None] - chunk[None]) / sigma) @ wc
                   for chunk, wc in zip(np.array_split(points, 1 + len(points) // 256),
                                        np.array_split(w, 1 + len(points) // 256)))

    exact = cdf(spectrum, np.full(len(spectrum), 1 / len(spectrum)))
    return float(np.trapezoid(np.abs(cdf(nodes, weights / weights.sum()) - exact), grid) / width)


def density_task(report, problem, seeds: int) -> None:
    def atlas(seed, count):
        with problem.hessian() as H:
            rows = density_rows("model", H, SLQ_RUNS, SLQ_STEPS, TARGET, torch.Generator().manual_seed(seed), "cpu")
            count[0] += H.count
        return np.array([r["value"] for r in rows]), np.array([r["weight"] for r in rows])

    def eigenthings(seed, count):
        with problem.frozen():
            found = he.spectral_density(_eigenthings_operator(problem, count), num_runs=SLQ_RUNS,
                                        lanczos_steps=SLQ_STEPS, seed=seed, num_grid_points=16)
        return found.raw_eigenvalues.flatten().double().numpy(), found.raw_weights.flatten().double().numpy()

    def curvlinops(seed, count):
        torch.manual_seed(seed)
        nodes, weights = [], []
        with curvlinops_hessian(problem) as A:
            for _ in range(SLQ_RUNS):
                values, vectors = fast_lanczos(_CountedOperator(A, count), SLQ_STEPS)
                nodes.append(values.double().numpy())
                weights.append(vectors[0].double().numpy() ** 2)
        return np.concatenate(nodes), np.concatenate(weights)

    for name, quadrature in [("atlas slq", atlas), ("hessian-eigenthings slq", eigenthings),
                             ("curvlinops slq (fast_lanczos)", curvlinops)]:
        _repeat(report, problem, "density", name, f"{SLQ_RUNS}x{SLQ_STEPS}, {seeds} seeds", seeds, quadrature,
                lambda found: smoothed_w1(*found, problem.spectrum))
    try:
        with pyhessian_engine(problem) as (engine, _):
            engine.density(iter=SLQ_STEPS, n_v=SLQ_RUNS)
        failure = "ran"
    except (AttributeError, RuntimeError) as exc:
        failure = f"fails: {type(exc).__name__}: {str(exc).splitlines()[0][:60]}"
    report.add(task="density", model=problem.model_name, block=problem.block, method="pyhessian density",
               setting=failure, ends=None, seconds=None, n_hvp=None, peak_mb=None, error=None, reached=None)


def block_trace_task(report, problem, seeds: int, budget: int = 30) -> None:
    """Offline block, no exact trace: each estimator's own standard error over |trace| (both are unbiased, so
    it is their RMS error), mean over seeds, at equal products: Atlas's Hutchinson against hessian-eigenthings'
    Hutch++ driven by Atlas's products (the estimators alone; a product costs the same to both)."""
    def atlas(seed, count):
        with problem.hessian() as H:
            found = hutchinson(H, problem.n, budget, torch.Generator().manual_seed(seed), "cpu")
            count[0] += H.count
        return found

    def hutch_pp(seed, count):
        with problem.hessian() as H:
            op = he.LambdaOperator(lambda v: H(v.contiguous()), problem.n)  # it passes columns of its Q
            found = he.hutch_plus_plus(op, num_matvecs=budget, seed=seed)
            count[0] += H.count
        return found.estimate, found.stderr

    for name, run in (("atlas hutchinson", atlas), ("hessian-eigenthings hutch++ on Atlas's products", hutch_pp)):
        _repeat(report, problem, f"trace@{budget} (stderr)", name, f"{seeds} seeds", seeds, run,
                lambda found: found[1] / abs(found[0]))


def product_errors(problem) -> str:
    """Each method's product with one Gaussian vector against the dense Hessian's: relative error, overall and
    on the parameters where it is largest."""
    v = torch.randn(problem.n, generator=torch.Generator().manual_seed(0))
    exact = problem.dense @ v.double().numpy()
    with problem.hessian() as H:
        products = {"atlas": H(v)}
    with problem.frozen():
        products["hessian-eigenthings"] = _eigenthings_operator(problem, [0]).matvec(v)
    with curvlinops_hessian(problem) as A:
        products["curvlinops"] = A @ v
    with pyhessian_engine(problem) as (engine, _):
        parts = [x.view_as(p) for x, p in zip(v.split([p.numel() for p in engine.params]), engine.params)]
        products["pyhessian"] = torch.cat([x.reshape(-1) for x in ph.hessian_vector_product(engine.gradsH,
                                                                                            engine.params, parts)])
    names = [n for n, p in problem.lm.model.named_parameters()]
    sizes = np.cumsum([0] + [p.numel() for p in problem.params])
    out = []
    for method, hv in products.items():
        hv = hv.double().numpy()
        worst = max(range(len(names)), key=lambda i: np.linalg.norm((hv - exact)[sizes[i]:sizes[i + 1]])
                    / max(np.linalg.norm(exact[sizes[i]:sizes[i + 1]]), 1e-30))
        part = slice(sizes[worst], sizes[worst + 1])
        out.append(f"{method} {np.linalg.norm(hv - exact) / np.linalg.norm(exact):.1e} (worst: {names[worst]} "
                   f"{np.linalg.norm((hv - exact)[part]) / np.linalg.norm(exact[part]):.1e})")
    return "Hessian-vector product vs the dense Hessian, relative error: " + "; ".join(out)


def eigen_task(report, problem) -> None:
    atlas_hvp = atlas_eigen(report, problem)
    eigenthings_eigen(report, problem, atlas_hvp)
    eigsh_eigen(report, problem)
    pyhessian_eigen(report, problem)


def main() -> None:
    parser = arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--model", default="smollm2-135m-instruct", help="the offline-model side")
    parser.add_argument("--layers", default="29", help="comma-separated attention blocks of the offline model")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens of the offline model's batch")
    parser.add_argument("--tiny-tokens", type=int, default=96, help="tokens of the tiny model's batch")
    parser.add_argument("--seeds", type=int, default=10, help="seeds for the trace and density errors")
    parser.add_argument("--trace-seeds", type=int, default=2, help="seeds for the offline block's trace")
    parser.add_argument("--skip-tiny", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpus = load_corpus(args.corpus)
    report = Report("hessian", vars(args) | {"corpus": corpus.name, "target": TARGET, "top_k": TOP_K})
    notes = []
    if not args.skip_tiny:
        tiny = tiny_problem(corpus, args.tiny_tokens)
        warm_up(tiny.lm.model)
        print(f"tiny: {tiny.n} parameters, exact spectrum [{tiny.spectrum[0]:.4g}, {tiny.spectrum[-1]:.4g}], "
              f"trace {tiny.trace:.6g}")
        notes.append(product_errors(tiny))
        eigen_task(report, tiny)
        trace_task(report, tiny, args.seeds)
        density_task(report, tiny, args.seeds)
    lm = load_model(args.model, device="cpu", dtype="float32")
    warm_up(lm.model)
    for layer in [int(x) for x in args.layers.split(",") if x]:
        problem = offline_problem(lm, corpus, layer, args.max_tokens, report)
        print(f"{problem.block}: {problem.n} parameters, reference top {problem.top.round(5)}, "
              f"bottom {problem.bottom.round(5)}")
        eigen_task(report, problem)
        block_trace_task(report, problem, args.trace_seeds)
    ratios = report.ratios(["task", "model", "block"], {"seconds": "min", "n_hvp": "min", "peak_mb": "min",
                                                         "error": "min"})
    report.show(ratios, notes)
    report.write(args.json, ratios, notes=notes)


if __name__ == "__main__":
    main()
