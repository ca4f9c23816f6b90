"""Frame and pair sampling."""

import numpy as np
import pytest

from flow3r_jax.data.sampling import SamplingError, all_ordered_pairs, choose_frames, choose_pairs


def test_window_and_spread_frames(rng):
    for _ in range(50):
        f = choose_frames(24, 8, rng, "window", max_stride=3)
        d = np.diff(f)
        assert len(f) == 8 and f.min() >= 0 and f.max() < 24 and len(set(d)) == 1 and 1 <= d[0] <= 3
        s = choose_frames(24, 8, rng, "spread")
        assert len(set(s)) == 8 and np.all(np.diff(s) > 0)
    assert np.array_equal(choose_frames(8, 8, rng, "window", 3), np.arange(8))
    with pytest.raises(SamplingError, match="clip 'v1' has 5 frames, fewer than the 8"):
        choose_frames(5, 8, rng, clip_id="v1")


def test_pairs_among_chosen_frames_only(rng):
    stored = np.array([[0, 1], [1, 0], [1, 2], [2, 1], [5, 6], [0, 2], [3, 3]], np.int32)
    frames = np.array([0, 1, 2, 7])
    pairs, index, valid = choose_pairs(frames, stored, 8, rng)
    assert valid.sum() == 5  # (0,1) (1,0) (1,2) (2,1) (0,2); (5,6) not chosen, (3,3) not a pair
    for (a, b), k, v in zip(pairs, index, valid):
        if v:
            assert tuple(frames[[a, b]]) == tuple(stored[k])
        else:
            assert (a, b) == (0, 0) and k == -1
    derived, index, valid = choose_pairs(frames, None, 5, rng)
    assert valid.all() and np.all(index == -1) and np.all(derived[:, 0] != derived[:, 1])
    assert len(all_ordered_pairs(4)) == 12


def test_sample_size_from_pixel_budget():
    from flow3r_jax.data.sample import SampleConfig

    cfg = SampleConfig.for_budget(1080, 1920, frames=4)
    assert cfg.height % 14 == 0 and cfg.width % 14 == 0 and cfg.height * cfg.width <= 255_000 and cfg.frames == 4
    assert abs(cfg.width / cfg.height - 16 / 9) < 0.1
    small = SampleConfig.for_budget(378, 518, max_pixels=378 * 518)
    assert (small.height, small.width) == (378, 518)
