import numpy as np
import pytest

from emote.engine import landmarks as L
from emote.engine import motion as M
from emote.engine.avatar import prepare
from emote.engine.exceptions import ConfigError
from emote.engine.rig import Rig, RigSettings
from emote.kernels.warp import triangulate
from portraits import astronaut, grace_hopper


@pytest.fixture(scope="module", params=["astronaut", "hopper"])
def rig(request, tmp_path_factory):
    img = astronaut() if request.param == "astronaut" else grace_hopper()
    return Rig(prepare(img, cache_dir=tmp_path_factory.mktemp("cache")))


def _m(**kw):
    m = M.rest()[0]
    for k, v in kw.items():
        m[M.INDEX[k]] = v
    return m


def _gap(v, rig):
    up, lo = list(L.LIPS_INNER_UPPER[3:8]), list(L.LIPS_INNER_LOWER[3:8])
    return float(((v[lo] - v[up]) @ rig.ey).mean())


def test_rest_is_the_photo(rig):
    assert np.array_equal(rig(M.rest()[0]), rig.vertices[:, :2])


def test_jaw_opens_mouth_and_keeps_eyes(rig):
    v0, v1 = rig(_m()), rig(_m(jawOpen=1.0))
    assert _gap(v1, rig) - _gap(v0, rig) > 0.2 * rig.u
    upper = list(L.LIPS_INNER_UPPER[3:8])
    assert np.abs(v1[upper] - v0[upper]).max() < 0.05 * rig.u       # the skull stays
    eyes = list(L.EYE_R_UPPER + L.EYE_L_UPPER)
    assert np.abs(v1[eyes] - v0[eyes]).max() < 1e-3
    chin = L.CHIN
    assert (v1[chin] - v0[chin]) @ rig.ey > 0.1 * rig.u             # the chin drops too


def test_mouth_close_closes_any_gap(rig):
    assert abs(_gap(rig(_m(jawOpen=0.5, mouthClose=1.0)), rig)) < 0.02 * rig.u
    assert abs(_gap(rig(_m(mouthClose=1.0)), rig)) < 0.02 * rig.u   # also the photo's own gap


def test_blink_closes_the_lids(rig):
    v = rig(_m(eyeBlinkLeft=1.0, eyeBlinkRight=1.0))
    for up, lo in ((L.EYE_R_UPPER, L.EYE_R_LOWER), (L.EYE_L_UPPER, L.EYE_L_LOWER)):
        g0 = ((rig.vertices[list(lo[2:-2]), :2] - rig.vertices[list(up[2:-2]), :2]) @ rig.ey).mean()
        g1 = ((v[list(lo[2:-2])] - v[list(up[2:-2])]) @ rig.ey).mean()
        assert g0 > 2 and abs(g1) < 0.1 * g0


def test_left_is_the_subjects_left(rig):
    d = rig.displacement(_m(eyeBlinkLeft=1.0))
    left_eye = list(L.EYE_L_UPPER)        # MediaPipe's left = subject's left = image right
    right_eye = list(L.EYE_R_UPPER)
    assert np.abs(d[left_eye]).max() > 2 and np.abs(d[right_eye]).max() < 0.5


def test_yaw_uses_depth(rig):
    d = rig.displacement(_m(headYaw_deg=10.0))
    nose, ear = d[L.NOSE_TIP, 0], d[L.EAR_R, 0]
    assert nose > 0.1 * rig.u and nose > 2 * abs(ear)   # the nose swings more than the face's side


def test_outer_ring_never_moves_and_no_folds(rig):
    rng = np.random.default_rng(1)
    tri = np.nonzero(rig.active)[0][triangulate(rig.vertices[rig.active, :2]).simplices]
    interior = set(L.LIPS_INNER_UPPER + L.LIPS_INNER_LOWER + L.EYE_R_UPPER + L.EYE_R_LOWER
                   + L.EYE_L_UPPER + L.EYE_L_LOWER + L.IRIS_R + L.IRIS_L)
    keep = np.array([not (set(t) & interior) for t in tri])
    def area(v):
        a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
        e1, e2 = b - a, c - a
        return e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    a0 = area(rig.vertices[:, :2])
    for _ in range(40):
        m = M.rest()[0]
        mouth = M.idx(*M.MOUTH, *M.EYES, *M.BROWS)
        m[mouth] = rng.uniform(0, 0.7, len(mouth))
        for name, amp in (("headYaw_deg", 12), ("headPitch_deg", 10), ("headRoll_deg", 8), ("gazeYaw_deg", 15)):
            m[M.INDEX[name]] = rng.uniform(-amp, amp)
        v = rig(m)
        assert np.array_equal(v[rig.n_head:], rig.vertices[rig.n_head:, :2])
        flipped = (np.sign(area(v)) != np.sign(a0)) & keep & (np.abs(a0) > 1.0)
        assert flipped.sum() <= 0.01 * keep.sum(), f"{flipped.sum()} folded triangles"


def test_settings_checked():
    with pytest.raises(ConfigError):
        RigSettings(jaw_drop_iod=-0.1)


EXTREME = [(15, 0, 0), (-15, 0, 0), (0, 15, 0), (0, -15, 0), (0, 0, 10), (0, 0, -10),
           (15, -15, 10), (-15, 15, -10), (15, 15, -10), (-15, -15, 10)]


def _signed_areas(rig, v):
    tri = np.nonzero(rig.active)[0][triangulate(rig.vertices[rig.active, :2]).simplices]
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    e1, e2 = b - a, c - a
    return e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]


@pytest.mark.parametrize("limit", [False, True])
def test_extreme_head_poses_never_fold(rig, limit):
    """No mesh triangle (face, ring H, band) flips at yaw/pitch +-15 and roll +-10, nor at the channels'
    own limits (yaw 30, pitch 25, roll 20), where the depth relief is scaled down instead."""
    a0 = _signed_areas(rig, rig.vertices[:, :2])
    poses = [(30, 25, 20), (-30, -25, -20), (30, -25, 0), (-30, 25, 0)] if limit else EXTREME
    for y, p, r in poses:
        v = rig(_m(headYaw_deg=y, headPitch_deg=p, headRoll_deg=r))
        a1 = _signed_areas(rig, v)
        big = np.abs(a0) > 0.5
        assert (np.sign(a1[big]) == np.sign(a0[big])).all(), f"fold at yaw {y} pitch {p} roll {r}"
        assert np.array_equal(v[rig.n_head:], rig.vertices[rig.n_head:, :2])


def test_depth_relief_kept_within_the_fold_free_tilt(rig):
    assert rig.depth_slope <= 1.01 / np.tan(np.deg2rad(rig.s.fold_free_tilt_deg))
    rot15, _ = rig.head_transform(_m(headYaw_deg=15.0))
    rot30, _ = rig.head_transform(_m(headYaw_deg=30.0, headPitch_deg=25.0))
    assert rig.depth_scale(rot15) == 1.0 and 0.2 < rig.depth_scale(rot30) < 0.9


def test_band_fades_from_ring_h_to_still(rig):
    """Band rings move less and less outwards; the still ring (inside ring O) and ring O never move."""
    d = rig.displacement(_m(headRoll_deg=10.0))
    R = len(rig.avatar.ring_head)
    mags = [np.linalg.norm(d[i:i + R], axis=1).mean() for i in range(rig.n_face, rig.n_head + R, R)]
    assert mags[0] > 0.05 * rig.u and all(a > b for a, b in zip(mags, mags[1:])) and mags[-1] == 0.0
    assert (np.diff(rig.band_weight[::R]) < 0).all() and 0 < rig.band_weight.min() <= rig.band_weight.max() < 1


def test_band_settings_checked():
    for bad in (dict(band_rings=0), dict(band_ease=1.5), dict(still_margin_px=-1.0), dict(fold_free_tilt_deg=80.0)):
        with pytest.raises(ConfigError):
            RigSettings(**bad)
