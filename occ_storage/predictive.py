"""Predictive intervals for counts of the realised chunk set (occ-storage.md §3, intervals).

The estimand of `estimators` is the realised chunk set, so an interval for a count
K = Σ_l a_l n_l (a_l in {0, 1}: Û, Ŵ≥T, n̂_l) is a prediction interval: given the level counts
and the fitted loads λ̂, the registers are independent (Poisson model) and the chunks of
register j given its published value S_j have a known discrete law, so

    K - K̂ = M + P,   M = Σ_j (K_j - E[K_j | S_j, λ̂])   (the missing information),
                      P ~ Normal(0, Var(K̂ - K) - Var M)    (the error of λ̂ itself).

M is skewed and lattice-valued where few registers are ambiguous: registers censored at τ
hold an unknown number of chunks (a truncated law with a long upper tail), and an all-r3 set
pins every other register. A symmetric Wald interval then misses mostly above. Its law is the
convolution of the per-level conditional laws, computed exactly by FFT on the integer lattice
(M and P are conditionally independent: M is noise orthogonal to the data, P a function of
the data). Var(K̂ - K) is the Fisher covariance of the estimator (N'^2 I^-1 - diag n̂), of
which Var M = Σ_s Z_s Var(K | S = s) is the missing-information part (Louis 1982).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

__all__ = ["prediction_offsets", "register_joint"]


def register_joint(lam: F64, weights: F64, kmax: int) -> F64:
    """P(S = s, K = k) of one register, s = 0..τ-1, then P(S >= τ, K = k); shape (τ+1, kmax+1).

    `lam` are the class loads λ_1..λ_{τ-1}, λ_{>=τ} (τ = lam.size), K = Σ_l w_l N_l counts the
    chunks of the classes with weight 1. Bivariate Panjer recursion from the generating
    function exp(Σ_l λ_l (x^l y^{w_l} - 1)): s P(s, k) = Σ_l l λ_l P(s - l, k - w_l).
    """
    tau = lam.size
    w = weights.astype(bool)
    c = np.arange(1, tau + 1, dtype=np.float64) * lam
    c0, c1 = np.where(w, 0.0, c), np.where(w, c, 0.0)
    p = np.zeros((tau + 1, kmax + 1), dtype=np.float64)
    p[0, 0] = math.exp(-float(lam.sum()))
    for s in range(1, tau):
        prev = p[s - 1 :: -1][:s]  # rows s-1, ..., 0 <-> l = 1..s
        row = c0[:s] @ prev
        row[1:] += (c1[:s] @ prev)[:-1]
        p[s] = row / s
    lam_k = float(lam[w].sum())
    k = np.arange(kmax + 1)
    # K ~ Poisson(Σ_{w_l = 1} λ_l) over all registers; the censored row is what is left
    from scipy import stats  # local: keeps this module's import light

    pois = stats.poisson.pmf(k, lam_k) if lam_k > 0 else (k == 0).astype(np.float64)
    p[tau] = np.maximum(pois - p[:tau].sum(axis=0), 0.0)
    return p


def prediction_offsets(
    level_counts: npt.NDArray[np.int64],
    lam: F64,
    weights: F64,
    var_total: float,
    confidence: float,
) -> tuple[float, float, float] | None:
    """Return (E[K | data, λ̂], lo, hi): the prediction interval [lo, hi] of K (integers).

    `var_total` is Var(K̂ - K) of the estimator; the part not explained by the missing
    information becomes the Normal term P. Quantiles are taken on the integer lattice,
    conservatively on each side (P(K - E < lo) < α/2 and P(K - E > hi) <= α/2). None when the
    model gives a level that is observed probability 0 (the caller keeps its Wald interval).
    """
    z = np.asarray(level_counts, dtype=np.int64)
    tau = lam.size
    lam_k = float(lam[weights.astype(bool)].sum())
    kmax = math.ceil(lam_k + 12.0 * math.sqrt(lam_k) + tau + 8)
    joint = register_joint(lam, weights, kmax)
    marg = joint.sum(axis=1)
    seen = np.flatnonzero(z > 0)
    if np.any(marg[seen] <= 1e-300):
        return None
    q = joint[seen] / marg[seen, None]
    ks = np.arange(kmax + 1, dtype=np.float64)
    mean_s = q @ ks
    var_s = np.maximum(q @ ks**2 - mean_s**2, 0.0)
    zs = z[seen].astype(np.float64)
    mean = float(zs @ mean_s)
    var_miss = float(zs @ var_s)
    var_p = max(var_total - var_miss, 0.0)
    sd = math.sqrt(var_miss + var_p)
    # the lattice law of M + P on a circular grid wide enough for both tails
    size = 1 << max(6, math.ceil(math.log2(16.0 * sd + 4.0 * kmax + 64.0)))
    # characteristic function φ_s(t_j) = Σ_k q_s(k) e^{i t_j k}, t_j = 2πj/L
    phi = np.fft.ifft(q, n=size, axis=1) * size
    # centre on the nearest integer of the mean, then Π φ_s^{Z_s} (integer powers)
    shift = round(mean)
    t = 2.0 * np.pi * np.fft.fftfreq(size)
    with np.errstate(divide="ignore"):
        log_cf = zs @ np.log(phi) - 1j * t * shift - 0.5 * var_p * t**2
    cf = np.exp(log_cf)
    pmf = np.fft.fftshift(np.maximum(np.fft.fft(cf).real / size, 0.0))
    x = np.arange(-size // 2, size // 2, dtype=np.float64) + shift - mean
    cdf = np.cumsum(pmf)
    cdf /= cdf[-1]
    alpha = 1.0 - confidence
    lo = float(x[int(np.searchsorted(cdf, alpha / 2.0, side="right"))])
    hi = float(x[min(int(np.searchsorted(cdf, 1.0 - alpha / 2.0 - 1e-12)), size - 1)])
    return mean, lo + mean, hi + mean
