"""Power-law fits ``L = c0 + c1·x^-α`` with uncertainty, vectorized over many curves.

Method (variable projection): for a fixed α the model is linear in ``(c0, c1)``, so those have a
closed form (weighted least squares, ``c0 >= 0`` enforced); α is found by a grid search over
``alpha_bounds`` followed by golden-section refinement, for every curve at once. Residuals are
relative, ``(y - ŷ) / y``, i.e. first-order log-space residuals, so every decade counts alike.
``loss="huber"`` reweights them by iteratively reweighted least squares until the weights
settle. ``offset=False`` is the paper's method: ordinary least squares on log-log points (closed
form).

A fit whose α ends on a search bound, whose ``c1 <= 0`` (not a decreasing power law) or whose
objective is not finite is reported with ``success=False`` and a message, never as a number.
Confidence intervals come from a residual bootstrap (the x design is kept; the residuals of the
fit's own objective, inflated by ``sqrt(P / (P - k))`` for the k fitted parameters, are
resampled with replacement and put back on the fitted curve so that each replicate's residuals
*are* the draws), itself fitted by the same vectorized code:

* pure power law: log residuals ``r = log y - log ŷ``, replicate ``ŷ·exp(r*)`` (always
  positive). Its fit is least squares in log space, so these are its residuals exactly;
* with the offset: relative residuals ``r = (y - ŷ)/y`` (the objective's), replicate
  ``ŷ / (1 - r*)``, the exact inverse of that definition. It is positive while ``r* < 1``; a
  replicate in which an inflated draw reaches 1 (a point ``s/(s-1)`` times above its fit or more,
  s the inflation) has no positive counterpart and is dropped (``n_bootstrap`` counts the kept).

Percentile intervals of the replicates' parameters are reported (at least 10 successful
replicates, else none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from quanta._validation import check_choice, check_int, check_real

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["PowerLawFit", "fit_power_law", "fit_power_laws"]

_OWNER = "fit_power_law"
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0
# Huber IRLS stops when no weight moves by more than _HUBER_TOL (relative to the L2 weight);
# on 2,000 noisy curves the slowest needed about 160 rounds at 1e-8.
_HUBER_TOL = 1e-8
_HUBER_ROUNDS = 1000


@dataclass(frozen=True)
class PowerLawFit:
    """Result of :func:`fit_power_law`.

    Attributes
    ----------
    alpha, c0, c1 : float
        ``L = c0 + c1·x^-alpha`` (``c0 = 0`` when ``offset=False``).
    alpha_ci, c0_ci, c1_ci : tuple of float or None
        Bootstrap confidence intervals (``None`` without bootstrap).
    residuals : numpy.ndarray
        Residuals of the fit's objective at the data points (dimensionless): relative
        ``(y - ŷ) / y`` with the offset, ``log(y / ŷ)`` without; the bootstrap resamples them.
    success : bool
    message : str
    """

    alpha: float
    c0: float
    c1: float
    offset: bool
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    residuals: np.ndarray = field(repr=False)
    success: bool = True
    message: str = "ok"
    alpha_ci: tuple[float, float] | None = None
    c0_ci: tuple[float, float] | None = None
    c1_ci: tuple[float, float] | None = None
    n_bootstrap: int = 0
    confidence: float = 0.95

    def predict(self, x: Any) -> np.ndarray:
        """``c0 + c1·x^-alpha``."""
        return self.c0 + self.c1 * np.asarray(x, dtype=np.float64) ** -self.alpha

    def plot(self, ax: Axes | None = None, *, label: str | None = None, **kwargs: Any) -> Axes:
        """Data points and the fitted curve on log-log axes; returns the axes.

        With no ``ax`` it draws on a new pyplot figure (shown inline in a notebook); the
        backend is left alone.
        """
        if ax is None:
            import matplotlib.pyplot as plt

            ax = plt.subplots(figsize=(4.5, 3.5))[1]
        points = ax.plot(self.x, self.y, "o", ms=4, label=label, **kwargs)[0]
        grid = np.geomspace(self.x.min(), self.x.max(), 200)
        text = f"α = {self.alpha:.3f}"
        if self.alpha_ci is not None:
            text += f" [{self.alpha_ci[0]:.3f}, {self.alpha_ci[1]:.3f}]"
        ax.plot(
            grid,
            self.predict(grid),
            "-",
            color=points.get_color(),
            label=text if self.success else f"fit failed: {self.message}",
        )
        ax.set(xscale="log", yscale="log")
        ax.legend(fontsize=8)
        return ax


def _check_xy(x: Any, y: Any, n_params: int) -> tuple[np.ndarray, np.ndarray]:
    x_arr = np.asarray(x, dtype=np.float64)
    y_arr = np.asarray(y, dtype=np.float64)
    if x_arr.ndim == 1 and y_arr.ndim == 2:
        x_arr = np.broadcast_to(x_arr, y_arr.shape)
    if x_arr.shape != y_arr.shape or x_arr.ndim not in (1, 2):
        raise ValueError(
            f"The 'x' and 'y' parameters of {_OWNER} must have the same length. "
            f"Got shapes {x_arr.shape} and {y_arr.shape} instead."
        )
    for name, arr in (("x", x_arr), ("y", y_arr)):
        if not np.all(np.isfinite(arr)) or not np.all(arr > 0):
            bad = arr[~(np.isfinite(arr) & (arr > 0))].ravel()[:3].tolist()
            raise ValueError(
                f"The {name!r} parameter of {_OWNER} must hold finite positive "
                f"numbers. Got {bad!r} among them instead."
            )
    if x_arr.shape[-1] < n_params:
        raise ValueError(
            f"The 'x' parameter of {_OWNER} must have at least {n_params} points "
            f"for {n_params} parameters. Got {x_arr.shape[-1]} instead."
        )
    return x_arr, y_arr


def _coefficients(
    z: np.ndarray, y: np.ndarray, w: np.ndarray, offset: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best ``(c0, c1)`` for basis ``z = x^-α`` under weights ``w``; returns c0, c1, objective.

    Shapes broadcast over leading axes; the last axis is the points.
    """
    s0, s1, s2 = w.sum(-1), (w * z).sum(-1), (w * z * z).sum(-1)
    t0, t1 = (w * y).sum(-1), (w * z * y).sum(-1)
    c1_only = t1 / s2  # c0 = 0
    if offset:
        det = s0 * s2 - s1 * s1
        with np.errstate(divide="ignore", invalid="ignore"):
            c1 = (s0 * t1 - s1 * t0) / det
            c0 = (t0 - c1 * s1) / s0
        clamp = ~(c0 >= 0)  # also catches NaN from a singular design
        c0 = np.where(clamp, 0.0, c0)
        c1 = np.where(clamp, c1_only, c1)
    else:
        c0, c1 = np.zeros_like(c1_only), c1_only
    resid = y - c0[..., None] - c1[..., None] * z
    return c0, c1, (w * resid * resid).sum(-1)


def _fit_offset(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, bounds: tuple[float, float], grid: int, iters: int
) -> tuple[np.ndarray, ...]:
    """Vectorized VarPro with a c0 term: x, y, w are ``[C, P]``."""
    log_x = np.log(x)
    alphas = np.geomspace(bounds[0], bounds[1], grid)
    objective = np.empty((grid, x.shape[0]))
    for i, a in enumerate(alphas):
        objective[i] = _coefficients(np.exp(-a * log_x), y, w, True)[2]
    objective = np.where(np.isfinite(objective), objective, np.inf)
    best = objective.argmin(axis=0)
    at_bound = (best == 0) | (best == grid - 1)
    lo = alphas[np.clip(best - 1, 0, grid - 1)]
    hi = alphas[np.clip(best + 1, 0, grid - 1)]

    def f(a: np.ndarray) -> np.ndarray:
        return _coefficients(np.exp(-a[:, None] * log_x), y, w, True)[2]

    # Golden-section search inside each curve's bracket, all curves at once.
    c, d = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        left = fc < fd
        hi = np.where(left, d, hi)
        lo = np.where(left, lo, c)
        c_new = hi - _GOLDEN * (hi - lo)
        d_new = lo + _GOLDEN * (hi - lo)
        c, d = np.where(left, c_new, d), np.where(left, c, d_new)
        fc_new = f(np.where(left, c, d))
        fc, fd = np.where(left, fc_new, fd), np.where(left, fc, fc_new)
    alpha = (lo + hi) / 2
    c0, c1, obj = _coefficients(np.exp(-alpha[:, None] * log_x), y, w, True)
    return alpha, c0, c1, obj, at_bound


def _fit_loglog(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted OLS of ``log y = log c1 - α log x`` (the paper's fit), vectorized."""
    lx, ly = np.log(x), np.log(y)
    sw = w.sum(-1)
    mx, my = (w * lx).sum(-1) / sw, (w * ly).sum(-1) / sw
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (w * (lx - mx[:, None]) * (ly - my[:, None])).sum(-1) / (
            w * (lx - mx[:, None]) ** 2
        ).sum(-1)
    alpha, c1 = -slope, np.exp(my - slope * mx)
    resid = ly - np.log(c1)[:, None] + alpha[:, None] * lx
    return alpha, np.zeros_like(alpha), c1, (w * resid**2).sum(-1), np.zeros(len(alpha), bool)


def _fit_loglog_l2(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """:func:`_fit_loglog` with unit weights, in fewer passes over ``[C, P]``; ``x`` whose rows
    are one broadcast row (stride 0) is logged once and enters as a matrix-vector product."""
    ly = np.log(y)
    shared = x.strides[0] == 0 or len(x) == 1
    lx = np.log(x[0]) if shared else np.log(x)
    mx, my = lx.mean(-1), ly.mean(-1)
    dx = lx - (mx if shared else mx[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = ly @ dx / (dx @ dx) if shared else (ly * dx).sum(-1) / (dx * dx).sum(-1)
    resid = ly - my[:, None] - slope[:, None] * dx
    alpha, c1 = -slope, np.exp(my - slope * mx)
    return alpha, np.zeros_like(alpha), c1, (resid * resid).sum(-1), np.zeros(len(alpha), bool)


def fit_power_laws(
    x: Any,
    y: Any,
    *,
    offset: bool = True,
    loss: str = "l2",
    huber_delta: float = 0.05,
    alpha_bounds: tuple[float, float] = (1e-3, 10.0),
    grid: int = 64,
    iters: int = 45,
    block: int = 4096,
) -> dict[str, np.ndarray]:
    """Fit ``L = c0 + c1·x^-α`` to every row of ``y`` (``[C, P]``; ``x`` ``[P]`` or ``[C, P]``).

    Returns a dict of ``[C]`` arrays: ``alpha, c0, c1, objective, success`` and ``message``
    (object array: ``"ok"`` or why the fit failed). See the module docstring for the method.
    Curves are processed ``block`` at a time so the working arrays stay in cache.

    Examples
    --------
    >>> x = np.array([1e1, 1e2, 1e3, 1e4])
    >>> fits = fit_power_laws(x, np.stack([0.5 + 2 * x**-0.3, 3 * x**-0.7]))
    >>> np.round(fits["alpha"], 6).tolist(), fits["success"].tolist()
    ([0.3, 0.7], [True, True])
    """
    loss = check_choice(loss, "loss", _OWNER, ["l2", "huber"])
    huber_delta = check_real(huber_delta, "huber_delta", _OWNER, low=0.0, low_open=True)
    x_arr, y_arr = _check_xy(x, y, 3 if offset else 2)
    x2, y2 = np.atleast_2d(x_arr), np.atleast_2d(y_arr)
    lo, hi = (check_real(b, "alpha_bounds", _OWNER, low=0.0, low_open=True) for b in alpha_bounds)
    grid = check_int(grid, "grid", _OWNER, low=4)
    block = check_int(block, "block", _OWNER, low=1)
    if len(y2) > block:
        x2 = np.broadcast_to(x2, y2.shape)
        parts = [
            fit_power_laws(
                x2[i : i + block],
                y2[i : i + block],
                offset=offset,
                loss=loss,
                huber_delta=huber_delta,
                alpha_bounds=alpha_bounds,
                grid=grid,
                iters=iters,
                block=block,
            )
            for i in range(0, len(y2), block)
        ]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    alpha, c0, c1, obj, at_bound, settled = _irls(
        x2, y2, offset, loss, huber_delta, (lo, hi), grid, iters
    )
    message = np.full(len(y2), "ok", dtype=object)
    message[at_bound] = f"alpha ended on a search bound of [{lo:g}, {hi:g}]"
    message[~settled] = f"Huber reweighting did not settle in {_HUBER_ROUNDS} rounds"
    message[~(c1 > 0)] = "no decreasing power law (c1 <= 0)"
    message[~np.isfinite(obj) | ~np.isfinite(alpha)] = "objective is not finite"
    return {
        "alpha": alpha,
        "c0": c0,
        "c1": c1,
        "objective": obj,
        "success": message == "ok",
        "message": message,
    }


def _irls(
    x2: np.ndarray,
    y2: np.ndarray,
    offset: bool,
    loss: str,
    huber_delta: float,
    bounds: tuple[float, float],
    grid: int,
    iters: int,
) -> tuple[np.ndarray, ...]:
    """``alpha, c0, c1, objective, at_bound, settled`` ([C] each) of every curve: one weighted
    fit for ``loss="l2"``, Huber IRLS rounds until each curve's weights settle otherwise."""
    # Relative residuals: weight 1/y² in linear space (log space directly for offset=False).
    base = 1.0 / y2**2 if offset else np.ones_like(y2)
    weights = base.copy()
    n = len(y2)
    alpha, c0, c1, obj = (np.empty(n) for _ in range(4))
    at_bound, settled = np.zeros(n, bool), np.full(n, loss == "l2")
    active = np.arange(n)  # curves still being reweighted
    for _ in range(_HUBER_ROUNDS if loss == "huber" else 1):
        if not offset and loss == "l2":
            # One closed-form pass over every curve: no copies and no weights (the hot path of
            # every pure-law bootstrap; x shared by all curves stays a broadcast view).
            alpha, c0, c1, obj, at_bound = _fit_loglog_l2(x2, y2)
            break
        xa, ya, wa = x2[active], y2[active], weights[active]
        fits = _fit_offset(xa, ya, wa, bounds, grid, iters) if offset else _fit_loglog(xa, ya, wa)
        for out, value in zip((alpha, c0, c1, obj, at_bound), fits, strict=True):
            out[active] = value
        if loss == "l2":
            break
        if offset:
            rel = (ya - fits[1][:, None] - fits[2][:, None] * xa ** -fits[0][:, None]) / ya
        else:
            rel = np.log(ya) - np.log(fits[2])[:, None] + fits[0][:, None] * np.log(xa)
        # Huber IRLS: points beyond huber_delta (relative) get weight delta/|r|, until the
        # weights settle (the fixed point is the Huber minimum). A fixed 10 rounds left α up to
        # 2% short of it (scipy.optimize.least_squares(loss="huber")) when many points lie
        # beyond delta, where IRLS converges slowly.
        new = base[active] * np.minimum(1.0, huber_delta / np.maximum(np.abs(rel), 1e-300))
        done = ~(np.abs(new - wa) / base[active] > _HUBER_TOL).any(axis=1)  # NaN counts as done
        weights[active] = new
        settled[active[done]] = True
        active = active[~done]
        if not active.size:
            break
    return alpha, c0, c1, obj, at_bound, settled


def _bootstrap_curves(
    fitted: np.ndarray, residuals: np.ndarray, offset: bool, bootstrap: int, seed: int
) -> np.ndarray:
    """Residual-bootstrap replicates ``[B', P]`` of one fit (see the module docstring).

    ``fitted`` is ŷ at the points (> 0 for a successful fit), ``residuals`` the fit's own
    (relative with the offset, log without). Replicates with no positive counterpart (offset
    only) are dropped, so ``B' <= bootstrap``.
    """
    n, k = len(fitted), 3 if offset else 2
    # Least-squares residuals are smaller than the errors by about sqrt((P - k) / P) on average.
    inflate = np.sqrt(n / (n - k)) if n > k else 1.0
    rng = np.random.default_rng(seed)
    draws = residuals[rng.integers(0, n, size=(bootstrap, n))] * inflate  # [B, P]
    if not offset:
        return fitted * np.exp(draws)
    draws = draws[(draws < 1.0).all(axis=1)]
    return fitted / (1.0 - draws)


def fit_power_law(
    x: Any,
    y: Any,
    *,
    offset: bool = True,
    bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
    loss: str = "l2",
    huber_delta: float = 0.05,
    alpha_bounds: tuple[float, float] = (1e-3, 10.0),
) -> PowerLawFit:
    """Fit one curve ``L = c0 + c1·x^-α`` (``offset=False``: ``L = c1·x^-α``).

    Parameters
    ----------
    x, y : array-like of positive finite floats, same length (>= number of parameters)
    offset : bool
        Include the irreducible loss ``c0 >= 0``.
    bootstrap : int
        Residual-bootstrap replicates for confidence intervals (0 = none).
    confidence : float
        Level of the percentile intervals.
    seed : int
        Seed of the bootstrap.
    loss : {"l2", "huber"}
        Huber: robust to outlying points (relative residuals beyond ``huber_delta``).

    Examples
    --------
    >>> x = np.geomspace(10, 1e4, 8)
    >>> fit = fit_power_law(x, 0.1 + 5 * x**-0.4)
    >>> round(fit.alpha, 6), round(fit.c0, 6), fit.success
    (0.4, 0.1, True)
    >>> fit_power_law([1, 2], [1, 0.5], offset=False).alpha
    1.0
    """
    x_arr, y_arr = _check_xy(x, y, 3 if offset else 2)
    if x_arr.ndim != 1:
        raise ValueError(
            f"The 'y' parameter of {_OWNER} must be one curve (1-D); use "
            f"fit_power_laws for many. Got shape {y_arr.shape} instead."
        )
    kwargs = {
        "offset": offset,
        "loss": loss,
        "huber_delta": huber_delta,
        "alpha_bounds": alpha_bounds,
    }
    main = fit_power_laws(x_arr, y_arr, **kwargs)  # type: ignore[arg-type]
    alpha, c0, c1 = (float(main[k][0]) for k in ("alpha", "c0", "c1"))
    fitted = c0 + c1 * x_arr**-alpha
    with np.errstate(invalid="ignore", divide="ignore"):  # a failed fit may have ŷ <= 0
        residuals = (y_arr - fitted) / y_arr if offset else np.log(y_arr / fitted)
    result: dict[str, Any] = {
        "alpha": alpha,
        "c0": c0,
        "c1": c1,
        "offset": offset,
        "x": x_arr,
        "y": y_arr,
        "residuals": residuals,
        "success": bool(main["success"][0]),
        "message": str(main["message"][0]),
        "confidence": confidence,
    }
    bootstrap = check_int(bootstrap, "bootstrap", _OWNER, low=0)
    if bootstrap and result["success"]:
        confidence = check_real(
            confidence, "confidence", _OWNER, low=0.0, high=1.0, low_open=True, high_open=True
        )
        y_boot = _bootstrap_curves(fitted, residuals, offset, bootstrap, seed)
        boot: dict[str, np.ndarray] = {"success": np.zeros(0, bool)}
        if len(y_boot):
            boot = fit_power_laws(x_arr, y_boot, **kwargs)  # type: ignore[arg-type]
        ok = boot["success"]
        q = [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100]
        if ok.sum() >= 10:
            for name in ("alpha", "c0", "c1"):
                lo_, hi_ = np.percentile(boot[name][ok], q)
                result[f"{name}_ci"] = (float(lo_), float(hi_))
        result["n_bootstrap"] = int(ok.sum())
    return PowerLawFit(**result)
