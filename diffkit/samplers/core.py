"""Reverse-process samplers, each a short function ``sampler(denoiser, state, times, ...)``.

``denoiser(state, t)`` returns, for every diffused field, ``x0_hat`` (Gaussian fields) or
``p(x_0 | x_t)`` (categorical fields); ``denoiser.diffusion`` names the field processes. ``state`` is
a draw from the prior at ``times[0]``; ``times`` decreases to ``t_min`` and every sampler ends with a
step to the clean level (``alpha = 1, sigma = 0``), where ``x = x0_hat``.

Gaussian fields follow the sampler's update; categorical fields step ancestrally,
``x_s ~ p(x_s | x_t)``, once per level beside any of them (Campbell et al. 2022; DiGress).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from diffkit.processes.gaussian import gaussian_posterior
from diffkit.state import State


class _Levels:
    """Per-field ``alpha_i``, ``sigma_i`` over the K levels plus the clean level (1, 0)."""

    def __init__(self, diffusion, times):
        self.times = [float(t) for t in torch.as_tensor(times, dtype=torch.float64)]
        if any(b >= a for a, b in zip(self.times, self.times[1:])):
            raise ValueError("times must decrease strictly (from t_max towards t_min)")
        self.alpha, self.sigma = {}, {}
        for name in diffusion.gaussian_fields:
            coefs = [diffusion.processes[name].coefficients(t) for t in self.times]  # floats, remembered per time
            self.alpha[name] = [a for a, _ in coefs] + [1.0]
            self.sigma[name] = [s for _, s in coefs] + [0.0]

    def __len__(self) -> int:
        return len(self.times)

    def lam(self, name: str, i: int) -> float:
        s = self.sigma[name][i]
        return math.inf if s == 0 else math.log(self.alpha[name][i] / s)


def _setup(denoiser, state, times):
    diffusion = denoiser.diffusion
    return diffusion, _Levels(diffusion, times), State(state)


def _noise(diffusion, state, name, generator):
    return diffusion.processes[name].noise(state[name], generator, diffusion.mask_for(state, name))


def _step_categorical(diffusion, state: State, pred: State, levels: _Levels, i: int, generator, out: State) -> None:
    s = levels.times[i + 1] if i + 1 < len(levels) else None
    for name in diffusion.categorical_fields:
        out[name] = diffusion.processes[name].step(state[name], pred[name], levels.times[i], s, generator)


def _finish(out: State, callback, i, pred):
    if callback is not None:
        callback({"i": i, "state": out, "pred": pred})
    return out


def _nfe_first_order(steps: int, **_) -> int:
    return steps


def _lin(*terms):
    """``sum_i c_i v_i`` for float coefficients ``c_i`` and tensors ``v_i``, one pass per term into one new
    tensor: every deterministic update below is such a combination of ``x_t`` and denoiser outputs."""
    (c, v), *rest = terms
    out = v * c
    for c, v in rest:
        out.add_(v, alpha=c)
    return out


# ---------------------------------------------------------------------------------------------
def ancestral(denoiser, state, times, *, generator=None, callback: Callable | None = None):
    """The reverse-diffusion kernel (Sohl-Dickstein et al. 2015; Ho et al. 2020):
    ``x_s ~ q(x_s | x_t, x0 = x0_hat)``, mean ``a_{t|s} s_s^2/s_t^2 x_t + a_s s_{t|s}^2/s_t^2 x0_hat``,
    variance ``s_{t|s}^2 s_s^2 / s_t^2``."""
    diffusion, lv, x = _setup(denoiser, state, times)
    for i, t in enumerate(lv.times):
        pred = denoiser(x, t)
        out = State(x)
        for name in diffusion.gaussian_fields:
            a_t, s_t, a_s, s_s = lv.alpha[name][i], lv.sigma[name][i], lv.alpha[name][i + 1], lv.sigma[name][i + 1]
            if s_s == 0:
                out[name] = pred[name]
                continue
            mean, var = gaussian_posterior(x[name], pred[name], a_t, s_t, a_s, s_s)
            out[name] = mean + math.sqrt(var) * _noise(diffusion, x, name, generator)
        _step_categorical(diffusion, x, pred, lv, i, generator, out)
        x = _finish(out, callback, i, pred)
    return x


def ddim(denoiser, state, times, *, eta: float = 0.0, generator=None, callback: Callable | None = None):
    """DDIM (Song, Meng & Ermon 2021): ``x_s = a_s x0_hat + sqrt(s_s^2 - c^2) eps_hat + c z`` with
    ``eps_hat = (x_t - a_t x0_hat)/s_t`` and ``c = eta sqrt(s_{t|s}^2 s_s^2 / s_t^2)``; ``eta = 0`` is
    deterministic, ``eta = 1`` the ancestral kernel."""
    diffusion, lv, x = _setup(denoiser, state, times)
    for i, t in enumerate(lv.times):
        pred = denoiser(x, t)
        out = State(x)
        for name in diffusion.gaussian_fields:
            a_t, s_t, a_s, s_s = lv.alpha[name][i], lv.sigma[name][i], lv.alpha[name][i + 1], lv.sigma[name][i + 1]
            if s_s == 0:
                out[name] = pred[name]
                continue
            c = eta * math.sqrt(max(s_t**2 - (a_t / a_s) ** 2 * s_s**2, 0.0) * s_s**2 / s_t**2)
            k = math.sqrt(max(s_s**2 - c * c, 0.0)) / s_t  # the eps_hat term, written in x_t and x0_hat
            out[name] = _lin((k, x[name]), (a_s - k * a_t, pred[name]))
            if c > 0:
                out[name] = out[name] + c * _noise(diffusion, x, name, generator)
        _step_categorical(diffusion, x, pred, lv, i, generator, out)
        x = _finish(out, callback, i, pred)
    return x


def euler(denoiser, state, times, *, generator=None, callback: Callable | None = None):
    """Euler on the probability-flow ODE in variance-exploding coordinates ``y = x/alpha``,
    ``s = sigma/alpha`` (Karras et al. 2022): ``dy/ds = (y - x0_hat)/s``, so
    ``x_s = alpha_s (y_t + (s_s - s_t) (y_t - x0_hat)/s_t)``."""
    diffusion, lv, x = _setup(denoiser, state, times)
    for i, t in enumerate(lv.times):
        pred = denoiser(x, t)
        out = State(x)
        for name in diffusion.gaussian_fields:
            a_t, s_t, a_s, s_s = lv.alpha[name][i], lv.sigma[name][i], lv.alpha[name][i + 1], lv.sigma[name][i + 1]
            r = (s_s / a_s) / (s_t / a_t)  # s_s / s_t in VE units
            out[name] = _lin((a_s * r / a_t, x[name]), (a_s * (1.0 - r), pred[name]))
        _step_categorical(diffusion, x, pred, lv, i, generator, out)
        x = _finish(out, callback, i, pred)
    return x


def heun(denoiser, state, times, *, generator=None, callback: Callable | None = None):
    """Heun's second-order method on the probability-flow ODE (EDM, Karras et al. 2022, Algorithm 1) in
    ``y = x/alpha``, ``s = sigma/alpha``: the Euler step ``y' = y_t + (s_s - s_t) d_t`` with ``d = (y - x0_hat)/s``,
    then ``y_s = y_t + (s_s - s_t) (d_t + d'_s)/2``; the last step to ``s = 0`` stays Euler."""
    diffusion, lv, x = _setup(denoiser, state, times)
    for i, t in enumerate(lv.times):
        pred = denoiser(x, t)
        out = State(x)
        for name in diffusion.gaussian_fields:
            a_t, s_t, a_s, s_s = lv.alpha[name][i], lv.sigma[name][i], lv.alpha[name][i + 1], lv.sigma[name][i + 1]
            r = (s_s / a_s) / (s_t / a_t)
            out[name] = _lin((a_s * r / a_t, x[name]), (a_s * (1.0 - r), pred[name]))
        _step_categorical(diffusion, x, pred, lv, i, generator, out)
        if i + 1 < len(lv) and diffusion.gaussian_fields:
            pred2 = denoiser(out, lv.times[i + 1])
            for name in diffusion.gaussian_fields:
                a_t, s_t, a_s, s_s = lv.alpha[name][i], lv.sigma[name][i], lv.alpha[name][i + 1], lv.sigma[name][i + 1]
                ve_t, ve_s = s_t / a_t, s_s / a_s
                h = 0.5 * (ve_s - ve_t)  # y_s = y_t + h (y_t - x0_hat)/ve_t + h (y' - x0_hat')/ve_s, times alpha_s
                out[name] = _lin((a_s / a_t * (1.0 + h / ve_t), x[name]), (-a_s * h / ve_t, pred[name]),
                                 (h / ve_s, out[name]), (-a_s * h / ve_s, pred2[name]))
        x = _finish(out, callback, i, pred)
    return x


def _dpmpp(order: int):
    def sampler(denoiser, state, times, *, lower_order_final: bool = order == 2, generator=None, callback: Callable | None = None):
        diffusion, lv, x = _setup(denoiser, state, times)
        history = {name: [] for name in diffusion.gaussian_fields}  # (lambda_i, x0_hat_i), newest last
        for i, t in enumerate(lv.times):
            pred = denoiser(x, t)
            out = State(x)
            for name in diffusion.gaussian_fields:
                a_s, s_t, s_s = lv.alpha[name][i + 1], lv.sigma[name][i], lv.sigma[name][i + 1]
                lam_t = lv.lam(name, i)
                hist = history[name]
                hist.append((lam_t, pred[name]))
                del hist[:-3]
                if s_s == 0:  # the last step lands on x0_hat (the first-order limit)
                    out[name] = pred[name]
                    continue
                h = lv.lam(name, i + 1) - lam_t
                phi1 = math.expm1(-h)  # e^{-h} - 1
                k = 1 if lower_order_final and i == len(lv) - 2 else min(order, len(hist))
                # D as weights on (x0_hat_i, x0_hat_{i-1}, x0_hat_{i-2}); the update is x_s = (s_s/s_t) x_t - a_s phi1 D + ...
                if k == 1:
                    w = (-a_s * phi1,)
                elif k == 2:
                    r0 = (lam_t - hist[-2][0]) / h
                    w = (-a_s * phi1 * (1.0 + 0.5 / r0), a_s * phi1 * 0.5 / r0)  # D = d0 + (d0 - d_prev)/(2 r0)
                else:
                    r0 = (lam_t - hist[-2][0]) / h
                    r1 = (hist[-2][0] - hist[-3][0]) / h
                    d1_0 = (1.0 / r0, -1.0 / r0, 0.0)  # (d0 - d_{-1}) / r0
                    d1_1 = (0.0, 1.0 / r1, -1.0 / r1)  # (d_{-1} - d_{-2}) / r1
                    q = r0 / (r0 + r1)
                    d1 = [a + q * (a - b) for a, b in zip(d1_0, d1_1)]
                    d2 = [(a - b) / (r0 + r1) for a, b in zip(d1_0, d1_1)]
                    phi2 = phi1 / h + 1.0
                    phi3 = phi2 / h - 0.5
                    w = [-a_s * phi1 * (j == 0) + a_s * phi2 * d1[j] - a_s * phi3 * d2[j] for j in range(3)]
                out[name] = _lin((s_s / s_t, x[name]), *((wj, hist[-1 - j][1]) for j, wj in enumerate(w)))
            _step_categorical(diffusion, x, pred, lv, i, generator, out)
            x = _finish(out, callback, i, pred)
        return x

    sampler.__name__ = f"dpmpp_{order}m"
    sampler.__doc__ = f"""DPM-Solver++({order}M) (Lu et al. 2022), multistep in ``lambda = log(alpha/sigma)`` with the
    data prediction: ``x_s = (s_s/s_t) x_t - a_s (e^(-h) - 1) D``, ``h = lambda_s - lambda_t``, where ``D``
    extrapolates the last {order} values of ``x0_hat`` (lower order while history is short); the
    last step lands on ``x0_hat``. ``lower_order_final`` (default {order == 2}) takes the step into the last
    level with ``D = x0_hat`` (Lu et al.'s "lower order final"; one first-order step keeps the global
    order): on the exact-score oracle it helps 2M at 10-20 evaluations and hurts 3M (benchmarks/peers.py)."""
    return sampler


dpmpp_2m = _dpmpp(2)
dpmpp_3m = _dpmpp(3)


def _poly_mul_linear(p: list[float], root: float, scale: float) -> list[float]:
    """Coefficients (lowest power first) of ``p(u) (u - root) / scale``."""
    out = [0.0] * (len(p) + 1)
    for n, c in enumerate(p):
        out[n + 1] += c / scale
        out[n] -= c * root / scale
    return out


def _int_poly_in_log(p: list[float], rho_ref: float, rho_a: float, rho_b: float) -> float:
    """``int_{rho_a}^{rho_b} p(u) d rho`` with ``u = log(rho / rho_ref)``: since ``d rho = rho du``,
    ``int u^n d rho = rho sum_m (-1)^m n!/(n-m)! u^(n-m)``, which vanishes at ``rho = 0``."""
    def antiderivative(rho):
        if rho == 0.0:
            return 0.0
        u = math.log(rho / rho_ref)
        total = 0.0
        for n, c in enumerate(p):
            term, falling = 0.0, 1.0
            for m in range(n + 1):
                term += (-1) ** m * falling * u ** (n - m)
                falling *= n - m
            total += c * term
        return rho * total

    return antiderivative(rho_b) - antiderivative(rho_a)


def deis(denoiser, state, times, *, order: int = 3, lower_order_final: bool = True, generator=None, callback: Callable | None = None):
    """DEIS, the time-quadratic Adams-Bashforth variant (Zhang & Chen 2023), on the probability-flow ODE
    written in ``y = x/alpha`` and ``rho = sigma/alpha``: ``dy/drho = eps_hat``. Over a step,
    ``eps_hat`` is the Lagrange polynomial in ``log rho`` through the last ``order`` values and is integrated
    exactly in ``rho``: ``y_s = y_t + sum_j eps_j int_{rho_t}^{rho_s} L_j(log rho) d rho``. With one value this is
    DDIM. ``lower_order_final`` takes the step to the clean level (``rho = 0``) first order (``x = x0_hat``)."""
    diffusion, lv, x = _setup(denoiser, state, times)
    order = int(order)
    if order not in (1, 2, 3):
        raise ValueError(f"DEIS order must be 1, 2 or 3, got {order}")
    history = {name: [] for name in diffusion.gaussian_fields}  # (rho_i, eps_hat_i), newest last
    for i, t in enumerate(lv.times):
        pred = denoiser(x, t)
        out = State(x)
        for name in diffusion.gaussian_fields:
            a_t, s_t, a_s, s_s = lv.alpha[name][i], lv.sigma[name][i], lv.alpha[name][i + 1], lv.sigma[name][i + 1]
            rho_t, rho_s = s_t / a_t, s_s / a_s
            hist = history[name]
            hist.append((rho_t, _lin((1.0 / s_t, x[name]), (-a_t / s_t, pred[name]))))
            del hist[:-order]
            k = 1 if lower_order_final and s_s == 0 else min(order, len(hist))
            nodes = [math.log(r / rho_t) for r, _ in hist[-k:]][::-1]  # newest first, centred on log rho_t
            coefs = []
            for j in range(k):
                basis = [1.0]
                for m in range(k):
                    if m != j:
                        basis = _poly_mul_linear(basis, nodes[m], nodes[j] - nodes[m])
                coefs.append(_int_poly_in_log(basis, rho_t, rho_t, rho_s))
            # x_s = alpha_s y_s = (a_s/a_t) x_t + a_s sum_j c_j eps_j
            out[name] = _lin((a_s / a_t, x[name]), *((a_s * c, hist[-1 - j][1]) for j, c in enumerate(coefs)))
        _step_categorical(diffusion, x, pred, lv, i, generator, out)
        x = _finish(out, callback, i, pred)
    return x


def _solve(matrix: list[list[float]], rhs: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting for the small (<= 3x3) systems of UniPC."""
    n = len(rhs)
    a = [list(row) + [b] for row, b in zip(matrix, rhs)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(a[r][c]))
        a[c], a[p] = a[p], a[c]
        for r in range(c + 1, n):
            f = a[r][c] / a[c][c]
            for cc in range(c, n + 1):
                a[r][cc] -= f * a[c][cc]
    out = [0.0] * n
    for r in range(n - 1, -1, -1):
        out[r] = (a[r][n] - sum(a[r][cc] * out[cc] for cc in range(r + 1, n))) / a[r][r]
    return out


def _unipc_weights(h: float, ratios: list[float]) -> list[float]:
    """Weights ``a_m`` on the divided differences ``D_m = (x0_hat(r_m) - x0_hat_t)/r_m`` that make
    ``-B(h) sum_m a_m D_m`` match the Taylor terms ``h^(k+1) phi_(k+1)(-h) x0_hat^(k)`` for ``k = 1..len(ratios)``:
    ``sum_m a_m r_m^(k-1) = k! g_(k+1) / B(h)`` with ``g_1 = e^(-h) - 1``, ``g_(k+1) = g_k/(-h) - 1/k!``
    and ``B(h) = e^(-h) - 1`` (UniPC's B2)."""
    hh = -h
    g = math.expm1(hh)
    b_h = g
    rhs, fact = [], 1.0
    for k in range(1, len(ratios) + 1):
        g = g / hh - 1.0 / fact  # g_(k+1)
        rhs.append(fact * g / b_h)
        fact *= k + 1
    return _solve([[r ** (k - 1) for r in ratios] for k in range(1, len(ratios) + 1)], rhs)


def _unipc_differences(a_s: float, h: float, ratios: list[float], values: list, x0_t) -> list:
    """The terms ``-a_s B(h) sum_m a_m (x0_hat_m - x0_hat_t)/r_m`` as ``(coefficient, tensor)`` pairs for :func:`_lin`."""
    b_h = math.expm1(-h)
    terms = []
    for w, r, d in zip(_unipc_weights(h, ratios), ratios, values):
        c = -a_s * b_h * w / r
        terms += [(c, d), (-c, x0_t)]
    return terms


def unipc(denoiser, state, times, *, order: int = 2, corrector: bool = True, lower_order_final: bool = True, generator=None, callback: Callable | None = None):
    """UniPC (Zhao et al. 2023) with the data prediction and ``B(h) = e^(-h) - 1``. Predictor (UniP):
    ``x_s = (s_s/s_t) x_t - a_s (e^(-h) - 1) x0_hat_t - a_s B(h) sum_m a_m D_m``, ``h = lambda_s - lambda_t``,
    ``D_m = (x0_hat_m - x0_hat_t)/r_m`` over the last ``order - 1`` levels at ``r_m = (lambda_m - lambda_t)/h``.
    Corrector (UniC): the evaluation at the new level, which the next step needs anyway, joins the
    differences (``r = 1``) and the step is redone one order higher, at no extra network evaluation.
    The step to the clean level lands on ``x0_hat``; with ``lower_order_final`` the order also drops
    near the end: step ``i`` of ``K`` uses at most ``K - 1 - i`` levels, so the step into the last noise
    level is first order (as our DPM-Solver++(2M) does), which keeps a long last step in ``lambda`` from
    extrapolating far on uniform-in-``t`` grids."""
    diffusion, lv, x = _setup(denoiser, state, times)
    order = int(order)
    if order not in (1, 2, 3):
        raise ValueError(f"UniPC order must be 1, 2 or 3, got {order}")
    K = len(lv)
    history = {name: [] for name in diffusion.gaussian_fields}  # (lambda_i, x0_hat_i), newest last
    last = {}  # name -> (order used, x_s without differences) of the previous step
    for i, t in enumerate(lv.times):
        pred = denoiser(x, t)
        out = State(x)
        for name in diffusion.gaussian_fields:
            hist = history[name]
            final = lv.sigma[name][i + 1] == 0  # this step lands on x0_hat, so a corrected x_t would go unused
            if corrector and name in last and not final:  # UniC: redo the previous step with this evaluation added
                k_prev, base = last[name]
                a_now, lam_prev = lv.alpha[name][i], lv.lam(name, i - 1)
                h = lv.lam(name, i) - lam_prev
                prev = hist[-k_prev:-1][::-1]
                ratios = [(lam_m - lam_prev) / h for lam_m, _ in prev] + [1.0]
                values = [d for _, d in prev] + [pred[name]]
                x = State(x)
                x[name] = _lin((1.0, base), *_unipc_differences(a_now, h, ratios, values, hist[-1][1]))
                out[name] = x[name]
            lam_t = lv.lam(name, i)
            hist.append((lam_t, pred[name]))
            del hist[:-order]
            a_s, s_t, s_s = lv.alpha[name][i + 1], lv.sigma[name][i], lv.sigma[name][i + 1]
            if final:
                out[name] = pred[name]
                continue
            k = min(order, len(hist), K - 1 - i) if lower_order_final else min(order, len(hist))
            h = lv.lam(name, i + 1) - lam_t
            base = _lin((s_s / s_t, x[name]), (-a_s * math.expm1(-h), pred[name]))
            if k > 1:
                prev = hist[-k:-1][::-1]
                ratios = [(lam_m - lam_t) / h for lam_m, _ in prev]
                out[name] = _lin((1.0, base), *_unipc_differences(a_s, h, ratios, [d for _, d in prev], pred[name]))
            else:
                out[name] = base
            last[name] = (k, base)
        _step_categorical(diffusion, x, pred, lv, i, generator, out)
        x = _finish(out, callback, i, pred)
    return x


def langevin(denoiser, state, times, *, n_steps: int = 5, step_size: float = 2e-5, denoise: bool = True, generator=None, callback: Callable | None = None):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) on the denoising-score-matching
    model: at each level ``i`` run ``n_steps`` of ``x <- x + a_i/2 * score + sqrt(a_i) z`` with
    ``a_i = step_size * sigma_i^2 / sigma_L^2`` and ``score = -(x - alpha_i x0_hat)/sigma_i^2``;
    ``denoise`` ends with one more evaluation and ``x = x0_hat`` (Tweedie; Jolicoeur-Martineau et al. 2021)."""
    diffusion, lv, x = _setup(denoiser, state, times)
    K = len(lv)
    pred = None
    for i, t in enumerate(lv.times):
        for _ in range(int(n_steps)):
            pred = denoiser(x, t)
            out = State(x)
            for name in diffusion.gaussian_fields:
                a_t, s_t, s_last = lv.alpha[name][i], lv.sigma[name][i], lv.sigma[name][K - 1]
                step = step_size * (s_t / s_last) ** 2
                score = -(x[name] - a_t * pred[name]) / s_t**2
                out[name] = x[name] + 0.5 * step * score + math.sqrt(step) * _noise(diffusion, x, name, generator)
            x = out
        if i + 1 < K or not denoise:
            out = State(x)
            if i + 1 < K:
                _step_categorical(diffusion, x, pred, lv, i, generator, out)
            x = _finish(out, callback, i, pred)
    if denoise:
        pred = denoiser(x, lv.times[-1])
        out = State(x)
        for name in diffusion.gaussian_fields:
            out[name] = pred[name]
        _step_categorical(diffusion, x, pred, lv, K - 1, generator, out)
        x = _finish(out, callback, K - 1, pred)
    return x


def predictor_corrector(denoiser, state, times, *, predictor: str = "ancestral", n_corrector: int = 1, snr: float = 0.16, generator=None, callback: Callable | None = None):
    """Predictor-corrector sampling (Song et al. 2021). At each level: ``n_corrector`` Langevin
    corrector steps ``x <- x + e score + sqrt(2 e) z`` with the signal-to-noise rule
    ``e = 2 (snr ||z|| / ||score||)^2`` (norms per example, averaged over the batch), then a predictor step: ``ancestral`` (the reverse-diffusion
    kernel) or ``euler-maruyama`` on the reverse SDE ``dx = [f x - g^2 score] dt + g dw``."""
    if predictor not in ("ancestral", "euler-maruyama"):
        raise ValueError(f"unknown predictor {predictor!r}; use 'ancestral' or 'euler-maruyama'")
    diffusion, lv, x = _setup(denoiser, state, times)
    coeffs = {name: diffusion.processes[name].sde_coefficients(torch.tensor(lv.times, dtype=torch.float64)) for name in diffusion.gaussian_fields}
    for i, t in enumerate(lv.times):
        for _ in range(int(n_corrector)):
            pred = denoiser(x, t)
            out = State(x)
            for name in diffusion.gaussian_fields:
                a_t, s_t = lv.alpha[name][i], lv.sigma[name][i]
                score = -(x[name] - a_t * pred[name]) / s_t**2
                z = _noise(diffusion, x, name, generator)
                z_norm = z.reshape(z.shape[0], -1).norm(dim=1).mean()
                score_norm = score.reshape(score.shape[0], -1).norm(dim=1).mean().clamp_min(1e-12)
                e = 2.0 * float(snr * z_norm / score_norm) ** 2
                out[name] = x[name] + e * score + math.sqrt(2.0 * e) * z
            x = out
        pred = denoiser(x, t)
        out = State(x)
        for name in diffusion.gaussian_fields:
            a_t, s_t, a_s, s_s = lv.alpha[name][i], lv.sigma[name][i], lv.alpha[name][i + 1], lv.sigma[name][i + 1]
            if s_s == 0:
                out[name] = pred[name]
            elif predictor == "ancestral":
                mean, var = gaussian_posterior(x[name], pred[name], a_t, s_t, a_s, s_s)
                out[name] = mean + math.sqrt(var) * _noise(diffusion, x, name, generator)
            else:
                f, g2 = float(coeffs[name][0][i]), float(coeffs[name][1][i])
                dt = lv.times[i] - lv.times[i + 1]
                score = -(x[name] - a_t * pred[name]) / s_t**2
                out[name] = x[name] - (f * x[name] - g2 * score) * dt + math.sqrt(g2 * dt) * _noise(diffusion, x, name, generator)
        _step_categorical(diffusion, x, pred, lv, i, generator, out)
        x = _finish(out, callback, i, pred)
    return x


# --- network evaluations per call, so benchmarks compare samplers at equal cost --------------------
ancestral.nfe = _nfe_first_order
ddim.nfe = _nfe_first_order
euler.nfe = _nfe_first_order
dpmpp_2m.nfe = _nfe_first_order
dpmpp_3m.nfe = _nfe_first_order
deis.nfe = _nfe_first_order
unipc.nfe = _nfe_first_order
heun.nfe = lambda steps, **_: 2 * steps - 1
langevin.nfe = lambda steps, n_steps=5, denoise=True, **_: steps * n_steps + int(denoise)
predictor_corrector.nfe = lambda steps, n_corrector=1, **_: steps * (1 + n_corrector)


def steps_for_nfe(sampler, nfe: int, **options) -> int:
    """The largest number of levels whose cost does not exceed ``nfe`` evaluations (at least 1)."""
    steps = 1
    while sampler.nfe(steps + 1, **options) <= nfe:
        steps += 1
    return steps
