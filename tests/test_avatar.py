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


# ------------------------------------------------------------------------------------------
# fuzzing read_image (issue 7): every input either decodes to a valid image or raises ImageError
# ------------------------------------------------------------------------------------------

from functools import partial

from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from emote.engine.avatar import read_image
from emote.engine.exceptions import EmoteError
from fuzzing import FUZZ, MUTATIONS, isolated, mutate

FUZZ_SIDE_PX = 96          # seed images of 96x96 px keep every fuzzed file under 64 KiB
FUZZ_LIMIT_S = 5.0         # one read_image call longer than this counts as a hang
isolated = partial(isolated, limit_s=FUZZ_LIMIT_S)


def _seed_images() -> dict[str, bytes]:
    """Real encoded files of the astronaut, 96x96: JPEG, PNG, PNG with alpha, WebP (name -> bytes)."""
    rgb = cv2.resize(astronaut(), (FUZZ_SIDE_PX, FUZZ_SIDE_PX), interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    alpha = np.zeros(bgr.shape[:2], np.uint8)
    cv2.circle(alpha, (48, 48), 40, 255, -1)
    seeds = {}
    for name, ext, img in (("face.jpg", ".jpg", bgr), ("face.png", ".png", bgr),
                           ("cutout.png", ".png", np.dstack([bgr, alpha])), ("face.webp", ".webp", bgr)):
        ok, buf = cv2.imencode(ext, img)
        assert ok and buf.size < 64 * 1024
        seeds[name] = buf.tobytes()
    return seeds


SEED_IMAGES = _seed_images()

#: Starts of real image files, so random tails reach past the format sniffing into the decoders.
IMAGE_MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
               b"\xff\xd8\xff\xdb", b"RIFF\x00\x10\x00\x00WEBPVP8 ", b"BM", b"II*\x00", b"MM\x00*", b"GIF89a",
               b"P6\n2 2\n255\n", b"P5\n3 1\n65535\n", b"P4\n8 2\n"]

@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    """One directory for all hypothesis examples of this module (files are overwritten)."""
    return tmp_path_factory.mktemp("fuzz_images")


def check_read_image(source):
    """read_image(source) returns a valid (H, W, 3) uint8 image with alpha None or (H, W) uint8,
    or raises an EmoteError. Returns the RGB array or None (error)."""
    try:
        rgb, alpha, raw = read_image(source)
    except EmoteError as e:
        assert str(e) and "\n" not in str(e)
        return None
    assert isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8, (type(rgb), getattr(rgb, "dtype", None))
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.shape[0] > 0 and rgb.shape[1] > 0, rgb.shape
    assert alpha is None or (isinstance(alpha, np.ndarray) and alpha.dtype == np.uint8
                             and alpha.shape == rgb.shape[:2]), None if alpha is None else (alpha.dtype, alpha.shape)
    assert isinstance(raw, bytes) and raw
    return rgb


@FUZZ
@given(head=st.sampled_from(IMAGE_MAGIC), tail=st.binary(max_size=8192), suffix=st.sampled_from([".png", ".jpg", ".webp"]))
def test_fuzz_read_image_arbitrary_bytes(fuzz_dir, head, tail, suffix):
    path = fuzz_dir / f"arbitrary{suffix}"
    path.write_bytes(head + tail)
    isolated(check_read_image, path)
    if not head + tail:
        with pytest.raises(ImageError, match="empty"):
            read_image(path)


@FUZZ
@given(name=st.sampled_from(sorted(SEED_IMAGES)), ops=MUTATIONS)
def test_fuzz_read_image_damaged_real_files(fuzz_dir, name, ops):
    data = mutate(SEED_IMAGES[name], ops)
    assert len(data) < 64 * 1024
    path = fuzz_dir / f"damaged_{name}"
    path.write_bytes(data)
    isolated(check_read_image, path)


def test_fuzz_seeds_decode_intact(fuzz_dir):
    """The undamaged seeds decode (so the fuzz tests above start from real, readable files)."""
    for name, data in SEED_IMAGES.items():
        path = fuzz_dir / f"intact_{name}"
        path.write_bytes(data)
        rgb = check_read_image(path)
        assert rgb is not None and rgb.shape == (FUZZ_SIDE_PX, FUZZ_SIDE_PX, 3)
        if name == "cutout.png":
            assert read_image(path)[1] is not None


def _raises_image_or_config_error(arr) -> None:
    with pytest.raises((ImageError, ConfigError)) as e:
        read_image(arr)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("arr", [
    pytest.param(np.zeros((64, 64, 3), np.float64), id="float64"),
    pytest.param(np.zeros((64, 64, 3), np.float32), id="float32"),
    pytest.param(np.zeros((64, 64, 3), np.uint16), id="uint16"),
    pytest.param(np.zeros((64, 64, 3), bool), id="bool"),
    pytest.param(np.zeros(64 * 64 * 3, np.uint8), id="1-D"),
    pytest.param(np.zeros((4, 64, 64, 3), np.uint8), id="4-D"),
    pytest.param(np.zeros((), np.uint8), id="0-D"),
    pytest.param(np.zeros((64, 64, 5), np.uint8), id="5-channels"),
    pytest.param(np.zeros((64, 64, 2), np.uint8), id="2-channels"),
    pytest.param(np.zeros((64, 64, 1), np.uint8), id="1-channel"),
    pytest.param(np.zeros((0, 0, 3), np.uint8), id="0x0"),
    pytest.param(np.zeros((0, 64), np.uint8), id="0x64-gray"),
])
def test_read_image_rejects_bad_arrays(arr):
    _raises_image_or_config_error(arr)


def test_read_image_accepts_good_arrays():
    img = cv2.resize(astronaut(), (FUZZ_SIDE_PX, FUZZ_SIDE_PX))
    for arr in (img, img[:, :, 0], np.dstack([img, np.full(img.shape[:2], 7, np.uint8)]), img[::2, ::3]):
        rgb = check_read_image(arr)
        assert rgb is not None and rgb.shape[:2] == arr.shape[:2]
    assert read_image(np.dstack([img, np.full(img.shape[:2], 7, np.uint8)]))[1].max() == 7


_NOT_UINT8 = st.sampled_from([np.float64, np.float32, np.float16, np.int8, np.int16, np.int32, np.int64,
                              np.uint16, np.uint32, np.bool_, np.complex64])


@FUZZ
@given(arr=hnp.arrays(_NOT_UINT8, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)))
def test_fuzz_read_image_wrong_dtype_arrays(arr):
    _raises_image_or_config_error(arr)


@FUZZ
@given(arr=hnp.arrays(np.uint8, st.one_of(hnp.array_shapes(min_dims=0, max_dims=1, min_side=0, max_side=8),
                                          hnp.array_shapes(min_dims=4, max_dims=5, min_side=0, max_side=3))))
def test_fuzz_read_image_wrong_rank_arrays(arr):
    _raises_image_or_config_error(arr)


@FUZZ
@given(arr=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=3, min_side=0, max_side=8)))
def test_fuzz_read_image_uint8_arrays_of_any_shape(arr):
    check_read_image(arr)


def _encoded(ext: str, dtype) -> bytes:
    """A 32x32 3-channel astronaut of ``dtype`` encoded by OpenCV as ``ext``: 0..1 for float types,
    0..65535 for uint16, 0..127 for signed types, 0..255 otherwise."""
    img = cv2.resize(astronaut(), (32, 32), interpolation=cv2.INTER_AREA).astype(np.float64)
    kind = np.dtype(dtype).kind
    img = img / 255.0 if kind == "f" else img * 257 if dtype == np.uint16 else img / 2 if kind == "i" else img
    ok, buf = cv2.imencode(ext, img.astype(dtype))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("ext,dtype", [
    pytest.param(".png", np.uint16, id="png-uint16"),
    pytest.param(".tiff", np.uint16, id="tiff-uint16"),
    pytest.param(".tiff", np.uint8, id="tiff-uint8"),
    pytest.param(".bmp", np.uint8, id="bmp"),
    pytest.param(".ppm", np.uint8, id="ppm"),
    pytest.param(".pfm", np.float32, id="pfm-float32"),
    pytest.param(".hdr", np.float32, id="hdr-float32"),
    pytest.param(".tiff", np.float32, id="tiff-float32"),
    pytest.param(".tiff", np.int16, id="tiff-int16"),
    pytest.param(".tiff", np.float64, id="tiff-float64"),
])
def test_read_image_sample_formats_give_uint8_or_image_error(tmp_path, ext, dtype):
    """Files whose decoder yields non-uint8 samples: valid uint8 RGB out, or ImageError (named .png on
    purpose: read_image sniffs the content, not the suffix)."""
    path = tmp_path / "portrait.png"
    path.write_bytes(_encoded(ext, dtype))
    rgb = check_read_image(path)
    if rgb is not None:
        assert rgb.shape == (32, 32, 3) and rgb.std() > 10, rgb.std()      # the picture, not a flat image


def _peak_rss_growth_mb(fn) -> float:
    """Run fn(); return how far the process's peak resident memory rose above its current size (MB).
    Linux: resets VmHWM through /proc/self/clear_refs."""
    def status_kb(key: str) -> int:
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1])
        raise KeyError(key)

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status_kb("VmRSS:")
    try:
        fn()
    except ImageError:
        pass
    return (status_kb("VmHWM:") - before) / 1024


def test_read_image_png_with_huge_chunk_length_does_not_allocate_it(tmp_path):
    data = bytearray(SEED_IMAGES["face.png"])
    at = data.index(b"IDAT") - 4
    data[at] = 0x40                      # the chunk now declares 0x40xxxxxx bytes (~1 GiB); the file is 21 KB
    path = tmp_path / "huge_chunk.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError):
        read_image(path)
    grew_mb = _peak_rss_growth_mb(lambda: read_image(path))
    assert grew_mb < 200, f"reading a {len(data) // 1024} KB file raised peak memory by {grew_mb:.0f} MB"
