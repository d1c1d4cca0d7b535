"""Reverse-process samplers, each a short function ``sampler(denoiser, state, times, ...)`` declared once
with :func:`diffkit.samplers.declaration.sampler` and run by :func:`diffkit.samplers.driver.drive`.

``denoiser(state, t)`` returns, for every diffused field, ``x0_hat`` (Gaussian fields) or
``p(x_0 | x_t)`` (categorical fields); ``denoiser.diffusion`` names the field processes. ``state`` is
a draw from the prior at ``times[0]``; ``times`` decreases to ``t_min`` and every sampler ends with a
step to the clean level (``alpha = 1, sigma = 0``), where ``x = x0_hat``.

Each sampler here keeps only its update of a Gaussian field at one level; the driver steps every other
field with its own family's reverse step (categorical fields: ``x_s ~ p(x_s | x_t)``, Campbell et al. 2022;
DiGress) once per level beside any of them.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from diffkit.processes.gaussian import gaussian_posterior, reverse_sde_drift, score_from_x0
from diffkit.samplers.declaration import sampler
from diffkit.samplers.driver import Level, drive, lin
from diffkit.state import State


# ---------------------------------------------------------------------------------------------
def _ancestral_update(lv: Level, name: str) -> torch.Tensor:
    """``x_s ~ q(x_s | x_t, x0 = x0_hat)``; the step to the clean level lands on ``x0_hat``."""
    a_t, s_t, a_s, s_s = lv.coefficients(name)
    if s_s == 0:
        return lv.pred[name]
    mean, var = gaussian_posterior(lv.x[name], lv.pred[name], a_t, s_t, a_s, s_s)
    return mean + math.sqrt(var) * lv.noise(name)


@sampler("ancestral")
def ancestral(denoiser, state, times, *, generator=None, callback: Callable | None = None, constraint: Callable | None = None):
    """The reverse-diffusion kernel (Sohl-Dickstein et al. 2015; Ho et al. 2020):
    ``x_s ~ q(x_s | x_t, x0 = x0_hat)``, mean ``a_{t|s} s_s^2/s_t^2 x_t + a_s s_{t|s}^2/s_t^2 x0_hat``,
    variance ``s_{t|s}^2 s_s^2 / s_t^2``."""
    return drive(ancestral.spec, denoiser, state, times, _ancestral_update, generator=generator, callback=callback, constraint=constraint)


@sampler("ddim", schedule="logsnr-trailing")
def ddim(denoiser, state, times, *, eta: float = 0.0, generator=None, callback: Callable | None = None, constraint: Callable | None = None):
    """DDIM (Song, Meng & Ermon 2021): ``x_s = a_s x0_hat + sqrt(s_s^2 - c^2) eps_hat + c z`` with
    ``eps_hat = (x_t - a_t x0_hat)/s_t`` and ``c = eta sqrt(s_{t|s}^2 s_s^2 / s_t^2)``; ``eta = 0`` is
    deterministic, ``eta = 1`` the ancestral kernel."""

    def update(lv: Level, name: str) -> torch.Tensor:
        a_t, s_t, a_s, s_s = lv.coefficients(name)
        if s_s == 0:
            return lv.pred[name]
        c = eta * math.sqrt(max(s_t**2 - (a_t / a_s) ** 2 * s_s**2, 0.0) * s_s**2 / s_t**2)
        k = math.sqrt(max(s_s**2 - c * c, 0.0)) / s_t  # the eps_hat term, written in x_t and x0_hat
        out = lin((k, lv.x[name]), (a_s - k * a_t, lv.pred[name]))
        return out + c * lv.noise(name) if c > 0 else out

    return drive(ddim.spec, denoiser, state, times, update, generator=generator, callback=callback, constraint=constraint)


def _euler_update(lv: Level, name: str) -> torch.Tensor:
    """``x_s = alpha_s (y_t + (s_s - s_t) (y_t - x0_hat)/s_t)`` in ``y = x/alpha``, ``s = sigma/alpha``."""
    a_t, s_t, a_s, s_s = lv.coefficients(name)
    r = (s_s / a_s) / (s_t / a_t)  # s_s / s_t in VE units
    return lin((a_s * r / a_t, lv.x[name]), (a_s * (1.0 - r), lv.pred[name]))


@sampler("euler", schedule="logsnr-trailing")
def euler(denoiser, state, times, *, generator=None, callback: Callable | None = None, constraint: Callable | None = None):
    """Euler on the probability-flow ODE in variance-exploding coordinates ``y = x/alpha``,
    ``s = sigma/alpha`` (Karras et al. 2022): ``dy/ds = (y - x0_hat)/s``, so
    ``x_s = alpha_s (y_t + (s_s - s_t) (y_t - x0_hat)/s_t)``."""
    return drive(euler.spec, denoiser, state, times, _euler_update, generator=generator, callback=callback, constraint=constraint)


def _heun_correction(lv: Level, out: State) -> State:
    """Heun's trapezoidal correction of the Euler step, with one more evaluation at the new level
    (none for the step to the clean level)."""
    if lv.last or not lv.fields:
        return out
    pred2 = lv.denoiser(out, lv.s)
    for name in lv.fields:
        a_t, s_t, a_s, s_s = lv.coefficients(name)
        ve_t, ve_s = s_t / a_t, s_s / a_s
        h = 0.5 * (ve_s - ve_t)  # y_s = y_t + h (y_t - x0_hat)/ve_t + h (y' - x0_hat')/ve_s, times alpha_s
        out[name] = lin((a_s / a_t * (1.0 + h / ve_t), lv.x[name]), (-a_s * h / ve_t, lv.pred[name]),
                        (h / ve_s, out[name]), (-a_s * h / ve_s, pred2[name]))
    return out


@sampler("heun", schedule="uniform-trailing", nfe=lambda steps, **_: 2 * steps - 1)
def heun(denoiser, state, times, *, generator=None, callback: Callable | None = None, constraint: Callable | None = None):
    """Heun's second-order method on the probability-flow ODE (EDM, Karras et al. 2022, Algorithm 1) in
    ``y = x/alpha``, ``s = sigma/alpha``: the Euler step ``y' = y_t + (s_s - s_t) d_t`` with ``d = (y - x0_hat)/s``,
    then ``y_s = y_t + (s_s - s_t) (d_t + d'_s)/2``; the last step to ``s = 0`` stays Euler."""
    return drive(heun.spec, denoiser, state, times, _euler_update, generator=generator, callback=callback, after=_heun_correction, constraint=constraint)


def _dpmpp(order: int):
    def dpmpp(denoiser, state, times, *, lower_order_final: bool = order == 3, generator=None, callback: Callable | None = None, constraint: Callable | None = None):
        history = {}  # field -> [(lambda_i, x0_hat_i)], newest last

        def update(lv: Level, name: str) -> torch.Tensor:
            levels, i = lv.levels, lv.i
            a_s, s_t, s_s = levels.alpha[name][i + 1], levels.sigma[name][i], levels.sigma[name][i + 1]
            lam_t = levels.lam(name, i)
            hist = history.setdefault(name, [])
            hist.append((lam_t, lv.pred[name]))
            del hist[:-3]
            if s_s == 0:  # the last step lands on x0_hat (the first-order limit)
                return lv.pred[name]
            h = levels.lam(name, i + 1) - lam_t
            phi1 = math.expm1(-h)  # e^{-h} - 1
            k = 1 if lower_order_final and i == len(levels) - 2 else min(order, len(hist))
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
            return lin((s_s / s_t, lv.x[name]), *((wj, hist[-1 - j][1]) for j, wj in enumerate(w)))

        return drive(dpmpp.spec, denoiser, state, times, update, generator=generator, callback=callback, constraint=constraint)

    dpmpp.__name__ = f"dpmpp_{order}m"
    dpmpp.__qualname__ = dpmpp.__name__
    dpmpp.__doc__ = f"""DPM-Solver++({order}M) (Lu et al. 2022), multistep in ``lambda = log(alpha/sigma)`` with the
    data prediction: ``x_s = (s_s/s_t) x_t - a_s (e^(-h) - 1) D``, ``h = lambda_s - lambda_t``, where ``D``
    extrapolates the last {order} values of ``x0_hat`` (lower order while history is short); the
    last step lands on ``x0_hat``. ``lower_order_final`` (default {order == 3}) takes the step into the last
    level with ``D = x0_hat`` (Lu et al.'s "lower order final"; one first-order step keeps the global
    order). Defaults chosen on the exact-score oracle (benchmarks/samplers.py, five mixtures, NFE 5-20): the
    ``logsnr-trailing`` grid for both, ``lower_order_final`` off for 2M and on for 3M, whose three-point
    extrapolation into the last level is otherwise unstable at 5 evaluations."""
    return sampler(f"dpmpp-{order}m", schedule="logsnr-trailing")(dpmpp)


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


@sampler("deis", schedule="logsnr-trailing")
def deis(denoiser, state, times, *, order: int = 3, lower_order_final: bool = True, generator=None, callback: Callable | None = None, constraint: Callable | None = None):
    """DEIS, the time-quadratic Adams-Bashforth variant (Zhang & Chen 2023), on the probability-flow ODE
    written in ``y = x/alpha`` and ``rho = sigma/alpha``: ``dy/drho = eps_hat``. Over a step,
    ``eps_hat`` is the Lagrange polynomial in ``log rho`` through the last ``order`` values and is integrated
    exactly in ``rho``: ``y_s = y_t + sum_j eps_j int_{rho_t}^{rho_s} L_j(log rho) d rho``. With one value this is
    DDIM. ``lower_order_final`` takes the step to the clean level (``rho = 0``) first order (``x = x0_hat``)."""
    order = int(order)
    if order not in (1, 2, 3):
        raise ValueError(f"DEIS order must be 1, 2 or 3, got {order}")
    history = {}  # field -> [(rho_i, eps_hat_i)], newest last

    def update(lv: Level, name: str) -> torch.Tensor:
        a_t, s_t, a_s, s_s = lv.coefficients(name)
        x = lv.x[name]
        rho_t, rho_s = s_t / a_t, s_s / a_s
        hist = history.setdefault(name, [])
        hist.append((rho_t, lin((1.0 / s_t, x), (-a_t / s_t, lv.pred[name]))))
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
        return lin((a_s / a_t, x), *((a_s * c, hist[-1 - j][1]) for j, c in enumerate(coefs)))

    return drive(deis.spec, denoiser, state, times, update, generator=generator, callback=callback, constraint=constraint)


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
    """The terms ``-a_s B(h) sum_m a_m (x0_hat_m - x0_hat_t)/r_m`` as ``(coefficient, tensor)`` pairs for :func:`lin`."""
    b_h = math.expm1(-h)
    terms = []
    for w, r, d in zip(_unipc_weights(h, ratios), ratios, values):
        c = -a_s * b_h * w / r
        terms += [(c, d), (-c, x0_t)]
    return terms


@sampler("unipc", schedule="logsnr-trailing")
def unipc(denoiser, state, times, *, order: int = 2, corrector: bool = True, lower_order_final: bool = True, generator=None, callback: Callable | None = None, constraint: Callable | None = None):
    """UniPC (Zhao et al. 2023) with the data prediction and ``B(h) = e^(-h) - 1``. Predictor (UniP):
    ``x_s = (s_s/s_t) x_t - a_s (e^(-h) - 1) x0_hat_t - a_s B(h) sum_m a_m D_m``, ``h = lambda_s - lambda_t``,
    ``D_m = (x0_hat_m - x0_hat_t)/r_m`` over the last ``order - 1`` levels at ``r_m = (lambda_m - lambda_t)/h``.
    Corrector (UniC): the evaluation at the new level, which the next step needs anyway, joins the
    differences (``r = 1``) and the step is redone one order higher, at no extra network evaluation.
    The step to the clean level lands on ``x0_hat``; with ``lower_order_final`` the order also drops
    near the end: step ``i`` of ``K`` uses at most ``K - 1 - i`` levels, so the step into the last noise
    level is first order (as DPM-Solver++'s ``lower_order_final`` does), which keeps a long last step in ``lambda`` from
    extrapolating far on uniform-in-``t`` grids."""
    order = int(order)
    if order not in (1, 2, 3):
        raise ValueError(f"UniPC order must be 1, 2 or 3, got {order}")
    history = {}  # field -> [(lambda_i, x0_hat_i)], newest last
    last = {}  # field -> (order used, x_s without differences) of the previous step

    def update(lv: Level, name: str) -> torch.Tensor:
        levels, i, pred = lv.levels, lv.i, lv.pred[name]
        K = len(levels)
        hist = history.setdefault(name, [])
        x = lv.x[name]
        final = levels.sigma[name][i + 1] == 0  # this step lands on x0_hat, so a corrected x_t would go unused
        if corrector and name in last and not final:  # UniC: redo the previous step with this evaluation added
            k_prev, base = last[name]
            a_now, lam_prev = levels.alpha[name][i], levels.lam(name, i - 1)
            h = levels.lam(name, i) - lam_prev
            prev = hist[-k_prev:-1][::-1]
            ratios = [(lam_m - lam_prev) / h for lam_m, _ in prev] + [1.0]
            values = [d for _, d in prev] + [pred]
            x = lin((1.0, base), *_unipc_differences(a_now, h, ratios, values, hist[-1][1]))
        lam_t = levels.lam(name, i)
        hist.append((lam_t, pred))
        del hist[:-order]
        a_s, s_t, s_s = levels.alpha[name][i + 1], levels.sigma[name][i], levels.sigma[name][i + 1]
        if final:
            return pred
        k = min(order, len(hist), K - 1 - i) if lower_order_final else min(order, len(hist))
        h = levels.lam(name, i + 1) - lam_t
        base = lin((s_s / s_t, x), (-a_s * math.expm1(-h), pred))
        if k > 1:
            prev = hist[-k:-1][::-1]
            ratios = [(lam_m - lam_t) / h for lam_m, _ in prev]
            out = lin((1.0, base), *_unipc_differences(a_s, h, ratios, [d for _, d in prev], pred))
        else:
            out = base
        last[name] = (k, base)
        return out

    return drive(unipc.spec, denoiser, state, times, update, generator=generator, callback=callback, constraint=constraint)


@sampler("langevin", nfe=lambda steps, n_steps=5, denoise=True, **_: steps * n_steps + int(denoise))
def langevin(denoiser, state, times, *, n_steps: int = 5, step_size: float = 2e-5, denoise: bool = True, generator=None, callback: Callable | None = None, constraint: Callable | None = None):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) on the denoising-score-matching
    model: at each level ``i`` run ``n_steps`` of ``x <- x + a_i/2 * score + sqrt(a_i) z`` with
    ``a_i = step_size * sigma_i^2 / sigma_L^2`` and ``score = -(x - alpha_i x0_hat)/sigma_i^2``;
    ``denoise`` ends with one more evaluation and ``x = x0_hat`` (Tweedie; Jolicoeur-Martineau et al. 2021).
    Fields of other families take their own step once per level, after the level's moves."""
    n_steps = int(n_steps)
    if n_steps < 1:
        raise ValueError(f"langevin needs n_steps >= 1, got {n_steps}")

    def move(lv: Level, name: str, x: State, pred: State) -> torch.Tensor:
        levels = lv.levels
        a_t, s_t, s_last = levels.alpha[name][lv.i], levels.sigma[name][lv.i], levels.sigma[name][len(levels) - 1]
        step = step_size * (s_t / s_last) ** 2
        score = score_from_x0(x[name], pred[name], a_t, s_t)
        return x[name] + 0.5 * step * score + math.sqrt(step) * lv.noise(name, x)

    def before(lv: Level) -> State:  # all moves but the one made with the level's own evaluation (all of them before the final denoising)
        x = lv.x
        for _ in range(n_steps if lv.last and denoise else n_steps - 1):
            pred = lv.denoiser(x, lv.t)
            out = State(x)
            for name in lv.fields:
                out[name] = move(lv, name, x, pred)
            x = out
        return x

    def update(lv: Level, name: str) -> torch.Tensor:
        if lv.last and denoise:
            return lv.pred[name]
        return move(lv, name, lv.x, lv.pred)

    return drive(langevin.spec, denoiser, state, times, update, generator=generator, callback=callback, before=before, constraint=constraint)


@sampler("pc", nfe=lambda steps, n_corrector=1, **_: steps * (1 + n_corrector))
def predictor_corrector(denoiser, state, times, *, predictor: str = "ancestral", n_corrector: int = 1, snr: float = 0.16, generator=None, callback: Callable | None = None, constraint: Callable | None = None):
    """Predictor-corrector sampling (Song et al. 2021). At each level: ``n_corrector`` Langevin
    corrector steps ``x <- x + e score + sqrt(2 e) z`` with the signal-to-noise rule
    ``e = 2 (snr ||z|| / ||score||)^2`` (norms per example, averaged over the batch), then a predictor step: ``ancestral`` (the reverse-diffusion
    kernel) or ``euler-maruyama`` on the reverse SDE ``dx = [f x - g^2 score] dt + g dw``."""
    if predictor not in ("ancestral", "euler-maruyama"):
        raise ValueError(f"unknown predictor {predictor!r}; use 'ancestral' or 'euler-maruyama'")
    sde = {}  # field -> (f, g^2) at every level

    def before(lv: Level) -> State:
        x, levels = lv.x, lv.levels
        for _ in range(int(n_corrector)):
            pred = lv.denoiser(x, lv.t)
            out = State(x)
            for name in lv.fields:
                a_t, s_t = levels.alpha[name][lv.i], levels.sigma[name][lv.i]
                score = score_from_x0(x[name], pred[name], a_t, s_t)
                z = lv.noise(name, x)
                z_norm = z.reshape(z.shape[0], -1).norm(dim=1).mean()
                score_norm = score.reshape(score.shape[0], -1).norm(dim=1).mean().clamp_min(1e-12)
                e = 2.0 * float(snr * z_norm / score_norm) ** 2
                out[name] = x[name] + e * score + math.sqrt(2.0 * e) * z
            x = out
        return x

    def update(lv: Level, name: str) -> torch.Tensor:
        a_t, s_t, a_s, s_s = lv.coefficients(name)
        if s_s == 0 or predictor == "ancestral":
            return _ancestral_update(lv, name)
        if name not in sde:
            sde[name] = lv.diffusion.processes[name].sde_coefficients(torch.tensor(lv.levels.times, dtype=torch.float64))
        f, g2 = float(sde[name][0][lv.i]), float(sde[name][1][lv.i])
        dt = lv.t - lv.s
        x = lv.x[name]
        score = score_from_x0(x, lv.pred[name], a_t, s_t)
        return x - reverse_sde_drift(x, score, f, g2) * dt + math.sqrt(g2 * dt) * lv.noise(name)

    return drive(predictor_corrector.spec, denoiser, state, times, update, generator=generator, callback=callback, before=before, constraint=constraint)
