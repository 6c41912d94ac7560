import numpy as np
import pytest

from emote.engine import landmarks as L
from emote.engine import motion as M
from emote.engine.avatar import prepare
from emote.engine.exceptions import ConfigError
from emote.engine.renderer import Renderer, RendererSettings
from portraits import astronaut, grace_hopper


@pytest.fixture(scope="module", params=["astronaut", "hopper"])
def renderer(request, tmp_path_factory):
    img = astronaut() if request.param == "astronaut" else grace_hopper()
    r = Renderer(prepare(img, cache_dir=tmp_path_factory.mktemp("cache")))
    r.name = request.param
    return r


def _m(**kw):
    m = M.rest()[0]
    for k, v in kw.items():
        m[M.INDEX[k]] = v
    return m


def test_rest_reproduces_the_photo_exactly(renderer):
    assert np.array_equal(renderer(_m()), renderer.avatar.image)


def test_outside_head_region_is_untouched(renderer):
    outside = ~renderer.head_mask
    assert outside.mean() > 0.25 and (renderer.avatar.head_mask() > 0)[renderer.head_mask].mean() > 0.9
    ref = renderer.avatar.image
    rng = np.random.default_rng(3)
    for _ in range(6):
        m = _m(headYaw_deg=rng.uniform(-10, 10), headPitch_deg=rng.uniform(-8, 8), headRoll_deg=rng.uniform(-6, 6),
               jawOpen=rng.uniform(0, 1), eyeBlinkLeft=rng.uniform(0, 1), headTx=rng.uniform(-0.05, 0.05))
        assert np.array_equal(renderer(m)[outside], ref[outside])


def test_jaw_open_is_seen_by_the_landmarker(renderer):
    lm = L.shared_landmarker()
    a0 = L.inner_lip_aperture(lm.detect_one(renderer(_m())).points)
    a1 = L.inner_lip_aperture(lm.detect_one(renderer(_m(jawOpen=0.7))).points)
    a2 = L.inner_lip_aperture(lm.detect_one(renderer(_m(jawOpen=0.4, mouthClose=1.0))).points)
    assert a1 > a0 + 0.15          # opens clearly
    assert a2 < a0 + 0.06 and a2 < a1 / 3   # pressed lips are closed


def test_mouth_interior_is_dark_and_teeth_light(renderer):
    f = renderer(_m(jawOpen=0.7))
    pts = renderer.rig(_m(jawOpen=0.7))
    up, lo = pts[L.LIPS_INNER_UPPER[5]], pts[L.LIPS_INNER_LOWER[5]]
    line = np.array([f[int(round(y)), int(round(x))].mean() for x, y in np.linspace(up, lo, 24)[2:-2]])
    skin = renderer.avatar.image[renderer.avatar.region_mask("face") > 0].mean()
    assert line.min() < 0.5 * skin                          # a dark cavity
    assert line[:6].max() > line.min() + 60                 # upper teeth near the upper lip


def test_blink_is_seen_by_the_landmarker(renderer):
    lm = L.shared_landmarker()
    def lids(p):
        return np.mean([np.linalg.norm(p[u, :2] - p[d, :2]) for u, d in
                        zip(L.EYE_R_UPPER[2:-2] + L.EYE_L_UPPER[2:-2], L.EYE_R_LOWER[2:-2] + L.EYE_L_LOWER[2:-2])])
    f0, f1 = lm.detect_one(renderer(_m())), lm.detect_one(renderer(_m(eyeBlinkLeft=1.0, eyeBlinkRight=1.0)))
    assert lids(f1.points) < 0.8 * lids(f0.points)
    if renderer.name != "hopper":   # behind her glasses the landmarker's blink score barely moves
        assert f1.blendshapes["eyeBlinkLeft"] > f0.blendshapes["eyeBlinkLeft"] + 0.1


def test_settings_checked():
    with pytest.raises(ConfigError):
        RendererSettings(grid_step_px=3)


EXTREME = [(15, 0, 0), (-15, 0, 0), (0, 15, 0), (0, -15, 0), (0, 0, 10), (0, 0, -10),
           (15, -15, 10), (-15, 15, -10), (15, 15, -10), (-15, -15, 10)]


@pytest.fixture(scope="module")
def astro256(tmp_path_factory):
    from emote.engine.avatar import AvatarSettings

    return Renderer(prepare(astronaut(), AvatarSettings(size_px=256), cache_dir=tmp_path_factory.mktemp("cache256")))


def test_extreme_poses_do_not_tear_fold_or_move_the_background(astro256):
    """Bars from benchmarks/pose.py (256 and 512 px, both portraits): gradient p99.9 ratio in the band
    <= 1.08 and seam ratio <= 1.25 measured; a head pasted 4-8 px off (a real seam) scores 6-24."""
    from emote.benchmarks.pose import border_band, folds, source_map, tearing

    r, av = astro256, astro256.avatar
    band, outside = border_band(av), av.head_mask() == 0
    for y, p, ro in EXTREME:
        m = _m(headYaw_deg=y, headPitch_deg=p, headRoll_deg=ro)
        frame, d = r(m), r.rig.displacement(m)
        assert np.array_equal(frame[outside], av.image[outside]), f"background moved at {y, p, ro}"
        f = folds(r, d)
        assert f["folded_triangles"] == 0 and f["jac_det_min"] > 0.1, f
        t = tearing(av.image, frame, band, source_map(r, d))
        assert t["grad_ratio_p999"] <= 1.2 and t["seam_ratio_max"] <= 2.0, (y, p, ro, t)
        assert np.abs(frame[band].astype(int) - av.image[band]).max() > 20    # the band does follow


def test_tearing_metric_sees_a_seam(astro256):
    from emote.benchmarks.pose import border_band, tearing

    av = astro256.avatar
    band = border_band(av)
    torn = av.image.copy()
    inner = (av.head_mask() > 0) & ~band
    torn[inner] = np.roll(av.image, 6, axis=1)[inner]
    assert tearing(av.image, torn, band)["seam_ratio_max"] > 4.0


def test_landmarker_sees_the_yaw(astro256):
    """The landmarker's facial transformation matrix, frame vs photo: at +-15 deg requested it measures
    about +-9..11 deg (the warp turns the face, not the skull's far side); demand the sign and >= 7."""
    from emote.benchmarks.pose import measured_pose

    lm = L.shared_landmarker()
    photo = lm.detect_one(astro256.avatar.image)
    for yaw in (15.0, -15.0):
        y, p, ro = measured_pose(photo.pose, lm.detect_one(astro256(_m(headYaw_deg=yaw))).pose)
        assert np.sign(y) == np.sign(yaw) and abs(y) >= 7.0 and abs(p) < 5 and abs(ro) < 5, (yaw, y, p, ro)
