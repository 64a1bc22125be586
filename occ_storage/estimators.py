"""Estimators on LCRS level counts: linear counting, decompounding, constrained MLE, intervals.

Notation (occ-storage.md §3): N' registers, Z_s registers with published value s (Z_tau counts
values >= tau), U distinct chunks, n_l chunks with l replicas, lambda = U / N'. A profile
vector has tau entries: classes 1..tau-1, then the censored class ">= tau".

The estimand is the realised chunk set (fixed n_l), not a Poisson draw of it, so every
covariance here is the Poissonised one minus diag(n): Var(n_hat - n) = Var(n_hat) - Var(n) when
E[n_hat | n] = n (law of total variance). For U this gives Whang et al.'s N'(e^λ - λ - 1).

Over ~400 lines on purpose: the estimators share this notation and the one covariance
correction; split apart, each module would restate them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from occ_storage.errors import SketchSaturatedError

__all__ = [
    "Interval",
    "ProfileEstimate",
    "bootstrap_profile",
    "cramer_rao_bound",
    "decompound",
    "estimate_profile",
    "linear_counting",
    "linear_counting_variance",
    "mle_profile",
    "panjer_pmf",
    "plugin_profile",
    "recommended_registers",
    "relative_se_constant",
    "replication_bound",
    "required_registers",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Method = Literal["plugin", "mle", "bootstrap"]
#: Likelihood-ratio statistic below which the MLE fixes a replica class at 0 (mle_profile).
DROP_LR = 2.0
#: A sketch with fewer registers than this, or fewer empty registers than SMALL_SKETCH_EMPTY,
#: gets selection-robust intervals from `mle_profile` (see there).
SMALL_SKETCH_REGISTERS = 5_000
SMALL_SKETCH_EMPTY = 1_000
#: Models on the selection path within this AIC difference of the best join the interval hull.
HULL_DELTA_AIC = 4.0
#: Copies a repair can add above the largest requested replication factor (replication_bound).
REPAIR_EXTRA = 1
#: Bootstrap replicates of `estimate_profile` (each places the chunk set and refits the MLE).
BOOTSTRAP_REPS = 160


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    return float(stats.norm.ppf(0.5 + confidence / 2.0))


def _as_levels(level_counts: npt.ArrayLike) -> I64:
    z = np.asarray(level_counts)
    if z.ndim != 1 or z.size < 2:
        raise ValueError("level counts must be a vector Z_0..Z_tau with tau >= 1")
    if z.size and (not np.issubdtype(z.dtype, np.integer) and not np.all(z == np.round(z))):
        raise ValueError("level counts must be integers")
    zi = z.astype(np.int64)
    if int(zi.min()) < 0:
        raise ValueError("level counts cannot be negative")
    if int(zi[0]) == 0:
        raise SketchSaturatedError(
            f"the sketch has no empty register (Z_0 = 0 of N' = {int(zi.sum())}): "
            "U cannot be estimated; resize N' (see required_registers)"
        )
    return zi


# --------------------------------------------------------------------------- plug-in


def linear_counting(z0: int, n_prime: int) -> float:
    """Return Û = -N' ln(Z_0 / N'): linear counting (Whang, Vander-Zanden & Taylor 1990).

    Raises SketchSaturatedError when Z_0 = 0 (occ-storage.md §3).
    """
    if n_prime <= 0 or not 0 <= z0 <= n_prime:
        raise ValueError("need 0 <= Z_0 <= N' and N' > 0")
    if z0 == 0:
        raise SketchSaturatedError("Z_0 = 0: the sketch is saturated; resize N'")
    return -n_prime * math.log(z0 / n_prime)


def linear_counting_variance(u: float, n_prime: int) -> float:
    """Return Var(Û) = N'(e^λ - λ - 1), λ = U/N', for a fixed set of U items (Whang et al. 1990)."""
    lam = u / n_prime
    return n_prime * math.expm1(lam) - u


def relative_se_constant(load: float) -> float:
    """Return c(λ) = sqrt(e^λ - λ - 1) / λ, so that sd(Û)/U = c(λ)/sqrt(N') (Whang et al. 1990)."""
    if load <= 0:
        return math.sqrt(0.5)
    return math.sqrt(math.expm1(load) - load) / load


def required_registers(half_width: float, load: float = 1.0, confidence: float = 0.95) -> int:
    """Return the N' giving a relative half-width `half_width` on Û (and on Ŵ when all chunks
    reach the threshold) at load λ = U/N': N' = (z c(λ) / half_width)^2 (occ-storage.md §3).

    ±1% at λ = 1 and 95% gives N' ≈ 27,600 (the spec's "N' ≈ 28,000"); c(λ) grows with λ, so
    the value at the largest expected load is the one to use.
    """
    if half_width <= 0:
        raise ValueError("half_width must be > 0")
    z = _z(confidence)
    return math.ceil((z * relative_se_constant(load) / half_width) ** 2)


def recommended_registers(
    distinct_chunks: float,
    half_width: float = 0.01,
    max_load: float = 1.0,
    confidence: float = 0.95,
) -> int:
    """Return the N' to configure for `distinct_chunks` chunks: the sizing rule of
    occ-storage.md §3 (±`half_width` on Û and Ŵ needs N' = (z c(λ)/half_width)^2 at the largest
    load, ≈ 28,000 for ±1% at λ = 1) and enough registers to keep λ = U/N' <= `max_load`."""
    if distinct_chunks < 0 or max_load <= 0:
        raise ValueError("need distinct_chunks >= 0 and max_load > 0")
    return max(
        required_registers(half_width, max_load, confidence), math.ceil(distinct_chunks / max_load)
    )


def decompound(level_counts: npt.ArrayLike) -> F64:
    """Return λ̂_1..λ̂_{τ-1} by decompounding (Buchmann & Grübel 2003; occ-storage.md §3).

    The register law is compound Poisson, G(z) = exp(Σ λ_l (z^l - 1)), so Σ λ_l z^l is the
    power-series logarithm of H(z) = G(z)/G(0) with h_s = Z_s/Z_0:
    a_s = h_s - (1/s) Σ_{k<s} k a_k h_{s-k}. Multiply by N' to get n̂_l. Values can be negative
    (sampling noise); `mle_profile` imposes λ_l >= 0.
    """
    z = _as_levels(level_counts)
    out: F64 = _decompound_batch(z[None, :].astype(np.float64))[0]
    return out


def _decompound_batch(z: F64) -> F64:
    """Rows of level counts (B, tau+1) -> rows of λ̂ for classes 1..tau-1 (B, tau-1)."""
    tau = z.shape[1] - 1
    h = z[:, :tau] / z[:, :1]
    a = np.zeros((z.shape[0], tau), dtype=np.float64)  # a[:, 0] unused
    k = np.arange(tau, dtype=np.float64)
    for s in range(1, tau):
        if s > 1:
            # Σ_{k=1}^{s-1} k a_k h_{s-k}
            acc = (k[1:s] * a[:, 1:s] * h[:, s - 1 : 0 : -1]).sum(axis=1)
            a[:, s] = h[:, s] - acc / s
        else:
            a[:, s] = h[:, s]
    return a[:, 1:]


def _inverse_series(h: F64) -> F64:
    """Coefficients b of 1/H(z) for rows h (h_0 = 1): b_0 = 1, b_k = -Σ_{i=1}^{k} h_i b_{k-i}."""
    b = np.zeros_like(h)
    b[:, 0] = 1.0
    for k in range(1, h.shape[1]):
        b[:, k] = -(h[:, 1 : k + 1] * b[:, k - 1 :: -1][:, :k]).sum(axis=1)
    return b


def _plugin_batch(z: F64) -> tuple[F64, F64]:
    """Plug-in n̂ (B, tau) and its delta-method covariance for a fixed chunk set (B, tau, tau).

    Jacobian: ∂λ_l/∂p_s = b_{l-s}/p_0 for 0 <= s <= l (b from 1/H), ∂Λ/∂p_0 = -1/p_0, with
    Λ = -ln p_0 the total load and λ_{>=tau} = Λ - Σ_{l<tau} λ_l. Cov(p̂) is multinomial.
    """
    bsz, cells = z.shape
    tau = cells - 1
    n_prime = z.sum(axis=1)
    p = z / n_prime[:, None]
    lam = _decompound_batch(z)
    total = -np.log(p[:, 0])
    n_hat = np.empty((bsz, tau), dtype=np.float64)
    n_hat[:, : tau - 1] = lam * n_prime[:, None]
    n_hat[:, tau - 1] = (total - lam.sum(axis=1)) * n_prime

    h = p[:, :tau] / p[:, :1]
    b = _inverse_series(h)
    jac = np.zeros((bsz, tau, cells), dtype=np.float64)
    for l_cls in range(1, tau):
        # row l_cls-1, columns s = 0..l: b_{l-s} / p_0
        jac[:, l_cls - 1, : l_cls + 1] = b[:, l_cls::-1] / p[:, :1]
    lam_total_row = np.zeros((bsz, cells))
    lam_total_row[:, 0] = -1.0 / p[:, 0]
    jac[:, tau - 1, :] = lam_total_row - jac[:, : tau - 1, :].sum(axis=1)
    # N' J (diag p - p p^T) J^T, then minus diag(n) for the realised chunk set
    jp = jac * p[:, None, :]
    cov = np.einsum("bis,bjs->bij", jp, jac)
    jpv = np.einsum("bis,bs->bi", jac, p)
    cov -= jpv[:, :, None] * jpv[:, None, :]
    cov *= n_prime[:, None, None]
    idx = np.arange(tau)
    cov[:, idx, idx] -= n_hat
    return n_hat, cov


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Interval:
    """A point estimate with its standard error and a two-sided interval."""

    estimate: float
    se: float
    lo: float
    hi: float
    confidence: float = 0.95

    def contains(self, value: float) -> bool:
        """Whether `value` lies in [lo, hi]."""
        return self.lo <= value <= self.hi

    def as_dict(self) -> dict[str, object]:
        """Plain-JSON form: estimate, se, ci, estimated=True."""
        return {
            "estimate": float(self.estimate),
            "se": float(self.se),
            "ci95" if abs(self.confidence - 0.95) < 1e-12 else "ci": [
                float(self.lo),
                float(self.hi),
            ],
            "estimated": True,
        }


@dataclass(frozen=True)
class ProfileEstimate:
    """Estimated replication profile n̂ (classes 1..tau-1, then >= tau) with its covariance.

    `cov` is the covariance of n̂ - n for the realised chunk set (occ-storage.md §3:
    Cov ≈ N'^2 I^-1 - diag(n̂)). When built by the parametric bootstrap, `boot_hat` and
    `boot_true` hold the replicate estimates and the replicate truths, and intervals are basic
    bootstrap intervals of the error, which stay honest for small counts.

    `alternatives` holds (n̂_m, Cov_m) of other candidate models (see `mle_profile`): every
    interval is then the hull of its own Wald interval and theirs, and `se` stays the standard
    error of `n_hat`.
    """

    n_prime: int
    tau: int
    level_counts: I64
    n_hat: F64
    cov: F64
    method: Method
    boot_hat: F64 | None = field(default=None, repr=False)
    boot_true: F64 | None = field(default=None, repr=False)
    alternatives: tuple[tuple[F64, F64], ...] = field(default=(), repr=False)

    # ---- scalar functionals -------------------------------------------------------------

    @property
    def load(self) -> float:
        """λ̂ = Û / N'."""
        return float(self.n_hat.sum()) / self.n_prime

    def _classes(self) -> npt.NDArray[np.float64]:
        return np.arange(1, self.tau + 1, dtype=np.float64)

    def _weights_at_least(self, threshold: int) -> F64:
        if not 1 <= threshold <= self.tau:
            raise ValueError(f"threshold must be in 1..tau={self.tau}")
        return (self._classes() >= threshold).astype(np.float64)

    def _linear(self, a: F64, confidence: float, lower: float = 0.0) -> Interval:
        est = float(a @ self.n_hat)
        z = _z(confidence)
        if self.boot_hat is not None and self.boot_true is not None:
            err = self.boot_hat @ a - self.boot_true @ a
            return self._basic(est, err, confidence, lower)
        se = math.sqrt(max(float(a @ self.cov @ a), 0.0))
        lo, hi = est - z * se, est + z * se
        for n_m, cov_m in self.alternatives:
            e_m, s_m = float(a @ n_m), math.sqrt(max(float(a @ cov_m @ a), 0.0))
            lo, hi = min(lo, e_m - z * s_m), max(hi, e_m + z * s_m)
        return Interval(est, se, max(lo, lower), hi, confidence)

    def _basic(self, est: float, err: F64, confidence: float, lower: float) -> Interval:
        q_lo, q_hi = np.quantile(err, [0.5 - confidence / 2, 0.5 + confidence / 2])
        if q_lo == q_hi and err.size:
            # fewer than 1 - confidence of the replicates err (a rare collision): the quantile
            # interval has width 0 although the count is not certain; use the replicates' range
            q_lo, q_hi = float(err.min()), float(err.max())
        se = float(np.std(err, ddof=1)) if err.size > 1 else 0.0
        return Interval(est, se, max(est - float(q_hi), lower), est - float(q_lo), confidence)

    def union(self, confidence: float = 0.95) -> Interval:
        """Û = Σ n̂_l = -N' ln(Z_0/N') (linear counting, Whang et al. 1990) with its interval.

        The lower bound is at least N' - Z_0, which is certain (each non-empty register holds
        a chunk).
        """
        occupied = float(self.n_prime - int(self.level_counts[0]))
        return self._linear(np.ones(self.tau), confidence, lower=occupied)

    def at_least(self, threshold: int, confidence: float = 0.95) -> Interval:
        """Ŵ_{>=T} = Û - Σ_{l<T} n̂_l (occ-storage.md §3), Var = aᵀ Cov a."""
        return self._linear(self._weights_at_least(threshold), confidence)

    def replicas(self, count: int, confidence: float = 0.95) -> Interval:
        """n̂_l for 1 <= l < tau (decompounding / MLE); l = tau means the class >= tau."""
        if not 1 <= count <= self.tau:
            raise ValueError(f"replica count must be in 1..tau={self.tau}")
        a = np.zeros(self.tau)
        a[count - 1] = 1.0
        return self._linear(a, confidence)

    def _ratio(
        self, num: F64, den: F64, confidence: float, lo_clip: float, hi_clip: float
    ) -> Interval:
        n_num, n_den = float(num @ self.n_hat), float(den @ self.n_hat)
        if n_den <= 0:
            return Interval(float("nan"), float("nan"), lo_clip, hi_clip, confidence)
        est = n_num / n_den
        if self.boot_hat is not None and self.boot_true is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                r_hat = (self.boot_hat @ num) / (self.boot_hat @ den)
                r_true = (self.boot_true @ num) / (self.boot_true @ den)
            err = (r_hat - r_true)[np.isfinite(r_hat - r_true)]
            iv = self._basic(est, err, confidence, lo_clip)
            return Interval(iv.estimate, iv.se, iv.lo, min(iv.hi, hi_clip), confidence)
        z = _z(confidence)
        se = _ratio_se(num, den, self.n_hat, self.cov)
        lo, hi = est - z * se, est + z * se
        for n_m, cov_m in self.alternatives:
            d_m = float(den @ n_m)
            if d_m <= 0:
                continue
            e_m = float(num @ n_m) / d_m
            s_m = _ratio_se(num, den, n_m, cov_m)
            lo, hi = min(lo, e_m - z * s_m), max(hi, e_m + z * s_m)
        return Interval(est, se, max(lo, lo_clip), min(hi, hi_clip), confidence)

    def fraction_at_least(self, threshold: int, confidence: float = 0.95) -> Interval:
        """f̂ = Ŵ_{>=T} / Û with a delta-method interval (occ-storage.md §3), clipped to [0, 1]."""
        a = self._weights_at_least(threshold)
        return self._ratio(a, np.ones(self.tau), confidence, 0.0, 1.0)

    def average_replication(self, confidence: float = 0.95) -> Interval:
        """(Σ_l l n̂_l) / Û with a delta-method interval. The class >= tau counts as tau
        replicas, so the estimate is a lower bound when that class is not empty."""
        return self._ratio(self._classes(), np.ones(self.tau), confidence, 0.0, float("inf"))


def _ratio_se(num: F64, den: F64, n_hat: F64, cov: F64) -> float:
    """Delta-method se of (num·n)/(den·n): ∂/∂n_k = (num_k - r den_k) / (den·n)."""
    n_den = float(den @ n_hat)
    g = (num - float(num @ n_hat) / n_den * den) / n_den
    return math.sqrt(max(float(g @ cov @ g), 0.0))


# --------------------------------------------------------------------------- constructors


def plugin_profile(level_counts: npt.ArrayLike) -> ProfileEstimate:
    """Plug-in profile: Û by linear counting (Whang et al. 1990), n̂_l by decompounding
    (Buchmann & Grübel 2003), covariance by the delta method on the multinomial cell
    frequencies minus diag(n̂) (fixed chunk set; occ-storage.md §3).

    With classes 1..tau-1 and one censored class the model is exactly identified, so this is
    also the unconstrained maximum-likelihood estimate.
    """
    z = _as_levels(level_counts)
    n_hat, cov = _plugin_batch(z[None, :].astype(np.float64))
    return ProfileEstimate(int(z.sum()), z.size - 1, z, n_hat[0], cov[0], "plugin")


def panjer_pmf(lam: npt.ArrayLike, tau: int) -> F64:
    """Return P(S = 0..tau-1) and P(S >= tau) of one register (length tau+1) for class loads
    λ_1..λ_{tau-1}, λ_{>=tau}: g_0 = e^{-Λ}, g_s = (1/s) Σ_{l<=s} l λ_l g_{s-l} (Panjer 1981)."""
    lam_arr = np.asarray(lam, dtype=np.float64)
    if lam_arr.shape != (tau,):
        raise ValueError(f"need tau={tau} class loads")
    g = _panjer(lam_arr, tau)
    return np.append(g, max(0.0, 1.0 - float(g.sum())))


def _panjer(lam: F64, tau: int) -> F64:
    g = np.empty(tau, dtype=np.float64)
    g[0] = math.exp(-float(lam.sum()))
    ll = np.arange(1, tau, dtype=np.float64) * lam[: tau - 1]  # l λ_l, l = 1..tau-1
    for s in range(1, tau):
        g[s] = float(ll[:s] @ g[s - 1 :: -1][:s]) / s
    return g


def _cell_jacobian(lam: F64, tau: int) -> tuple[F64, F64]:
    """Cell probabilities p (tau+1) and ∂p_s/∂λ_l (tau+1, tau): ∂g_s/∂λ_l = g_{s-l} - g_s."""
    g = _panjer(lam, tau)
    jac = np.empty((tau + 1, tau), dtype=np.float64)
    jac[:tau, :] = -g[:, None]
    for l_cls in range(1, tau):
        jac[l_cls:tau, l_cls - 1] += g[: tau - l_cls]
    jac[tau, :] = -jac[:tau, :].sum(axis=0)
    p = np.append(g, max(1.0 - float(g.sum()), 0.0))
    return p, jac


def _loglik(z: F64, lam: F64, tau: int) -> float:
    p = panjer_pmf(lam, tau)
    pos = z > 0
    if np.any(p[pos] <= 0.0):
        return -math.inf
    return float(z[pos] @ np.log(p[pos]))


def _fit_bounded(z: I64, fixed: npt.NDArray[np.bool_], start: F64) -> F64:
    """Maximise the censored compound-Poisson likelihood over λ >= 0 with `fixed` classes at 0.

    Projected Fisher scoring (Newton with the expected information) with an active set for
    the bound λ_l = 0 and step halving; it converges in a few iterations where a generic
    quasi-Newton method needs dozens of evaluations.
    """
    tau = z.size - 1
    zf = z.astype(np.float64)
    n_prime = float(zf.sum())
    lam = np.where(fixed, 0.0, np.maximum(start, 0.0))
    total = -math.log(float(z[0]) / n_prime)
    if lam.sum() > 0:
        lam = lam * (total / lam.sum())
    else:
        lam = np.where(fixed, 0.0, total / max(int((~fixed).sum()), 1))
    ll = _loglik(zf, lam, tau)
    if not math.isfinite(ll):
        lam = np.where(fixed, 0.0, total / max(int((~fixed).sum()), 1))
        ll = _loglik(zf, lam, tau)
    for _ in range(100):
        p, jac = _cell_jacobian(lam, tau)
        pos = p > 1e-300
        score = (zf[pos] / p[pos]) @ jac[pos]
        info = n_prime * (jac[pos].T / p[pos]) @ jac[pos]
        free = ~fixed & ~((lam <= 0.0) & (score <= 0.0))
        if not free.any():
            break
        step = np.zeros(tau)
        step[free] = np.linalg.lstsq(info[np.ix_(free, free)], score[free], rcond=None)[0]
        alpha = 1.0
        improved = False
        for _ in range(40):
            trial = np.maximum(lam + alpha * step, 0.0)
            trial[fixed] = 0.0
            trial_ll = _loglik(zf, trial, tau)
            if trial_ll >= ll - 1e-12 * abs(ll):
                improved = True
                break
            alpha *= 0.5
        if not improved:
            break
        change = float(np.abs(trial - lam).max())
        lam, ll_old, ll = trial, ll, trial_ll
        if change < 1e-12 * max(total, 1e-12) or abs(ll - ll_old) < 1e-11 * max(abs(ll), 1.0):
            break
    return lam


def _fisher_cov_pois(lam: F64, free: npt.NDArray[np.bool_], n_prime: int) -> F64:
    """N'^2 I^-1 on the free classes (Poissonised Fisher information of the cells), 0 elsewhere."""
    tau = lam.size
    p, jac = _cell_jacobian(lam, tau)
    cov = np.zeros((tau, tau), dtype=np.float64)
    if free.any():
        pos = p > 1e-300
        ja = jac[pos][:, free]
        info = n_prime * (ja.T / p[pos]) @ ja
        cov[np.ix_(free, free)] = np.linalg.pinv(info) * float(n_prime) ** 2
    return cov


def cramer_rao_bound(
    class_loads: npt.ArrayLike,
    n_prime: int,
    support: npt.ArrayLike | None = None,
) -> F64:
    """Cramér-Rao bound on Cov(n̂ - n) for the realised chunk set: N'^2 I(λ)^-1 - diag(n).

    I(λ) is the Fisher information of the Poissonised cell model (occ-storage.md §3): the level
    counts are multinomial over N' registers with the censored compound-Poisson cell
    probabilities g(λ) of `panjer_pmf`, I = N' Σ_s ∇g_s ∇g_sᵀ / g_s. `class_loads` are
    λ_1..λ_{τ-1}, λ_{>=τ}; `support` (boolean, default λ_l > 0) marks the classes the model
    lets vary, the others being known to be empty. Any estimator that is unbiased for the
    realised class counts (E[n̂ | n] = n) has Var(n̂_l - n_l) >= the diagonal; with the true
    support it is the smallest such bound, so it holds even for an estimator told the support.
    """
    lam = np.asarray(class_loads, dtype=np.float64)
    if lam.ndim != 1 or lam.size < 2 or np.any(lam < 0):
        raise ValueError("class loads must be a vector of >= 2 non-negative values")
    free = lam > 0 if support is None else np.asarray(support, dtype=bool)
    if free.shape != lam.shape:
        raise ValueError("support must have the shape of class_loads")
    cov = _fisher_cov_pois(lam, free, n_prime)
    idx = np.flatnonzero(free)
    cov[idx, idx] -= lam[idx] * n_prime
    return cov


def mle_profile(
    level_counts: npt.ArrayLike,
    *,
    max_replication: int | None = None,
    drop_lr: float = DROP_LR,
) -> ProfileEstimate:
    """Constrained maximum-likelihood profile (occ-storage.md §3, "refine with a constrained MLE").

    Likelihood: Σ_{s<tau} Z_s ln g_s(λ) + Z_{>=tau} ln(1 - Σ_{s<tau} g_s(λ)), the censored top
    cell entering as one cell, with g from the Panjer recursion (Panjer 1981), maximised over
    λ_l >= 0 by projected Fisher scoring from the clipped decompounding estimate (Buchmann &
    Grübel 2003). `max_replication` (the largest replica count a chunk can have,
    `replication_bound`: never the node count) fixes λ_l = 0 above it.

    Support step: with every class free the model is exactly identified and equals the plug-in,
    and a class that is truly empty but estimated > 0 absorbs collisions of real chunks (two
    3-replica chunks in one register read as one 6-replica chunk). So classes are fixed at 0
    one at a time, smallest Wald statistic first, while the likelihood-ratio statistic of the
    drop stays below `drop_lr` (2 = AIC); the censored class >= tau is never dropped. The
    estimate and covariance are averaged over the models visited with weights
    exp(ℓ_m - k_m drop_lr/2) (Buckland, Burnham & Augustin 1997), which keeps the interval
    honest when the support is uncertain.

    Covariance of each model: N'^2 I^-1 on its free classes (Poissonised Fisher information of
    the cell probabilities) minus diag(n̂) for the realised chunk set (occ-storage.md §3);
    the averaged covariance adds the between-model spread.

    Small sketches (N' < SMALL_SKETCH_REGISTERS or Z_0 < SMALL_SKETCH_EMPTY): the support
    selection is then biased by about a quarter of a standard error or more (a true class with a
    handful of chunks is dropped and its registers are read as collisions, Û too high; a
    spurious class is kept, Û too low), which the averaged Wald interval misses (coverage
    0.86-0.91 at N' = 10^3, λ = 2). There every interval is the hull of the averaged interval,
    the full-support fit's interval (no selection) and the interval of every model on the path
    within ΔAIC <= HULL_DELTA_AIC of the best, so it covers whichever of those supports is
    right. `se` stays the averaged standard error.
    """
    z = _as_levels(level_counts)
    n_prime = int(z.sum())
    tau = z.size - 1
    fixed = np.zeros(tau, dtype=bool)
    if max_replication is not None:
        if max_replication < 1:
            raise ValueError("max_replication must be >= 1")
        fixed[max_replication:] = True
    zf = z.astype(np.float64)
    idx = np.arange(tau)
    if int(z[0]) == n_prime:  # an empty sketch: nothing to fit
        return ProfileEstimate(n_prime, tau, z, np.zeros(tau), np.zeros((tau, tau)), "mle")
    lam = _fit_bounded(z, fixed, _plugin_batch(z[None, :].astype(np.float64))[0][0] / n_prime)
    fixed = fixed | (lam <= 0.0)
    # the path of models visited: (λ̂, free classes, log-likelihood)
    path = [(lam, ~fixed, _loglik(zf, lam, tau))]
    while drop_lr > 0:
        lam, free, current = path[-1]
        if free.sum() <= 1:
            break
        cov = _fisher_cov_pois(lam, free, n_prime)
        sd = np.sqrt(np.maximum(np.diag(cov), 1e-300))
        # the censored class >= tau is never dropped: a lone chunk there is direct evidence,
        # and dropping it forces its registers to be explained as collisions (Û biased up)
        wald = np.where(free & (idx < tau - 1), lam * n_prime / sd, np.inf)
        if not np.isfinite(wald).any():
            break
        trial_fixed = ~free
        trial_fixed[int(np.argmin(wald))] = True
        trial = _fit_bounded(z, trial_fixed, lam)
        trial_ll = _loglik(zf, trial, tau)
        path.append((trial, ~(trial_fixed | (trial <= 0.0)), trial_ll))
        if 2.0 * (current - trial_ll) >= drop_lr:
            break
    # Model averaging over the path (Buckland, Burnham & Augustin 1997) with weights
    # exp(ℓ_m - k_m drop_lr/2), the penalty that matches the drop rule: it keeps the interval
    # honest when the support is uncertain (a real class nearly dropped, or a spurious one kept).
    logw = np.array([ll - 0.5 * drop_lr * float(fr.sum()) for _, fr, ll in path])
    if not np.isfinite(logw.max()):
        return plugin_profile(z)
    w = np.exp(logw - logw.max())
    w /= w.sum()
    ests = np.array([m[0] * n_prime for m in path])
    n_hat = w @ ests
    # the hull's candidates (small sketches only): the full-support fit (no selection) and
    # every model within HULL_DELTA_AIC of the best; logw = -AIC/2 with penalty drop_lr
    small = n_prime < SMALL_SKETCH_REGISTERS or int(z[0]) < SMALL_SKETCH_EMPTY
    hull: set[int] = set()
    if small:
        hull = {0} | {m for m in range(len(path)) if logw[m] >= logw.max() - HULL_DELTA_AIC / 2}
    cov = np.zeros((tau, tau), dtype=np.float64)
    alternatives: list[tuple[F64, F64]] = []
    for m, (wm, (lam_m, free_m, _), est_m) in enumerate(zip(w, path, ests, strict=True)):
        if wm < 1e-12 and m not in hull:
            continue
        cov_m = _fisher_cov_pois(lam_m, free_m, n_prime)
        cov_m[idx, idx] -= est_m
        d = est_m - n_hat
        cov += wm * (cov_m + np.outer(d, d))
        if m in hull:
            alternatives.append((est_m, cov_m))
    return ProfileEstimate(n_prime, tau, z, n_hat, cov, "mle", alternatives=tuple(alternatives))


def _simulate_levels(
    replicas: npt.NDArray[np.int64], n_prime: int, tau: int, reps: int, rng: np.random.Generator
) -> I64:
    """Level counts of `reps` independent placements of a fixed chunk set: each chunk falls in a
    uniform register and adds its replica count (this IS the merged sketch)."""
    u = replicas.size
    out = np.empty((reps, tau + 1), dtype=np.int64)
    step = max(1, 4_000_000 // max(n_prime + u, 1))
    for start in range(0, reps, step):
        b = min(step, reps - start)
        regs = rng.integers(0, n_prime, size=(b, u), dtype=np.int64)
        regs += (np.arange(b, dtype=np.int64) * n_prime)[:, None]
        s = np.bincount(regs.ravel(), weights=np.tile(replicas, b), minlength=b * n_prime)
        s = np.minimum(s.reshape(b, n_prime), tau).astype(np.int64)
        offs = (np.arange(b, dtype=np.int64) * (tau + 1))[:, None]
        out[start : start + b] = np.bincount((s + offs).ravel(), minlength=b * (tau + 1)).reshape(
            b, tau + 1
        )
    return out


def bootstrap_profile(
    level_counts: npt.ArrayLike,
    rng: np.random.Generator,
    reps: int = 400,
    *,
    max_replication: int | None = None,
) -> ProfileEstimate:
    """Parametric bootstrap, the fallback for small counts (§3).

    Without `max_replication`: the plug-in profile; a chunk set with round(max(n̂_l, 0))
    chunks per class (class >= tau at tau replicas) is placed `reps` times and intervals are
    basic bootstrap intervals of the error n̂* - n*. With `max_replication`: the same around
    the constrained MLE (`mle_profile`, classes above the bound fixed at 0), each replicate
    refitted the same way, so no replica class above the bound appears (two 3-replica chunks
    in one register are read as two chunks, not as one 6-replica chunk).
    """
    z = _as_levels(level_counts)
    if max_replication is None:
        base = plugin_profile(z)
    else:
        base = mle_profile(z, max_replication=max_replication)
    tau, n_prime = base.tau, base.n_prime
    counts = np.maximum(np.round(base.n_hat), 0).astype(np.int64)
    replicas = np.repeat(np.arange(1, tau + 1, dtype=np.int64), counts)
    levels = _simulate_levels(replicas, n_prime, tau, reps, rng)
    ok = levels[:, 0] > 0
    if not ok.any():
        raise SketchSaturatedError("every bootstrap replicate is saturated: resize N'")
    if max_replication is None:
        boot_hat = _plugin_batch(levels[ok].astype(np.float64))[0]
    else:
        # a small chunk set gives the same level counts in most replicates (no collision):
        # fit each distinct vector once, the result is identical to refitting every replicate
        uniq, inverse = np.unique(levels[ok], axis=0, return_inverse=True)
        fits = np.array([mle_profile(lv, max_replication=max_replication).n_hat for lv in uniq])
        boot_hat = fits[np.asarray(inverse).reshape(-1)]
    boot_true = np.broadcast_to(counts.astype(np.float64), boot_hat.shape).copy()
    err = boot_hat - boot_true
    cov = np.cov(err, rowvar=False) if err.shape[0] > 1 else np.zeros((tau, tau))
    return ProfileEstimate(
        n_prime, tau, z, base.n_hat, np.atleast_2d(cov), "bootstrap", boot_hat, boot_true
    )


def replication_bound(max_requested: int, repair_extra: int = REPAIR_EXTRA) -> int:
    """Return the largest replica count a chunk can have, from how the store places chunks.

    `max_requested` is the largest replication factor any stored file asked for (the
    manifests). Repair copies a chunk up to that target counting only the replicas it can
    verify, so a replica on a node that was unreachable during a repair comes back as one
    extra copy (`repair_extra`); rebalance only trims down to a target. The bound does not
    depend on the number of nodes, so neither do the estimates (occ-storage.md §3).
    """
    if max_requested < 1 or repair_extra < 0:
        raise ValueError("need max_requested >= 1 and repair_extra >= 0")
    return max_requested + repair_extra


def estimate_profile(
    level_counts: npt.ArrayLike,
    method: Method | Literal["auto"] = "auto",
    *,
    max_replication: int | None,
    rng: np.random.Generator | None = None,
    bootstrap_below: float = 100.0,
    bootstrap_reps: int = BOOTSTRAP_REPS,
) -> ProfileEstimate:
    """Return the profile by `method`.

    "auto" with a bound (`max_replication`): the constrained MLE (`mle_profile`) with the basic
    intervals of its parametric bootstrap (`bootstrap_profile`: the estimated chunk set placed
    `bootstrap_reps` times, each replicate refitted with the same support selection). The Wald
    intervals of the MLE are symmetric, but its error is not: registers censored at τ hold a
    right-skewed, lattice-valued number of chunks, and the support selection (a spurious class
    kept or a real one dropped) shifts Û one way. With the Wald interval 3.8% of the truths lay
    above the 95% interval and 0.3% below (r3, N' = 10^4, λ = 0.5-2); with the bootstrap 2.0%
    above and 1.0% below, where the lower bound is nearly certain, and 1.8-3.2% on each side
    after node failures (tests/unit/occ_storage/test_health_bounds.py). The point estimate
    is the MLE either way. Cost: `bootstrap_reps` refits of ~1-2 ms and placements of O(N' + U)
    each, ~0.2-1 s, which is why /status serves the report beat refreshes.

    "auto" without a bound: the MLE with Fisher intervals, or the plug-in bootstrap when
    0 < Û < `bootstrap_below`, where counts are too small for Normal intervals (§3).

    `max_replication` is required: the largest replica count any chunk can have
    (`replication_bound`), never the node count, so that the estimates depend only on the
    chunk set and the key. None means "no bound known" and must be said explicitly.
    """
    if method == "plugin":
        return plugin_profile(level_counts)
    if method == "mle":
        return mle_profile(level_counts, max_replication=max_replication)
    gen = rng if rng is not None else np.random.default_rng(0)
    if method == "bootstrap":
        return bootstrap_profile(level_counts, gen, bootstrap_reps, max_replication=max_replication)
    if method != "auto":
        raise ValueError(f"unknown method {method!r}")
    z = _as_levels(level_counts)
    u_hat = linear_counting(int(z[0]), int(z.sum()))
    if u_hat > 0 and (max_replication is not None or u_hat < bootstrap_below):
        return bootstrap_profile(z, gen, bootstrap_reps, max_replication=max_replication)
    return mle_profile(z, max_replication=max_replication)
