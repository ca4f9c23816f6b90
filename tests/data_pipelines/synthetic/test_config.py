"""SceneConfig validation: every bad field raises a ValueError naming the field and the value."""

import pytest

from data_pipelines.synthetic import SceneConfig


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"height": 0}, "height"),
        ({"width": -3}, "width"),
        ({"height": 2.5}, "height"),
        ({"frames": 1}, "frames"),
        ({"preset": "spiral"}, "preset"),
        ({"kind": "forest"}, "kind"),
        ({"offsets": (0, 1)}, "offsets"),
        ({"offsets": (1.5,)}, "offsets"),
        ({"offsets": ()}, "offsets"),
        ({"offsets": (1, 1)}, "offsets"),
        ({"frames": 4, "offsets": (4, 8)}, "offsets"),
        ({"focal_range": (1.6, 0.8)}, "focal_range"),
        ({"focal": -1.0}, "focal"),
        ({"flow_px": (0.0, 3.0)}, "flow_px"),
        ({"num_objects": (5, 2)}, "num_objects"),
        ({"num_dynamic": -1}, "num_dynamic"),
        ({"fps": 0}, "fps"),
        ({"supersample": 0}, "supersample"),
        ({"flat_prob": 1.5}, "flat_prob"),
        ({"dynamic": "yes"}, "dynamic"),
    ],
)
def test_bad_fields_raise_with_the_field_name(kwargs, field):
    with pytest.raises(ValueError, match=rf"SceneConfig\.{field}\b"):
        SceneConfig(**kwargs)


def test_defaults_normalisation_and_json_round_trip():
    cfg = SceneConfig(num_objects=3, offsets=[1, 2], focal=1)
    assert cfg.num_objects == (3, 3) and cfg.offsets == (1, 2) and cfg.focal == 1.0
    assert SceneConfig.from_json(cfg.to_json()) == cfg
    assert SceneConfig(dynamic=True, num_objects=(2, 5), num_dynamic=(1, 3)).max_objects == 8
    assert SceneConfig(num_objects=(2, 5)).max_objects == 5


def test_pairs_are_all_offsets_in_both_directions():
    cfg = SceneConfig(frames=6, offsets=(1, 4, 8))
    expected = {(i, j) for i in range(6) for j in range(6) if abs(i - j) in (1, 4)}
    pairs = cfg.pairs()
    assert set(pairs) == expected and len(pairs) == len(expected)
    assert pairs == sorted(pairs)
    # 24 frames with the default offsets: 2 * (23 + 22 + 20 + 16) = 162 pairs.
    assert len(SceneConfig().pairs()) == 162
