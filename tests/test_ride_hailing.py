"""The ride-hailing city: its rules, the matching, TD values, and value-based dispatch beating the
myopic rule (V1D3)."""

import numpy as np
import pytest

from rlnb.envs.ride_hailing import City, learn_values, myopic_score, simulate, value_score


def test_city_rules():
    city = City(size=5)
    assert city.distance(0, 24) == 8 and city.fare(0, 24) == 1 + 8 * city.fare_per_cell
    rate = city.demand()
    assert rate[12] == city.busy_rate and rate[7] == city.busy_rate and rate[0] == city.quiet_rate
    with pytest.raises(ValueError, match="size"):
        City(size=2)


def test_simulated_days_follow_the_matching_rules():
    city = City()
    revenue, log = simulate(city, myopic_score(city), n_drivers=6, seed=3)
    fares = [r for _, _, r, _, _ in log if r > 0]
    assert revenue == pytest.approx(sum(fares)) and len(fares) > 0
    for x, t, r, x2, t2 in log:
        if r == 0:
            assert (x2, t2) == (x, t + 1)  # idle: stay one step
        else:
            assert t2 > t and r >= 1.0
    # every driver is accounted for exactly once per step (idle, or on one trip): no double booking
    steps_covered = sum(min(t2, city.horizon) - t for _, t, _, _, t2 in log)
    assert steps_covered == 6 * city.horizon
    with pytest.raises(ValueError, match="n_drivers"):
        simulate(city, myopic_score(city), n_drivers=0)


def test_td_values_on_a_hand_made_log():
    city = City(size=3, horizon=3)
    # a driver at cell 0 earns 1 at t=0 (arriving in cell 4 at t=2), then nothing
    log = [(0, 0, 1.0, 4, 2), (4, 2, 0.0, 4, 3)]
    V = learn_values(city, log, gamma=0.5, alpha=1.0, epochs=3)
    assert V[0, 0] == 1.0 and V[4, 2] == 0.0 and V.shape == (9, 3)
    log = [(0, 0, 0.0, 1, 1), (1, 1, 2.0, 1, 2)]  # the 2 arrives one step later: γ · 2
    assert learn_values(city, log, gamma=0.5, alpha=1.0, epochs=5)[0, 0] == pytest.approx(1.0)


def test_zero_values_dispatch_like_the_myopic_rule():
    city = City()
    zero = value_score(city, np.zeros((city.n_cells, city.horizon)))
    for seed in range(3):
        assert (
            simulate(city, zero, seed=seed)[0] == simulate(city, myopic_score(city), seed=seed)[0]
        )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learned_values_beat_myopic_dispatch(seed):
    city = City()
    logs = []
    for day in range(20):
        logs += simulate(city, myopic_score(city), seed=1000 * seed + day)[1]
    V = learn_values(city, logs, gamma=0.95, epochs=5, seed=seed)
    days = [10**6 + 100 * seed + d for d in range(8)]
    myopic = np.mean([simulate(city, myopic_score(city), seed=s)[0] for s in days])
    valued = np.mean([simulate(city, value_score(city, V, 0.95), seed=s)[0] for s in days])
    assert valued > 1.03 * myopic
