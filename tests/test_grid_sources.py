"""The grids' data recipes (experiments.collection.grid_sources): what each source does, seeded."""

import numpy as np
import pytest

from envs import grid
from experiments.collection.grid_sources import AnnealedExpert, make_grid_source, play_grid_histories


def _returns(histories):
    return np.array([[episode.total_return for episode in history] for history in histories])


def test_ad_eps_anneals_from_one_to_its_floor_over_ninety_percent_of_a_history():
    source = AnnealedExpert("dark_room", np.zeros((1, 2)), [0], 0, 21, eps_min=0.4)
    rates = []
    for index in range(21):
        source.begin_episode(index)
        rates.append(source.epsilon)
    np.testing.assert_allclose(rates[0], 1.0)
    np.testing.assert_allclose(rates[18:], 0.4)  # 0.9 * 20 = 18 episodes of annealing
    assert all(a > b for a, b in zip(rates[:18], rates[1:19]))


def test_searcher_visits_new_cells_until_it_finds_the_goal_then_goes_straight_back():
    (history,) = play_grid_histories("dark_room_hidden", "searcher", [3], 6, seed=0)
    task = history[0].task
    found = next(i for i, e in enumerate(history) if e.total_return > 0)
    for episode in history[found + 1:]:  # after the goal was found: the oracle's return, but for its noise
        assert episode.total_return >= grid.best_return("dark_room", task[None])[0] - 6
    noiseless = make_grid_source("searcher", "dark_room", task[None], [3], 0, 6, noise=0.0)
    noiseless.begin_episode(0)
    cells, seen = np.array([[4, 4]]), set()
    for _ in range(20):  # without noise, every step of the first episode enters a cell it has not seen
        seen.add(tuple(cells[0]))
        cells = np.clip(cells + grid.MOVES[noiseless.actions(cells)], 0, 8)
        if (cells[0] == task).all():
            break
        assert tuple(cells[0]) not in seen
        noiseless.observe(np.zeros(1), cells)


@pytest.mark.parametrize("task", ["dark_room_hidden", "dark_key_to_door_hidden"])
def test_sources_order_random_below_learners_below_the_oracle(task):
    mean = {source: _returns(play_grid_histories(task, source, range(40), 12, seed=1)).mean(axis=0)
            for source in ("random", "q_learning", "searcher", "oracle")}
    assert mean["q_learning"][-1] > mean["q_learning"][0] and mean["searcher"][-1] > mean["searcher"][0]
    assert mean["random"].mean() < mean["q_learning"][-1] < mean["searcher"][-1] <= mean["oracle"].min()


def test_histories_are_the_same_however_they_are_chunked():
    together = play_grid_histories("dark_key_to_door_hidden", "q_learning", [4, 5, 6], 3, seed=2)
    alone = play_grid_histories("dark_key_to_door_hidden", "q_learning", [5], 3, seed=2)
    for a, b in zip(together[1], alone[0]):
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.observations, b.observations)
    with pytest.raises(ValueError, match="source"):
        make_grid_source("explorer", "dark_room", np.zeros((1, 2)), [0], 0, 2)
