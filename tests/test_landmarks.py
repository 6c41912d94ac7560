import numpy as np
import pytest

from emote.engine import landmarks as L
from emote.engine.exceptions import FaceNotFoundError, ModelFileError
from portraits import astronaut, grace_hopper


def test_packaged_model_found_and_checked():
    p = L.model_path()
    assert p.name == "face_landmarker.task" and p.stat().st_size == 3_758_596


def test_user_model_flag_and_env(tmp_path, monkeypatch):
    with pytest.raises(ModelFileError, match="does not exist"):
        L.model_path(tmp_path / "missing.task")
    monkeypatch.setenv(L.MODEL_ENV, str(tmp_path / "nope.task"))
    with pytest.raises(ModelFileError, match="does not exist"):
        L.model_path()
    bad = tmp_path / "bad.task"
    bad.write_bytes(b"not a model" * 100)
    with pytest.raises(ModelFileError, match="cannot load"):
        L.Landmarker(bad)


def test_detects_478_points_blendshapes_and_pose():
    lm = L.shared_landmarker()
    face = lm.detect_one(astronaut())
    assert face.points.shape == (478, 3)
    assert len(face.blendshapes) == 52 and face.blendshapes["mouthSmileLeft"] > 0.5  # she smiles
    assert face.pose.shape == (4, 4)
    x0, y0, x1, y1 = face.bbox
    assert 100 < x0 < x1 < 300 and 0 < y0 < y1 < 300


def test_aperture_open_vs_closed_mouth():
    lm = L.shared_landmarker()
    open_ = L.inner_lip_aperture(lm.detect_one(astronaut()).points)     # teeth visible
    closed = L.inner_lip_aperture(lm.detect_one(grace_hopper()).points)
    assert open_ > 0.08 and closed < 0.08 and open_ > 2 * closed


def test_no_face():
    from skimage import data

    with pytest.raises(FaceNotFoundError, match="no face"):
        L.shared_landmarker().detect_one(data.coffee())
