"""68-point landmarks on a real photo, offline, and the face-alignment backend behind the same interface."""
import logging

import numpy as np
import pytest
import torch

from opflowtalker import landmarks as lm


@pytest.fixture(scope="module")
def hopper_face(hopper_rgb):
    faces = lm.LandmarkDetector("dlib").detect(hopper_rgb)
    assert len(faces) == 1
    return faces[0]


def test_dlib_finds_68_points_in_anatomical_order_on_a_real_photo(hopper_face, hopper_rgb):
    pts = hopper_face.landmarks
    assert pts.shape == (68, 2) and pts.dtype == np.float32
    x0, y0, x1, y1 = hopper_face.box
    assert 0 <= x0 < x1 <= hopper_rgb.shape[1] and 0 <= y0 < y1 <= hopper_rgb.shape[0]
    eyes_y, nose_tip_y = pts[36:48, 1].mean(), pts[33, 1]
    mouth_y, chin_y = pts[lm.MOUTH, 1].mean(), pts[8, 1]
    assert eyes_y < nose_tip_y < mouth_y < chin_y
    assert pts[36, 0] < pts[45, 0] and pts[48, 0] < pts[54, 0]  # left-to-right as seen
    assert lm.lip_gap(pts) < 2.0  # the portrait's mouth is closed


def test_masks_cover_mouth_and_face(hopper_face, hopper_rgb):
    pts = hopper_face.landmarks
    mouth = lm.mouth_mask(pts, hopper_rgb.shape)
    face = lm.face_mask(pts, hopper_rgb.shape)
    cx, cy = np.round(pts[lm.MOUTH].mean(0)).astype(int)
    assert mouth[cy, cx] and face[cy, cx]
    assert not mouth[int(pts[30, 1]), int(pts[30, 0])]  # the nose tip is not mouth
    assert mouth.sum() < 0.1 * face.sum()
    assert (mouth & ~face).sum() == 0
    assert lm.mouth_mask(pts, hopper_rgb.shape, dilate=5).sum() > mouth.sum()
    nx, ny = np.round(pts[27]).astype(int)
    assert face[ny, nx]  # the bridge of the nose, between the eyes, is inside the face


def test_no_face_gives_an_empty_list():
    assert lm.LandmarkDetector("dlib").detect(np.full((200, 200, 3), 128, np.uint8)) == []


def test_auto_falls_back_to_dlib_in_one_line_without_face_alignment_weights(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with caplog.at_level(logging.WARNING):
        detector = lm.LandmarkDetector("auto")
    assert detector.backend == "dlib"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "face-alignment weights are not available offline" in lines[0] and "dlib" in lines[0]
    with pytest.raises(lm.LandmarkError, match="not available offline"):
        lm.LandmarkDetector("face_alignment")


def test_face_alignment_backend_loads_weight_files_in_the_published_format(tmp_path, monkeypatch, hopper_face,
                                                                           hopper_rgb):
    """The loader path a user with the real S3FD/FAN files takes, exercised with files of the same
    format (state dicts of face-alignment's own networks) written here; random weights, so only the
    plumbing is checked, not the accuracy."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    paths = lm.face_alignment_weight_paths()
    paths["detector"].parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(s3fd().state_dict(), paths["detector"])
    torch.save(FAN(4).state_dict(), paths["landmarks"])
    detector = lm.LandmarkDetector("auto")
    assert detector.backend == "face_alignment"
    faces = detector.detect(hopper_rgb, boxes=[hopper_face.box])
    assert len(faces) == 1 and faces[0].landmarks.shape == (68, 2)
    assert np.all(np.isfinite(faces[0].landmarks))


def test_unknown_backend_is_refused():
    with pytest.raises(lm.LandmarkError, match="unknown landmark backend"):
        lm.LandmarkDetector("mediapipe")
