"""The flow-teacher interface and the default DIS teacher on exact synthetic flow."""

import cv2
import numpy as np
import pytest

from flow3r_jax.correspondence.teacher import DISTeacher, TeacherError, TeacherOutput, check_teacher_args, compute_pair_flows, get_teacher, register_teacher
from data_pipelines.synthetic import SceneConfig, generate_clip


@pytest.fixture(scope="module")
def clip():
    return generate_clip(SceneConfig(height=96, width=128, frames=4, offsets=(1,), flow_px=(3.0, 5.0), num_objects=(2, 3)), seed=3)


def test_dis_recovers_exact_flow(clip):
    pairs = clip["pairs"]
    out = compute_pair_flows(get_teacher("dis"), clip["images"], pairs, batch_size=4)
    assert out.flow.shape == clip["flow"].shape and out.flow.dtype == np.float32 and out.confidence is None
    m = clip["covisible"]
    epe = np.linalg.norm(out.flow - clip["flow"], axis=-1)[m].mean()
    assert epe < 1.0, epe
    # Batching does not change results (each pair independent).
    single = compute_pair_flows(DISTeacher(), clip["images"], pairs[:1], batch_size=1)
    np.testing.assert_allclose(single.flow[0], out.flow[0], atol=1e-5)


def test_input_validation():
    t = DISTeacher()
    with pytest.raises(ValueError, match="uint8"):
        t(np.zeros((1, 8, 8, 3), np.float32), np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="differ in shape"):
        t(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 9, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown preset"):
        DISTeacher("slow")
    with pytest.raises(ValueError, match="unknown flow teacher"):
        get_teacher("nope")


def test_registered_teacher_and_failures_are_named(clip):
    class Broken:
        name, version = "broken", "0"

        def __call__(self, src, dst):
            return TeacherOutput(np.zeros(src.shape[:3] + (3,), np.float32))

    class Crashing(Broken):
        def __call__(self, src, dst):
            raise RuntimeError("CUDA out of memory")

    class NaNs(Broken):
        def __call__(self, src, dst):
            return TeacherOutput(np.full(src.shape[:3] + (2,), np.nan, np.float32))

    register_teacher("broken", Broken)
    with pytest.raises(TeacherError, match="shape"):
        compute_pair_flows(get_teacher("broken"), clip["images"], clip["pairs"][:2])
    with pytest.raises(TeacherError, match="CUDA out of memory"):
        compute_pair_flows(Crashing(), clip["images"], clip["pairs"][:2])
    with pytest.raises(TeacherError, match="non-finite"):
        compute_pair_flows(NaNs(), clip["images"], clip["pairs"][:2])


def test_teacher_arguments_are_checked_without_building_the_teacher():
    built = []

    def factory(weights, scale=1.0):
        built.append(weights)
        return DISTeacher()

    def check(weights, scale=1.0):
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")

    register_teacher("lazy_for_test", factory, check=check)
    check_teacher_args("lazy_for_test", weights="w.pt", scale=2.0)
    with pytest.raises(ValueError, match="does not accept.*unexpected keyword argument 'wieghts'.*it takes \\['weights', 'scale'\\]"):
        check_teacher_args("lazy_for_test", weights="w.pt", wieghts="w.pt")
    with pytest.raises(ValueError, match="missing a required argument: 'weights'"):
        check_teacher_args("lazy_for_test")
    with pytest.raises(ValueError, match="scale must be > 0"):
        check_teacher_args("lazy_for_test", weights="w.pt", scale=0)
    with pytest.raises(ValueError, match="unknown flow teacher 'nope'"):
        check_teacher_args("nope")
    with pytest.raises(ValueError, match="unknown preset 'slow'"):
        check_teacher_args("dis", preset="slow")
    assert built == []  # nothing was built (a learned teacher would have loaded its weights)


def test_dis_flow_does_not_depend_on_what_the_teacher_computed_before():
    """OpenCV lowers a DIS object's finest scale after a small image; the teacher resets it, so
    a flow equals that of a fresh teacher whatever came before (reruns give identical records)."""
    from flow3r_jax.correspondence.teacher import DISTeacher

    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), (0, 0), 2)
    moved = np.roll(big, (2, 3), axis=(0, 1))
    small = big[:32, :40]
    fresh = DISTeacher()(big[None], moved[None]).flow
    used = DISTeacher()
    used(small[None], np.roll(small, 1, axis=1)[None])
    np.testing.assert_array_equal(used(big[None], moved[None]).flow, fresh)
