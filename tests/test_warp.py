import numpy as np
import pytest

from emote.kernels.warp import MeshWarp, WarpSettings


def _image(h=96, w=96):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return np.ascontiguousarray(img)


def _mesh():
    # a square of vertices inside a 96 px image, plus an inner ring that we move
    outer = np.array([[10, 10], [86, 10], [86, 86], [10, 86], [48, 10], [86, 48], [48, 86], [10, 48]], np.float32)
    inner = np.array([[38, 38], [58, 38], [58, 58], [38, 58]], np.float32)
    return np.vstack([outer, inner]), len(outer)


@pytest.mark.parametrize("step", [1, 2, 4])
def test_zero_displacement_is_identity(step):
    img = _image()
    v, _ = _mesh()
    w = MeshWarp(v, (0, 0, 96, 96), WarpSettings(grid_step_px=step))
    out = w.warp(img, np.zeros_like(v))
    assert np.array_equal(out, img)


def test_translation_moves_inside_and_keeps_outside():
    img = _image()
    v, n_outer = _mesh()
    d = np.zeros_like(v)
    d[n_outer:] = (3.0, 0.0)          # the inner square moves 3 px right
    w = MeshWarp(v, (0, 0, 96, 96), WarpSettings(grid_step_px=1, inverse_iterations=3))
    out = w.warp(img, d)
    # outside the mesh hull: exact copy
    assert np.array_equal(out[:9], img[:9]) and np.array_equal(out[:, :9], img[:, :9])
    # inside the moved square: the content 3 px to the left
    assert np.abs(out[42:55, 45:58].astype(int) - img[42:55, 42:55].astype(int)).mean() < 2.0


def test_backward_field_inverts_forward_motion():
    v, n_outer = _mesh()
    d = np.zeros_like(v)
    d[n_outer:] = (2.0, -1.5)
    w = MeshWarp(v, (0, 0, 96, 96), WarpSettings(grid_step_px=2, inverse_iterations=2))
    b = w.backward_field(d)
    assert b.shape == (96, 96, 2)
    np.testing.assert_allclose(b[48, 48], (-2.0, 1.5), atol=0.05)
    assert np.all(b[:9] == 0)


def test_settings_checked():
    with pytest.raises(ValueError):
        WarpSettings(grid_step_px=3)
    with pytest.raises(ValueError):
        WarpSettings(inverse_iterations=-1)


def _moved():
    v, n_outer = _mesh()
    d = np.zeros_like(v)
    d[n_outer:] = (2.3, -1.7)
    return v, d


def test_padded_source_gives_the_same_pixels_and_a_wrong_one_is_refused():
    from emote.kernels.warp import pad_channels
    img = _image()
    v, d = _moved()
    w = MeshWarp(v, (0, 0, 96, 96), WarpSettings(grid_step_px=2))
    plain = w.warp(img, d)
    padded = w.warp(img, d, padded=pad_channels(img))
    np.testing.assert_array_equal(plain, padded)
    assert not np.array_equal(plain, img)                      # it did move
    # RGB warped alone equals the RGB of the 4-channel image warped: channels are independent
    rgba = np.dstack([img, (img[..., 0] // 2)]).astype(np.uint8)
    np.testing.assert_array_equal(w.warp(rgba, d)[..., :3], plain)
    with pytest.raises(ValueError, match="padded"):
        w.warp(img, d, padded=pad_channels(img)[:50])


def test_warp_samples_the_backward_field_exactly():
    """Each output pixel is the bilinear sample of the photo at (pixel + backward offset), to
    within rounding (no 1/32 px quantisation of the map)."""
    img = _image().astype(np.float64)
    v, d = _moved()
    w = MeshWarp(v, (0, 0, 96, 96), WarpSettings(grid_step_px=2))
    out = w.warp(_image(), d).astype(np.float64)
    b = w.backward_field(d)
    ys, xs = np.mgrid[30:66, 30:66]
    sx, sy = xs + b[ys, xs, 0], ys + b[ys, xs, 1]
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    ref = (img[y0, x0] * (1 - fx) * (1 - fy) + img[y0, x0 + 1] * fx * (1 - fy)
           + img[y0 + 1, x0] * (1 - fx) * fy + img[y0 + 1, x0 + 1] * fx * fy)
    assert np.abs(out[30:66, 30:66] - ref).max() <= 1.0
