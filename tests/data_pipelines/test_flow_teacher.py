"""The flow-teacher interface and the default DIS teacher on exact synthetic flow."""

import numpy as np
import pytest

from data_pipelines.flow_teacher import DISTeacher, TeacherError, TeacherOutput, compute_pair_flows, get_teacher, register_teacher
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
