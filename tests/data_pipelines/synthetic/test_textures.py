"""Procedural noise: range, determinism, continuity, seed dependence, anti-alias fading."""

import jax.numpy as jnp
import numpy as np

from data_pipelines.synthetic.textures import fbm, value_noise


def _points(rng, n=4000, scale=20.0):
    return [jnp.asarray(rng.uniform(-scale, scale, n).astype(np.float32)) for _ in range(3)]


def test_value_noise_range_determinism_and_continuity(rng):
    q = _points(rng)
    a = np.stack(value_noise(q, jnp.uint32(7)))
    b = np.stack(value_noise(q, jnp.uint32(7)))
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0.0 and a.max() <= 1.0 and 0.4 < a.mean() < 0.6 and a.std() > 0.1
    # Lattice points hold the hashed values; a tiny step changes the value only a little.
    eps = [x + 1e-3 for x in q]
    c = np.stack(value_noise(eps, jnp.uint32(7)))
    assert np.max(np.abs(c - a)) < 0.02
    # Another seed gives an uncorrelated field; the three channels are uncorrelated too.
    d = np.stack(value_noise(q, jnp.uint32(8)))
    assert abs(np.corrcoef(a[0], d[0])[0, 1]) < 0.1
    assert abs(np.corrcoef(a[0], a[1])[0, 1]) < 0.1


def test_fbm_fades_octaves_finer_than_a_pixel(rng):
    q = _points(rng)
    sharp = np.stack(fbm(q, jnp.uint32(3), jnp.full(q[0].shape, 1e-3)))
    blurred = np.stack(fbm(q, jnp.uint32(3), jnp.full(q[0].shape, 0.75)))  # only the first octave is left, half
    gone = np.stack(fbm(q, jnp.uint32(3), jnp.full(q[0].shape, 2.0)))  # every octave below a pixel
    assert abs(sharp.mean()) < 0.05 and sharp.std() > 0.05
    assert blurred.std() < 0.6 * sharp.std()
    np.testing.assert_allclose(gone, 0.0, atol=1e-7)
