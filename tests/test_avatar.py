import cv2
import numpy as np
import pytest

from emote.engine.avatar import AvatarSettings, prepare
from emote.engine.exceptions import ConfigError, FaceNotFoundError, ImageError
from portraits import astronaut, grace_hopper, grace_hopper_path, save_rgb


def test_prepare_astronaut(tmp_path):
    av = prepare(astronaut(), cache_dir=tmp_path)
    assert av.image.shape == (512, 512, 3) and av.points.shape == (478, 3)
    assert 60 < av.iod_px < 140                       # the face fills a good part of the frame
    for ring in (av.ring_head, av.ring_outer):
        assert ring[:, :2].min() >= 0 and ring[:, :2].max() <= 511
    head = av.head_mask()
    assert head[256, 256] == 255 and head[511, 0] == 0 and head[511, 511] == 0
    assert (av.region_mask("mouth") > 0).sum() > 200 and (av.region_mask("eyes") > 0).sum() > 100


def test_cache_hit_is_identical_and_skips_detection(tmp_path, monkeypatch):
    from emote.engine import landmarks

    path = grace_hopper_path()
    a = prepare(path, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1

    def no_detection(*a, **k):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(landmarks, "shared_landmarker", no_detection)
    b = prepare(path, cache_dir=tmp_path)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.points, b.points)
    assert a.blendshapes == b.blendshapes


def test_sizes(tmp_path):
    av = prepare(astronaut(), AvatarSettings(size_px=256), cache_dir=tmp_path)
    assert av.image.shape == (256, 256, 3)
    with pytest.raises(ConfigError):
        AvatarSettings(size_px=500 + 1)


def test_two_faces_takes_largest(tmp_path):
    big = cv2.resize(astronaut(), (700, 700))
    small = cv2.resize(grace_hopper(), (300, 400))
    canvas = np.full((700, 1100, 3), 128, np.uint8)
    canvas[:, :700] = big
    canvas[:400, 720:1020] = small
    av = prepare(canvas, cache_dir=tmp_path)
    assert any("2 faces" in n for n in av.notes)
    # the chosen face is the astronaut's: her smile
    assert av.blendshapes["mouthSmileLeft"] > 0.5


def test_bad_images(tmp_path):
    from skimage import data

    with pytest.raises(ImageError, match="does not exist"):
        prepare(tmp_path / "missing.jpg", cache_dir=tmp_path)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        prepare(empty, cache_dir=tmp_path)
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n" * 20)
    with pytest.raises(ImageError, match="cannot read"):
        prepare(text, cache_dir=tmp_path)
    with pytest.raises(FaceNotFoundError, match="no face"):
        prepare(save_rgb(tmp_path / "coffee.png", data.coffee()), cache_dir=tmp_path)
    tiny = cv2.resize(astronaut(), (60, 60), interpolation=cv2.INTER_AREA)
    canvas = np.full((600, 600, 3), 200, np.uint8)
    canvas[270:330, 270:330] = tiny
    with pytest.raises(FaceNotFoundError):   # too small (or not even found)
        prepare(canvas, cache_dir=tmp_path)


def test_dark_photo_is_found_by_a_fallback(tmp_path):
    dark = (astronaut().astype(np.float32) * 0.03).astype(np.uint8)
    av = prepare(dark, cache_dir=tmp_path)
    assert "landmarks: contrast" in av.notes


def test_user_landmarks_file_is_the_last_resort(tmp_path):
    from emote.engine import landmarks as L

    img = astronaut()
    pts = L.shared_landmarker().detect_one(img).points
    f = tmp_path / "face.npy"
    np.save(f, pts[:, :2])                                    # 2-D points are accepted too
    ref = prepare(img, cache_dir=tmp_path / "a")
    av = prepare(img, AvatarSettings(landmarks_file=str(f)), cache_dir=tmp_path / "b")
    assert "landmarks: user file" in av.notes
    assert np.abs(av.points[:, :2] - ref.points[:, :2]).mean() < 3.0
    bad = tmp_path / "bad.json"
    bad.write_text("[[1, 2], [3, 4]]")
    with pytest.raises(ImageError, match="478 rows"):
        prepare(img, AvatarSettings(landmarks_file=str(bad)), cache_dir=tmp_path / "c")
    with pytest.raises(ImageError, match="does not exist"):
        prepare(img, AvatarSettings(landmarks_file=str(tmp_path / "nope.npy")), cache_dir=tmp_path / "c")


def test_transparent_png_keeps_its_alpha(tmp_path):
    img = astronaut()
    alpha = np.zeros(img.shape[:2], np.uint8)
    cv2.ellipse(alpha, (256, 200), (170, 230), 0, 0, 360, 255, -1)
    rgba = np.dstack([img, alpha])
    path = tmp_path / "cutout.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    av = prepare(path, cache_dir=tmp_path)
    assert av.alpha is not None and av.alpha.shape == av.image.shape[:2]
    assert av.alpha[5, 5] == 0 and av.alpha[256, 256] == 255
    assert np.abs(av.image[5, 5].astype(int) - 128).max() <= 1     # composited over grey
