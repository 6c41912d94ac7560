import dataclasses

import cv2
import numpy as np
import pytest

from emote.engine.avatar import AvatarSettings, prepare
from emote.engine.exceptions import ConfigError
from emote.engine.matte import MatteSettings, composite_rgba, over_background, parse_colour, person_matte
from portraits import astronaut, grace_hopper_path

SIZE = 256


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("avatars")


@pytest.fixture(scope="module")
def astro(cache):
    return prepare(astronaut(), AvatarSettings(size_px=SIZE), cache_dir=cache)


@pytest.fixture(scope="module")
def hopper(cache):
    return prepare(grace_hopper_path(), AvatarSettings(size_px=SIZE), cache_dir=cache)


def face_hull(av) -> np.ndarray:
    m = np.zeros(av.image.shape[:2], np.uint8)
    cv2.fillConvexPoly(m, cv2.convexHull(np.round(av.points[:, :2]).astype(np.int32)), 255)
    return m > 0


def check_person(av, m):
    assert m.shape == (SIZE, SIZE) and m.dtype == np.float32
    assert 0.0 <= m.min() and m.max() <= 1.0
    face = face_hull(av)
    assert face.sum() > 2000                               # the face is a real region, not a few pixels
    assert m[face].min() >= 0.95, f"face not opaque: min {m[face].min():.3f}"
    for corner in (m[:6, :6], m[:6, -6:]):                # the two top corners are background
        assert corner.max() <= 0.1


def test_astronaut_matte(astro):
    m = person_matte(astro)
    check_person(astro, m)
    assert 0.15 <= m.mean() <= 0.85
    # hair above the forehead and the suit under the chin are person; the wall beside the head is not
    chin = astro.points[152, :2]
    top = astro.points[:, 1].min()
    assert m[int(top) - 6, int(chin[0])] >= 0.9
    assert m[min(SIZE - 3, int(chin[1]) + 40), int(chin[0])] >= 0.9
    assert m[int(top), 8] <= 0.1 and m[int(top), SIZE - 8] <= 0.1
    assert np.array_equal(m, person_matte(astro))        # deterministic


def test_grace_hopper_matte(hopper):
    m = person_matte(hopper)
    check_person(hopper, m)
    assert 0.15 <= m.mean() <= 0.85
    # the uniform down to the bottom edge is person, badges and name tag included (holes filled);
    # the flag pole beside her hat is not (thin strands are opened away)
    assert m[-3:, 40:220].min() >= 0.9
    assert m[10:40, 60:80].max() <= 0.1
    assert np.array_equal(m, person_matte(hopper))


def test_settings_change_the_matte_but_not_the_face(astro):
    hard = person_matte(astro, MatteSettings(feather_px=0.0, work_px=128, iterations=2))
    check_person(astro, hard)
    edge = (hard > 0.01) & (hard < 0.99)
    soft = person_matte(astro)
    assert edge.sum() < ((soft > 0.01) & (soft < 0.99)).sum()     # feathering widens the edge band


def test_transparent_png_gives_its_own_alpha(tmp_path):
    img = astronaut()
    alpha = np.zeros(img.shape[:2], np.uint8)
    cv2.ellipse(alpha, (256, 220), (180, 240), 0, 0, 360, 255, -1)
    path = tmp_path / "cutout.png"
    cv2.imwrite(str(path), cv2.cvtColor(np.dstack([img, alpha]), cv2.COLOR_RGBA2BGRA))
    av = prepare(path, AvatarSettings(size_px=SIZE), cache_dir=tmp_path)
    assert av.alpha is not None
    m = person_matte(av)
    assert m.dtype == np.float32 and m.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(m, av.alpha.astype(np.float32) / 255.0)
    assert m[2, 2] == 0.0 and m[SIZE // 2, SIZE // 2] == 1.0


def test_person_on_a_flat_backdrop_is_cut_out_exactly(astro):
    truth = person_matte(astro) >= 0.5
    img = astro.image.copy()
    img[~truth] = (40, 160, 60)                      # a green-screen photo of the same person
    m = person_matte(dataclasses.replace(astro, image=img)) >= 0.5
    iou = (m & truth).sum() / (m | truth).sum()
    assert iou >= 0.97, f"IoU {iou:.3f}"


def test_uniform_background_and_tiny_images_do_not_crash(astro):
    grey = dataclasses.replace(astro, image=np.full_like(astro.image, 128))
    m = person_matte(grey)
    assert m.shape == (SIZE, SIZE) and np.isfinite(m).all() and m[face_hull(grey)].min() >= 0.95
    for side in (32, 8):
        k = side / SIZE
        img = cv2.resize(astro.image, (side, side), interpolation=cv2.INTER_AREA)
        tiny = dataclasses.replace(astro, image=img, points=astro.points * k,
                                   ring_head=astro.ring_head * k, ring_outer=astro.ring_outer * k)
        t = person_matte(tiny)
        assert t.shape == (side, side) and t.dtype == np.float32
        assert 0.0 <= t.min() and t.max() <= 1.0 and t[side // 2, side // 2] > 0.5


def test_bad_settings():
    for bad in ({"work_px": 8}, {"work_px": 256.0}, {"iterations": 0}, {"feather_px": -1.0},
                {"feather_px": float("nan")}, {"border_px": -2}):
        with pytest.raises(ConfigError):
            MatteSettings(**bad)


def test_composite_rgba_and_over_background():
    frame = astronaut()[:64, :80].copy()
    matte = np.zeros(frame.shape[:2], np.float32)
    matte[:, 40:] = 1.0
    matte[:, 39] = 0.5
    rgba = composite_rgba(frame, matte)
    assert rgba.shape == (64, 80, 4) and rgba.dtype == np.uint8
    assert np.array_equal(rgba[..., :3], frame)
    assert (rgba[:, :39, 3] == 0).all() and (rgba[:, 40:, 3] == 255).all() and (rgba[:, 39, 3] == 128).all()
    green = over_background(frame, matte, (0, 255, 0))
    assert green.shape == frame.shape and green.dtype == np.uint8
    assert (green[:, :39] == [0, 255, 0]).all()
    assert np.array_equal(green[:, 40:], frame[:, 40:])
    half = (frame[:, 39].astype(np.float32) + [0, 255, 0]) / 2
    assert np.abs(green[:, 39].astype(np.float32) - half).max() <= 1.0
    with pytest.raises(ValueError, match="must match"):
        composite_rgba(frame, matte[:10])


def test_parse_colour():
    assert parse_colour("#00ff00") == (0, 255, 0)
    assert parse_colour("00FF00") == (0, 255, 0)
    assert parse_colour("#0f0") == (0, 255, 0)
    assert parse_colour("#123456") == (0x12, 0x34, 0x56)
    for bad in ("green", "#12345", "#gg0000", "", "#00ff00ff"):
        with pytest.raises(ConfigError, match="hex"):
            parse_colour(bad)
