"""Fit a device profile to published latency rows, and validate it by leaving one row out.

The objective follows the published data: only ratios within one table are comparable, because
absolute latencies drift by about 18% across OS builds. For each compressed row r with dense row d
of the same table the residual is::

    (log(pred_r / pred_d) - log(ms_r / ms_d)) / sigma_r
    sigma_r^2 = (0.005 / ms_r)^2 + (0.005 / ms_d)^2 + 0.03^2

(the published values are rounded to 0.01 ms, and repeated builds vary by about 3%). Each dense
row adds ``log(pred_d / ms_d) / 0.10`` so that the absolute scale, which sets where each layer
sits on the roofline, stays near the measurement. Each free parameter x adds a weak prior
``log(x / prior) / prior_sigma``, so that a parameter the rows cannot identify stays at its prior
instead of drifting to a bound.

Free parameters are fitted in log space within physical bounds by a bounded Levenberg-Marquardt
iteration on numpy (forward-difference Jacobian, steps clipped to the bounds).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import SparseblobError
from .costs import LayerCost
from .model import coverage_of, evaluate, features
from .profiles import DeviceProfile, PublishedRow
from .summaries import load_calibration

__all__ = ["row_sigma", "ProfileFit", "fit_profile", "leave_one_out", "levenberg_marquardt"]

logger = logging.getLogger(__name__)

# Weight of the absolute (dense-row) residuals: a 10% miss costs as much as one ratio sigma of 10%.
ABSOLUTE_SIGMA = 0.10


def row_sigma(ms: float, dense_ms: float) -> float:
    """Return the log-ratio uncertainty of a row: 0.005 ms rounding on both rows plus 3% build noise."""
    return math.sqrt((0.005 / ms) ** 2 + (0.005 / dense_ms) ** 2 + 0.03**2)


def levenberg_marquardt(
    residual: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    max_iterations: int = 100,
    tolerance: float = 1e-9,
) -> tuple[np.ndarray, float]:
    """Minimise ``sum(residual(x)**2)`` with x kept inside ``[lower, upper]``.

    Returns:
        The solution and its cost (the sum of squares).
    """
    x = np.clip(np.asarray(x0, dtype=float), lower, upper)
    r = residual(x)
    cost = float(r @ r)
    damping = 1e-2
    step_size = 1e-6
    for _ in range(max_iterations):
        jacobian = np.empty((r.size, x.size))
        for j in range(x.size):
            shifted = x.copy()
            # Difference towards the interior, so a parameter at its upper bound still moves.
            h = step_size if x[j] + step_size <= upper[j] else -step_size
            shifted[j] += h
            jacobian[:, j] = (residual(shifted) - r) / h
        normal = jacobian.T @ jacobian
        gradient = jacobian.T @ r
        improved = False
        while damping < 1e10:
            step = np.linalg.solve(normal + damping * np.diag(np.diag(normal) + 1e-12), -gradient)
            candidate = np.clip(x + step, lower, upper)
            r_candidate = residual(candidate)
            cost_candidate = float(r_candidate @ r_candidate)
            if cost_candidate < cost:
                improved = cost - cost_candidate > tolerance * max(cost, 1.0)
                x, r, cost = candidate, r_candidate, cost_candidate
                damping = max(damping / 3.0, 1e-9)
                break
            damping *= 4.0
        if not improved:
            break
    return x, cost


@dataclass(frozen=True)
class ProfileFit:
    """Result of fitting a profile.

    Attributes:
        profile: the profile with fitted parameters and its coverage filled in.
        cost: weighted sum of squares at the solution.
        residuals: row key -> (published ratio, predicted ratio) for compressed rows, or
            (published ms, predicted ms) for dense rows.
        rank: numerical rank of the Jacobian of the row residuals over the free parameters.
    """

    profile: DeviceProfile
    cost: float
    residuals: dict[str, tuple[float, float]]
    rank: int


class _Problem:
    """The rows of a profile, their layer features and the residual function."""

    def __init__(self, profile: DeviceProfile, rows: Sequence[PublishedRow]):
        self.profile = profile
        self.rows = [row for row in rows if row.use]
        self.all_rows = list(rows)
        self.free = list(profile.fit.get("free", {}))
        if not self.free:
            raise SparseblobError(f"profile {profile.name!r} has no free parameters to fit")
        specs = profile.fit["free"]
        self.lower = np.log([specs[name]["bounds"][0] for name in self.free])
        self.upper = np.log([specs[name]["bounds"][1] for name in self.free])
        self.prior = np.log([specs[name]["prior"] for name in self.free])
        self.prior_sigma = np.array([specs[name].get("prior_sigma", 1.0) for name in self.free])

        # Every (model, variant) any row needs, with the index of its prediction in the features.
        self.index: dict[tuple[str, str], int] = {}
        predictions: list[list[LayerCost]] = []
        for row in self.all_rows:
            for variant in (row.variant, row.dense_variant):
                key = (row.model, variant)
                if key not in self.index:
                    self.index[key] = len(predictions)
                    predictions.append(load_calibration(row.model)[variant])
        self.predictions = predictions
        self.features = features(predictions, profile.skip)
        self.dense_ms = {(r.table, r.model, r.variant): r.ms for r in self.all_rows}

    def parameters(self, x: np.ndarray) -> dict[str, float]:
        return {**self.profile.parameters, **dict(zip(self.free, np.exp(x)))}

    def totals(self, x: np.ndarray) -> np.ndarray:
        p = self.profile
        return evaluate(self.features, self.parameters(x), p.streams, p.skip, p.combine)["total"]

    def reference_ms(self, row: PublishedRow) -> float:
        try:
            return self.dense_ms[(row.table, row.model, row.dense_variant)]
        except KeyError:
            raise SparseblobError(f"row {row.key}: table {row.table} has no {row.dense_variant} row") from None

    def predicted_ratio(self, totals: np.ndarray, row: PublishedRow) -> float:
        return totals[self.index[(row.model, row.variant)]] / totals[self.index[(row.model, row.dense_variant)]]

    def row_residuals(self, x: np.ndarray, rows: Sequence[PublishedRow]) -> np.ndarray:
        totals = self.totals(x)
        out = []
        for row in rows:
            if row.variant == row.dense_variant:
                predicted = totals[self.index[(row.model, row.variant)]] * 1e3
                out.append(math.log(predicted / row.ms) / ABSOLUTE_SIGMA)
                continue
            dense = self.reference_ms(row)
            measured = row.ms / dense
            out.append(math.log(self.predicted_ratio(totals, row) / measured) / row_sigma(row.ms, dense))
        return np.array(out)

    def residual(self, rows: Sequence[PublishedRow]) -> Callable[[np.ndarray], np.ndarray]:
        def function(x: np.ndarray) -> np.ndarray:
            prior = (x - self.prior) / self.prior_sigma
            return np.concatenate([self.row_residuals(x, rows), prior])

        return function

    def solve(self, rows: Sequence[PublishedRow]) -> tuple[np.ndarray, float]:
        x0 = np.clip(self.prior, self.lower, self.upper)
        return levenberg_marquardt(self.residual(rows), x0, self.lower, self.upper)


def fit_profile(profile: DeviceProfile) -> ProfileFit:
    """Fit the free parameters of ``profile`` to its rows marked ``use``.

    Raises:
        SparseblobError: the profile has no rows, no free parameters, or a row has no dense row.
    """
    if not profile.rows:
        raise SparseblobError(f"profile {profile.name!r} has no published rows to fit")
    problem = _Problem(profile, profile.rows)
    x, cost = problem.solve(problem.rows)

    # Identifiability: rank of the row-residual Jacobian at the solution.
    base = problem.row_residuals(x, problem.rows)
    jacobian = np.empty((base.size, x.size))
    for j in range(x.size):
        shifted = x.copy()
        shifted[j] += 1e-4
        jacobian[:, j] = (problem.row_residuals(shifted, problem.rows) - base) / 1e-4
    singular = np.linalg.svd(jacobian, compute_uv=False)
    rank = int(np.sum(singular > singular[0] * 1e-3)) if singular.size else 0

    totals = problem.totals(x)
    residuals = {}
    for row in problem.all_rows:
        if row.variant == row.dense_variant:
            residuals[row.key] = (row.ms, float(totals[problem.index[(row.model, row.variant)]] * 1e3))
        else:
            residuals[row.key] = (row.ms / problem.reference_ms(row), float(problem.predicted_ratio(totals, row)))

    fitted = profile.with_parameters({name: float(v) for name, v in zip(problem.free, np.exp(x))})
    used = [problem.predictions[problem.index[(r.model, r.variant)]] for r in problem.rows]
    fitted = DeviceProfile(**{**fitted.__dict__, "coverage": coverage_of(used)})
    logger.info("fitted %s: cost %.3f, Jacobian rank %d of %d", profile.name, cost, rank, x.size)
    return ProfileFit(fitted, cost, residuals, rank)


def leave_one_out(profile: DeviceProfile) -> list[dict]:
    """Refit without each compressed row in turn and predict it.

    Returns:
        One dict per compressed row marked ``use``: ``key``, ``published`` and ``predicted``
        ratios to the table's dense row, ``error`` (predicted / published - 1) and
        ``null_error`` (1 / published - 1, the error of predicting no change).
    """
    problem = _Problem(profile, profile.rows)
    results = []
    for row in problem.rows:
        if row.variant == row.dense_variant:
            continue
        remaining = [other for other in problem.rows if other is not row]
        x, _ = problem.solve(remaining)
        predicted = float(problem.predicted_ratio(problem.totals(x), row))
        published = row.ms / problem.reference_ms(row)
        results.append(
            {
                "key": row.key,
                "published": published,
                "predicted": predicted,
                "error": predicted / published - 1.0,
                "null_error": 1.0 / published - 1.0,
            }
        )
    return results
