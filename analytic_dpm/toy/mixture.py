"""Gaussian-mixture data with a known score: q_0 = Σ_k w_k N(m_k, Σ_k) (facts file §1, §2).

Every forward marginal is again a mixture, q_n = Σ_k w_k N(√ᾱ_n m_k, A_{n,k}), A_{n,k} = ᾱ_nΣ_k + β̄_nI. With the
responsibilities r_k(x) = w_k N_k(x)/q_n(x) (computed by log-sum-exp, so they never overflow):

* ∇log q_n(x) = −Σ_k r_k(x) A_{n,k}⁻¹ (x − √ᾱ_n m_k)
* ε*_n(x)    = −√β̄_n ∇log q_n(x)
* E[x_0|x_n] = Σ_k r_k(x) μ_k(x),  μ_k(x) = m_k + √ᾱ_n Σ_k A_{n,k}⁻¹ (x − √ᾱ_n m_k)
* tr Cov(x_0|x_n = x) = Σ_k r_k(x) tr C_{n,k} + Σ_k r_k(x) ‖μ_k(x) − E[x_0|x_n]‖²,  C_{n,k} = Σ_k − ᾱ_nΣ_k A_{n,k}⁻¹Σ_k.

Γ_n = E‖ε*_n‖²/d has no closed form. :meth:`GaussianMixtureData.gamma_reference` computes it to about 1e-10 for d = 1
and d = 2 by quadrature: E_q f = Σ_k w_k E_{N(√ᾱ_n m_k, A_{n,k})} f, each expectation on a grid in the standardised
eigen-coordinates of A_{n,k} (a tensor grid in 2-D). The rule is the trapezoidal rule on [−L, L] with the normal
density as weight. Why not Gauss–Hermite: the integrand is analytic only in a strip (the responsibilities switch
from one component to another over a width ∝ A/separation, which puts complex poles close to the real axis); on such
functions the trapezoidal rule converges geometrically in the number of nodes, Gauss–Hermite only like exp(−c√nodes).
``rule="hermite"`` is kept for comparison.
"""

from __future__ import annotations

import hashlib
import math
import warnings

import numpy as np

from .._validate import _show, as_float, as_int, choice
from ..schedules import Schedule
from .gaussian import (
    GaussianData,
    _as_batch,
    _check_schedule,
    _check_timestep,
    _check_timesteps,
    _check_num_seed,
    _chunked_draw,
    _ToyData,
    _TorchCache,
)

QUADRATURE_RULES = ("trapezoid", "hermite")
_MAX_LEVEL = {1: 9, 2: 5}  # adaptive refinement stops at 40·2^L + 1 nodes per dimension (20481 in 1-D, 1281 in 2-D)
_TRUNCATION = 10.0  # the trapezoidal grid covers ±10 standard deviations (normal mass outside: 1.5e-23)


def standard_normal_rule(nodes: int, rule: str = "trapezoid"):
    """Nodes z_j and weights w_j with Σ_j w_j g(z_j) ≈ E g(Z), Z ~ N(0, 1).

    'trapezoid': z_j equally spaced on [−10, 10], w_j = h φ(z_j) (geometric convergence for functions analytic in a
    strip). 'hermite': Gauss–Hermite (probabilists'), exact for polynomials of degree < 2·nodes.
    """
    nodes = as_int("nodes", nodes, minimum=2, fix="Use e.g. 201 nodes per dimension.")
    choice("rule", rule, QUADRATURE_RULES)
    if rule == "hermite":
        z, w = np.polynomial.hermite_e.hermegauss(nodes)
        return z, w / math.sqrt(2.0 * math.pi)
    z = np.linspace(-_TRUNCATION, _TRUNCATION, nodes)
    h = z[1] - z[0]
    return z, h * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


class GaussianMixtureData(_ToyData):
    """A mixture Σ_k w_k N(means[k], covs[k]) in d dimensions with exact score, ε* and posterior mean.

    ``weights``: shape (K,), positive, summing to 1. ``means``: shape (K, d). ``covs``: (K, d, d) symmetric positive
    definite matrices, or (K, d) diagonal variances. Each component's eigendecomposition is computed once here.
    """

    def __init__(self, weights, means, covs):
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or w.size == 0:
            raise ValueError(f"weights must be a non-empty 1-D array (one per component); got shape {w.shape}.")
        if not np.all(np.isfinite(w)) or np.any(w <= 0.0):
            raise ValueError(f"weights must be finite and positive; got {_show(w)}. Drop components of weight 0.")
        if abs(w.sum() - 1.0) > 1e-9:
            raise ValueError(f"weights must sum to 1; they sum to {w.sum():.12g}. Pass weights / weights.sum().")
        K = w.size
        m = np.asarray(means, dtype=np.float64)
        if m.ndim != 2 or m.shape[0] != K:
            raise ValueError(
                f"means must have shape (K, d) = ({K}, d), one row per component; got shape {m.shape}. "
                "For 1-D data pass [[m_1], [m_2], …]."
            )
        if not np.all(np.isfinite(m)):
            raise ValueError("means must be finite; they contain NaN or inf.")
        d = m.shape[1]
        c = np.asarray(covs, dtype=np.float64)
        if not np.all(np.isfinite(c)):
            raise ValueError("covs must be finite; they contain NaN or inf.")
        if c.shape == (K, d):
            comps = [GaussianData(m[k], c[k]) for k in range(K)]
        elif c.shape == (K, d, d):
            comps = []
            for k in range(K):
                try:
                    comps.append(GaussianData(m[k], c[k]))
                except ValueError as exc:
                    raise ValueError(f"covs[{k}] (component {k}): {exc}") from None
        else:
            raise ValueError(
                f"covs must have shape (K, d, d) = ({K}, {d}, {d}) or (K, d) = ({K}, {d}) for diagonal covariances; "
                f"got shape {c.shape}."
            )
        self._w = w.copy()
        self._log_w = np.log(w)
        self._m = m.copy()
        self._components = comps
        self._lam = np.stack([g.eigvals for g in comps])  # (K, d)
        self._U = np.stack([g.basis for g in comps])  # (K, d, d)
        self._mean_eig = np.einsum("kd,kde->ke", self._m, self._U)  # U_kᵀ m_k
        self._torch = _TorchCache()
        self._grids = {}  # quadrature grids by nodes per dimension
        self._ref_cache = {}  # adaptive quadrature results: (schedule hash, tol) -> {n: (Γ_n, cov_n)}
        for a in (self._w, self._m, self._lam, self._U):
            a.setflags(write=False)

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return int(self._m.shape[1])

    @property
    def n_components(self) -> int:
        return int(self._w.size)

    @property
    def weights(self) -> np.ndarray:
        return self._w

    @property
    def means(self) -> np.ndarray:
        return self._m

    @property
    def covs(self) -> np.ndarray:
        """Σ_k, shape (K, d, d)."""
        return np.stack([g.cov for g in self._components])

    def component(self, k: int) -> GaussianData:
        """Component k as :class:`GaussianData`."""
        k = as_int("k", k, minimum=0)
        if k >= self.n_components:
            raise ValueError(f"k must be a component index in 0..{self.n_components - 1}; got {k}.")
        return self._components[k]

    @property
    def mean(self) -> np.ndarray:
        """Mixture mean Σ_k w_k m_k (for the Fréchet distance)."""
        return self._w @ self._m

    @property
    def cov(self) -> np.ndarray:
        """Mixture covariance Σ_k w_k (Σ_k + m_k m_kᵀ) − mean meanᵀ."""
        mu = self.mean
        dm = self._m - mu
        return np.einsum("k,kij->ij", self._w, self.covs) + (dm.T * self._w) @ dm

    def second_moment_per_dim(self) -> float:
        """E‖x_0‖²/d = Σ_k w_k (‖m_k‖² + tr Σ_k)/d."""
        return float(self._w @ ((self._m**2).sum(axis=1) + self._lam.sum(axis=1)) / self.dim)

    def __repr__(self) -> str:
        return f"GaussianMixtureData(dim={self.dim}, components={self.n_components})"

    # ------------------------------------------------------------------ core (numpy or torch)
    def _parts(self, schedule: Schedule, x2, n: int, torch_in: bool):
        """Per-component eigen-coordinates and responsibilities at timestep n for a (B, d) batch.

        Returns (r, u, a, lse): r (B, K) responsibilities; u (B, K, d) = (U_kᵀ(x − √ᾱ m_k))/a_k, the eigen-coordinates
        of A_{n,k}⁻¹(x − √ᾱ m_k); a (K, d) eigenvalues of A_{n,k} (numpy); lse (B,) = log Σ_k w_k N_k(x) + ½ d log 2π.
        """
        ab, bb = schedule.alpha_bar[n], schedule.beta_bar[n]
        a_np = ab * self._lam + bb
        logdet = np.log(a_np).sum(axis=1)
        if torch_in:
            import torch

            U = self._torch.get("U", self._U, x2)
            me = self._torch.get("mean_eig", self._mean_eig, x2)
            a = torch.as_tensor(a_np, dtype=x2.dtype, device=x2.device)
            base = torch.as_tensor(self._log_w - 0.5 * logdet, dtype=x2.dtype, device=x2.device)
            y = torch.einsum("bd,kde->bke", x2, U) - math.sqrt(ab) * me
            u = y / a
            logits = base - 0.5 * (y * u).sum(dim=2)
            lse = torch.logsumexp(logits, dim=1)
            r = torch.exp(logits - lse[:, None])
        else:
            K, d, _ = self._U.shape  # one matmul instead of einsum: (B, d) @ (d, K·d) → (B, K, d)
            y = (x2 @ self._U.transpose(1, 0, 2).reshape(d, K * d)).reshape(-1, K, d) - math.sqrt(ab) * self._mean_eig
            u = y / a_np
            logits = self._log_w - 0.5 * logdet - 0.5 * (y * u).sum(axis=2)
            mx = logits.max(axis=1, keepdims=True)
            ex = np.exp(logits - mx)
            s = ex.sum(axis=1, keepdims=True)
            r = ex / s
            lse = (mx + np.log(s))[:, 0]
        return r, u, a_np, lse

    def _combine(self, v, x2, torch_in):
        """Σ_k U_k v_k for v of shape (B, K, d) (eigen-coordinates of each component) → (B, d)."""
        if torch_in:
            import torch

            return torch.einsum("bke,kde->bd", v, self._torch.get("U", self._U, x2))
        K, d, _ = self._U.shape  # Σ_k U_k v_k as one matmul: (B, K·d) @ (K·d, d)
        return v.reshape(v.shape[0], K * d) @ self._U.transpose(0, 2, 1).reshape(K * d, d)

    def score(self, schedule: Schedule, x, n: int):
        """∇log q_n(x) = −Σ_k r_k(x) (ᾱ_nΣ_k + β̄_nI)⁻¹(x − √ᾱ_n m_k), n in 0..N; numpy or torch."""
        schedule = _check_schedule(schedule)
        n = _check_timestep(schedule, n, minimum=0)
        x2, restore, torch_in = _as_batch(x, self.dim)
        r, u, _, _ = self._parts(schedule, x2, n, torch_in)
        return restore(-self._combine(r[:, :, None] * u, x2, torch_in))

    def eps(self, schedule: Schedule, x, n: int):
        """ε*_n(x) = E[ε | x_n = x] = √β̄_n Σ_k r_k(x) (ᾱ_nΣ_k + β̄_nI)⁻¹(x − √ᾱ_n m_k), n in 1..N; numpy or torch."""
        schedule = _check_schedule(schedule)
        n = _check_timestep(schedule, n)
        x2, restore, torch_in = _as_batch(x, self.dim)
        r, u, _, _ = self._parts(schedule, x2, n, torch_in)
        return restore(self._combine(r[:, :, None] * u, x2, torch_in) * math.sqrt(schedule.beta_bar[n]))

    def x0_posterior_mean(self, schedule: Schedule, x, n: int):
        """E[x_0 | x_n = x] = Σ_k r_k(x) (m_k + √ᾱ_nΣ_k A_{n,k}⁻¹(x − √ᾱ_n m_k)), n in 0..N; numpy or torch."""
        schedule = _check_schedule(schedule)
        n = _check_timestep(schedule, n, minimum=0)
        x2, restore, torch_in = _as_batch(x, self.dim)
        r, u, _, _ = self._parts(schedule, x2, n, torch_in)
        shift = self._combine(r[:, :, None] * (u * self._lam_like(x2, torch_in)), x2, torch_in)
        base = r @ self._const("m", self._m, x2, torch_in)
        return restore(base + math.sqrt(schedule.alpha_bar[n]) * shift)

    def _lam_like(self, x2, torch_in):
        return self._const("lam", self._lam, x2, torch_in)

    def _const(self, name, value, like, torch_in):
        return self._torch.get(name, value, like) if torch_in else value

    def log_prob(self, schedule: Schedule, x, n: int) -> np.ndarray:
        """log q_n(x) = log Σ_k w_k N(x; √ᾱ_n m_k, ᾱ_nΣ_k + β̄_nI), n in 0..N, numpy batch; shape (B,)."""
        schedule = _check_schedule(schedule)
        n = _check_timestep(schedule, n, minimum=0)
        x2, _, torch_in = _as_batch(x, self.dim)
        if torch_in:
            raise TypeError("log_prob takes numpy arrays; convert with x.detach().cpu().numpy().")
        _, _, _, lse = self._parts(schedule, x2, n, False)
        return lse - 0.5 * self.dim * math.log(2.0 * math.pi)

    def sample(self, num: int, seed: int = 0, start: int = 0, return_components: bool = False):
        """``num`` samples x_0 as float64 (num, d) (and the component of each with ``return_components``): samples
        start..start+num−1 of the stream for ``seed`` (chunked seeding, independent of how calls are split)."""
        num, seed, start = _check_num_seed(num, seed, start)
        d, K = self.dim, self.n_components
        if num == 0:
            x = np.empty((0, d))
            return (x, np.empty(0, dtype=np.int64)) if return_components else x
        cdf = np.cumsum(self._w)
        cdf[-1] = 1.0

        def draw(rng, c):
            comp = np.minimum(np.searchsorted(cdf, rng.random(c), side="right"), K - 1)
            return comp, rng.standard_normal((c, d))

        comp, z = _chunked_draw(seed, (0,), start, num, draw)
        scaled = z * np.sqrt(self._lam[comp])  # (num, d) eigen-coordinates
        x = self._m[comp] + np.einsum("be,bde->bd", scaled, self._U[comp])
        return (x, comp.astype(np.int64)) if return_components else x

    # ------------------------------------------------------------------ quadrature references
    def _grid(self, nodes: int, rule: str):
        """Standard-normal tensor grid in d dimensions: points Z (P, d) and weights W (P,), negligible weights dropped."""
        z1, w1 = standard_normal_rule(nodes, rule)
        if self.dim == 1:
            Z, W = z1[:, None], w1
        else:
            Z = np.stack(np.meshgrid(z1, z1, indexing="ij"), axis=-1).reshape(-1, 2)
            W = np.outer(w1, w1).ravel()
        keep = W > 1e-16 * W.max()  # drops the corners beyond radius 8.6 (normal mass there ≈ 1e-15)
        return Z[keep], W[keep]

    def _quadrature_at(self, schedule: Schedule, n: int, Z, W):
        """(Γ_n, E tr Cov(x_0|x_n)/d) on the grid (Z, W) placed on each component of q_n in turn.

        Written with (K, B) arrays per coordinate (d <= 2), which numpy handles several times faster than (B, K, d).
        """
        d, K = self.dim, self.n_components
        ab, bb = schedule.alpha_bar[n], schedule.beta_bar[n]
        sab = math.sqrt(ab)
        lam, U = self._lam, self._U
        a = ab * lam + bb  # (K, d): eigenvalues of A_{n,k}
        prec = np.einsum("kie,ke,kje->kij", U, 1.0 / a, U)  # A_{n,k}⁻¹
        gain = np.einsum("kie,ke,kje->kij", U, sab * lam / a, U)  # √ᾱ Σ_k A_{n,k}⁻¹
        centre = sab * self._m  # (K, d)
        base = self._log_w - 0.5 * np.log(a).sum(axis=1)
        tr_c = (lam * bb / a).sum(axis=1)  # tr C_{n,k}
        # points: component j's grid, x = √ᾱ m_j + U_j (√a_j ⊙ z), all components one after another
        pts = [np.concatenate([centre[j, i] + (Z * (np.sqrt(a[j]) * U[j, i])).sum(axis=1) for j in range(K)])
               for i in range(d)]
        wts = (self._w[:, None] * W[None, :]).ravel()
        delta = [pts[i][None, :] - centre[:, i, None] for i in range(d)]  # (K, B) each
        g = [sum(prec[:, i, j, None] * delta[j] for j in range(d)) for i in range(d)]  # A⁻¹(x − √ᾱ m_k)
        logits = base[:, None] - 0.5 * sum(delta[i] * g[i] for i in range(d))
        logits -= logits.max(axis=0)
        r = np.exp(logits)
        r /= r.sum(axis=0)
        e = [(r * g[i]).sum(axis=0) for i in range(d)]  # −∇log q_n = ε*/√β̄
        g_vals = bb * sum(ei * ei for ei in e)
        mu = [self._m[:, i, None] + sum(gain[:, i, j, None] * delta[j] for j in range(d)) for i in range(d)]
        mbar = [(r * mu[i]).sum(axis=0) for i in range(d)]
        spread = sum((mu[i] - mbar[i]) ** 2 for i in range(d))
        c_vals = tr_c @ r + (r * spread).sum(axis=0)
        return float(wts @ g_vals) / d, float(wts @ c_vals) / d

    def _quadrature(self, schedule: Schedule, timesteps, nodes, rule, tol):
        schedule = _check_schedule(schedule)
        d = self.dim
        if d > 2:
            raise ValueError(
                f"the quadrature reference supports d = 1 and d = 2 only (tensor grids); this mixture has d = {d}. "
                "Use gamma_monte_carlo(schedule, num_samples, seed) instead: it returns Γ and its standard error."
            )
        choice("rule", rule, QUADRATURE_RULES)
        tol = as_float("tol", tol)
        if tol <= 0:
            raise ValueError(f"tol must be > 0 (the agreement asked of two successive grids, e.g. 1e-10); got {tol}.")
        steps = _check_timesteps(schedule, timesteps)
        gamma = np.empty(steps.size)
        cov = np.empty(steps.size)
        if nodes is not None:
            Z, W = self._grid(as_int("nodes", nodes, minimum=2), rule)
            for i, n in enumerate(steps):
                gamma[i], cov[i] = self._quadrature_at(schedule, int(n), Z, W)
            return steps, gamma, cov
        if rule != "trapezoid":
            raise ValueError("the adaptive reference (nodes=None) uses rule='trapezoid'; pass nodes= for 'hermite'.")
        # adaptive: halve the step h (nodes 41, 81, 161, …) until the change D_j between two successive grids, or the
        # next change extrapolated at a constant ratio, D_j²/D_{j−1}, is below ``tol``. The trapezoidal error falls
        # faster than geometrically in the level, so D_j²/D_{j−1} overestimates the error left. Cached per schedule.
        key = (hashlib.sha1(schedule.log_alpha_bar.tobytes()).hexdigest(), float(tol))
        cache = self._ref_cache.setdefault(key, {})
        levels = [40 * 2**j + 1 for j in range(_MAX_LEVEL[d] + 1)]
        unconverged = []
        for i, n in enumerate(steps):
            n = int(n)
            if n in cache:
                gamma[i], cov[i] = cache[n]
                continue
            prev, d_prev, done = None, None, False
            for nodes_j in levels:
                if nodes_j not in self._grids:
                    self._grids[nodes_j] = self._grid(nodes_j, "trapezoid")
                cur = self._quadrature_at(schedule, n, *self._grids[nodes_j])
                if prev is not None:
                    dj = max(abs(cur[0] - prev[0]), abs(cur[1] - prev[1]) / cur[1])
                    if dj <= tol or (d_prev is not None and dj < 0.5 * d_prev and dj**2 <= tol * d_prev):
                        done = True
                        break
                    d_prev = dj
                prev = cur
            if not done:
                unconverged.append(n)
            gamma[i], cov[i] = cache[n] = cur
        if unconverged:
            warnings.warn(
                f"the quadrature reference did not reach tol = {tol:g} with {levels[-1]} nodes per dimension at "
                f"n = {_show(np.array(unconverged))}: the mixture is too sharp for a tensor grid there. Treat those "
                "values as approximate, or use gamma_monte_carlo.",
                RuntimeWarning,
                stacklevel=3,
            )
        return steps, gamma, cov

    def gamma_reference(self, schedule: Schedule, timesteps=None, nodes: int | None = None,
                        rule: str = "trapezoid", tol: float = 1e-10) -> np.ndarray:
        """High-accuracy Γ_n = E‖ε*_n(x_n)‖²/d by quadrature (d = 1 or 2 only), shape (N+1,).

        Index 0 is 0.0; timesteps not asked for are NaN. With ``nodes=None`` (the default) the grid is refined per
        timestep (41, 81, 161, … nodes per dimension) until two successive grids agree to ``tol`` in Γ and relatively
        in the posterior covariance trace; the trapezoidal rule converges geometrically, so the finer grid's error is
        far below ``tol``. A RuntimeWarning names any timestep that did not converge. An explicit ``nodes`` uses that
        one grid (for convergence studies). For d > 2 use :meth:`gamma_monte_carlo`.
        """
        steps, g, _ = self._quadrature(schedule, timesteps, nodes, rule, tol)
        out = np.full(schedule.N + 1, np.nan)
        out[0] = 0.0
        out[steps] = g
        return out

    def posterior_cov_trace_reference(self, schedule: Schedule, timesteps=None, nodes: int | None = None,
                                      rule: str = "trapezoid", tol: float = 1e-10) -> np.ndarray:
        """E tr Cov(x_0|x_n)/d by quadrature (d = 1 or 2), shape (N+1,), index 0 = 0, NaN where not asked.

        Mathematically this is the Tweedie identity (β̄_n/ᾱ_n)(1 − Γ_n) (Lemma 11), but that form multiplies the
        quadrature error of Γ by β̄_n/ᾱ_n (2.5e4 at n = N on the linear schedule). Here the integrand is
        Σ_k r_k tr C_{n,k} + Σ_k r_k ‖μ_k − E[x_0|x_n]‖², a sum of non-negative terms, so the result keeps its relative
        accuracy at every n. Arguments as in :meth:`gamma_reference`.
        """
        steps, _, c = self._quadrature(schedule, timesteps, nodes, rule, tol)
        out = np.full(schedule.N + 1, np.nan)
        out[0] = 0.0
        out[steps] = c
        return out

    def references(self, schedule: Schedule, timesteps=None, nodes: int | None = None, tol: float = 1e-10):
        """(Γ, E tr Cov(x_0|x_n)/d) from one quadrature pass (both shape (N+1,), as in :meth:`gamma_reference`)."""
        steps, g, c = self._quadrature(schedule, timesteps, nodes, "trapezoid", tol)
        gamma = np.full(schedule.N + 1, np.nan)
        cov = np.full(schedule.N + 1, np.nan)
        gamma[0] = cov[0] = 0.0
        gamma[steps] = g
        cov[steps] = c
        return gamma, cov


def default_mixture() -> GaussianMixtureData:
    """A built-in 2-D mixture of four well-separated components inside [−1, 1]²: unequal weights, one isotropic, two
    axis-aligned elongated and one correlated covariance (standard deviations 0.08–0.2)."""
    weights = np.array([0.35, 0.25, 0.25, 0.15])
    means = np.array([[-0.5, -0.45], [0.5, -0.5], [0.45, 0.5], [-0.5, 0.5]])
    covs = np.array([
        [[0.02, 0.0], [0.0, 0.02]],
        [[0.04, 0.0], [0.0, 0.0064]],
        [[0.0064, 0.0], [0.0, 0.03]],
        [[0.02, 0.012], [0.012, 0.02]],
    ])
    return GaussianMixtureData(weights, means, covs)


__all__ = ["GaussianMixtureData", "default_mixture", "standard_normal_rule", "QUADRATURE_RULES"]
