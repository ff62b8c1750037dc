"""A small ride-hailing city for "Value Function is All You Need: A Unified Learning Framework for
Ride Hailing Platforms" (V1D3): dispatch scored by a learned spatio-temporal value ``V(cell, t)``.

The city is a ``size × size`` grid over a day of ``horizon`` steps. Each step, orders appear at
each cell with Poisson rate ``busy_rate`` within Manhattan distance 1 of the centre and
``quiet_rate`` elsewhere; destinations are uniform over the grid. A trip from ``o`` to ``d`` pays
``1 + fare_per_cell · dist(o, d)`` and takes ``max(1, dist(driver, o) + dist(o, d))`` steps; drivers pick up
orders within distance 1 and wait where they are otherwise. Unmatched orders are lost. Long trips
pay more — and strand the driver in the quiet outskirts, which a myopic dispatcher ignores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class City:
    size: int = 5
    horizon: int = 36
    busy_rate: float = 3.0  # orders per step at each cell near the centre
    quiet_rate: float = 0.02  # ... and at each other cell
    pickup_radius: int = 1
    fare_per_cell: float = 0.25  # a trip pays 1 + fare_per_cell · distance

    def __post_init__(self):
        if not isinstance(self.size, int) or self.size < 3:
            raise ValueError(f"size: expected an int ≥ 3, got {self.size!r}")
        if not isinstance(self.horizon, int) or self.horizon < 1:
            raise ValueError(f"horizon: expected a positive int, got {self.horizon!r}")
        if self.busy_rate < 0 or self.quiet_rate < 0:
            raise ValueError("busy_rate, quiet_rate: expected rates ≥ 0")

    @property
    def n_cells(self) -> int:
        return self.size * self.size

    def distance(self, a, b):
        """Manhattan distance between cell ids (arrays broadcast)."""
        a, b = np.asarray(a), np.asarray(b)
        return np.abs(a // self.size - b // self.size) + np.abs(a % self.size - b % self.size)

    def demand(self) -> np.ndarray:
        """Order rate per cell ``[n_cells]``: ``busy_rate`` within distance 1 of the centre."""
        centre = (self.size // 2) * self.size + self.size // 2
        near = self.distance(np.arange(self.n_cells), centre) <= 1
        return np.where(near, self.busy_rate, self.quiet_rate)

    def fare(self, origin, destination):
        return 1.0 + self.fare_per_cell * self.distance(origin, destination)


def myopic_score(city: City) -> Callable:
    """Score a (driver at ``x``, order ``o → d``) pair at time ``t`` by its fare alone."""
    return lambda x, o, d, t, duration: city.fare(o, d)


def value_score(city: City, V: np.ndarray, gamma: float = 0.95) -> Callable:
    """V1D3's score: the advantage of taking the order over waiting a step,
    ``fare + γ^τ V(d, t + τ) − γ V(x, t + 1)`` (``τ`` the trip's duration; ``V = 0`` past the
    horizon). With ``V ≡ 0`` it is the fare."""
    V_pad = np.concatenate([V, np.zeros((city.n_cells, 1 + 4 * city.size))], axis=1)

    def score(x, o, d, t, duration):
        return city.fare(o, d) + gamma**duration * V_pad[d, t + duration] - gamma * V_pad[x, t + 1]

    return score


def simulate(
    city: City, score: Callable, n_drivers: int = 10, seed: int = 0
) -> tuple[float, list[tuple[int, int, float, int, int]]]:
    """Run one day. Each step, pairs (idle driver, order within the pickup radius) are matched
    greedily by ``score`` (best first, each driver and order at most once, only scores > 0).
    Returns the day's revenue and the drivers' transitions ``(cell, t, reward, next_cell, next_t)``
    (an idle step is ``(x, t, 0, x, t + 1)``) for learning values."""
    if not isinstance(n_drivers, int) or n_drivers < 1:
        raise ValueError(f"n_drivers: expected a positive int, got {n_drivers!r}")
    rng = np.random.default_rng(seed)
    rate = city.demand()
    cell = rng.integers(city.n_cells, size=n_drivers)
    free_at = np.zeros(n_drivers, dtype=int)  # the step at which each driver is idle again
    revenue, log = 0.0, []
    for t in range(city.horizon):
        counts = rng.poisson(rate)
        origins = np.repeat(np.arange(city.n_cells), counts)
        destinations = rng.integers(city.n_cells, size=len(origins))
        idle = np.flatnonzero(free_at <= t)
        pairs = []
        for i in idle:
            near = np.flatnonzero(city.distance(cell[i], origins) <= city.pickup_radius)
            for j in near:
                o, d = origins[j], destinations[j]
                duration = max(1, int(city.distance(cell[i], o) + city.distance(o, d)))
                pairs.append((score(cell[i], o, d, t, duration), i, j, duration))
        taken_drivers, taken_orders = set(), set()
        for value, i, j, duration in sorted(pairs, key=lambda p: -p[0]):
            if value <= 0 or i in taken_drivers or j in taken_orders:
                continue
            taken_drivers.add(i)
            taken_orders.add(j)
            fare = float(city.fare(origins[j], destinations[j]))
            revenue += fare
            log.append((int(cell[i]), t, fare, int(destinations[j]), t + duration))
            cell[i], free_at[i] = destinations[j], t + duration
        for i in idle:
            if i not in taken_drivers:
                log.append((int(cell[i]), t, 0.0, int(cell[i]), t + 1))
    return revenue, log


def learn_values(
    city: City,
    transitions,
    gamma: float = 0.95,
    alpha: float = 0.1,
    epochs: int = 10,
    seed: int = 0,
) -> np.ndarray:
    """Tabular TD(0) for the semi-MDP of one driver: ``V(x, t) += α (r + γ^{t'−t} V(x', t') −
    V(x, t))``, with ``V = 0`` from the horizon on; ``epochs`` shuffled passes. ``[n_cells, T]``."""
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha: expected a step size in (0, 1], got {alpha}")
    rng = np.random.default_rng(seed)
    V = np.zeros((city.n_cells, city.horizon + 1 + 4 * city.size))
    data = np.array(transitions, dtype=float)
    x, t, r, x2, t2 = (data[:, k] for k in range(5))
    x, t, x2, t2 = x.astype(int), t.astype(int), x2.astype(int), t2.astype(int)
    for _ in range(epochs):
        for k in rng.permutation(len(data)):
            target = r[k] + gamma ** (t2[k] - t[k]) * V[x2[k], t2[k]]
            V[x[k], t[k]] += alpha * (target - V[x[k], t[k]])
    return V[:, : city.horizon]
