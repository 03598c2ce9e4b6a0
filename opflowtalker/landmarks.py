"""Face detection and 68-point iBUG landmarks behind one interface, with two backends.

* ``face_alignment``: the FAN network the paper uses (S3FD detector + 2D-FAN-4). Its weights are
  public downloads, which this project never fetches at run time: the backend is available when
  the two files are already in the torch hub cache (``$TORCH_HOME/hub/checkpoints``), and each is
  read with weights-only unpickling before face-alignment opens it.
* ``dlib``: dlib's HOG detector and 68-point shape predictor from the files that the
  ``face-recognition-models`` package ships, so it works offline anywhere. This is the default.

``LandmarkDetector("auto")`` takes face-alignment when its weights are there and otherwise says so
in one line and uses dlib. Landmark layout (iBUG 300-W): jaw 0-16, brows 17-26, nose 27-35,
eyes 36-47, mouth 48-67 (outer lip 48-59, inner lip 60-67).
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import OpFlowTalkerError

__all__ = [
    "Face",
    "LandmarkDetector",
    "LandmarkError",
    "MOUTH",
    "INNER_LIP",
    "JAW",
    "NOSE",
    "EYES",
    "eye_to_mouth_distance",
    "face_alignment_weight_paths",
    "dlib_model_path",
    "mouth_mask",
    "mouth_masks",
    "face_mask",
    "lip_gap",
]

log = logging.getLogger(__name__)

JAW = slice(0, 17)
NOSE = slice(27, 36)
EYES = slice(36, 48)
MOUTH = slice(48, 68)
OUTER_LIP = slice(48, 60)
INNER_LIP = slice(60, 68)


def eye_to_mouth_distance(landmarks: np.ndarray) -> float:
    """The median over frames of the distance between the eyes' centre and the mouth's centre in
    (T, 68, 2) landmarks: the unit in which the lip reader's shapes and the syllables' flow are
    measured, so that faces of any size in the crop compare."""
    return float(np.median(np.linalg.norm(landmarks[:, MOUTH].mean(axis=1) - landmarks[:, EYES].mean(axis=1), axis=1)))

# File names that face-alignment 1.5 gives its downloads in the torch hub cache.
FACE_ALIGNMENT_FILES = {
    "detector": "s3fd-619a316812.pth",
    "landmarks": "2DFAN4-11f355bf06.pth.tar",
}


class LandmarkError(OpFlowTalkerError, RuntimeError):
    """A landmark backend that cannot run here; the message is one sentence for the user."""


@dataclass(frozen=True)
class Face:
    """One detected face: box (x0, y0, x1, y1) in pixels and (68, 2) landmarks as (x, y)."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def face_alignment_weight_paths() -> dict[str, Path]:
    import torch

    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    return {key: checkpoints / name for key, name in FACE_ALIGNMENT_FILES.items()}


def dlib_model_path(name: str = "shape_predictor_68_face_landmarks.dat") -> Path:
    """Path of a model file shipped by ``face-recognition-models`` (located without importing it,
    because its ``__init__`` needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise LandmarkError("the dlib backend needs the face-recognition-models package (pip install it)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise LandmarkError(f"face-recognition-models does not contain {name}")
    return path


class _DlibBackend:
    name = "dlib"

    def __init__(self, upsample: int = 1):
        import dlib

        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(dlib_model_path()))
        self._dlib = dlib
        self.upsample = upsample

    def detect(self, image: np.ndarray, boxes=None) -> list[Face]:
        dlib = self._dlib
        if boxes is None:
            rects = self._detector(image, self.upsample)
        else:
            rects = [dlib.rectangle(*(int(round(v)) for v in box)) for box in boxes]
        faces = []
        for rect in rects:
            shape = self._predictor(image, rect)
            pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
            faces.append(Face((rect.left(), rect.top(), rect.right(), rect.bottom()), pts))
        return faces


def _check_weights(paths) -> None:
    """Refuse a weight file that holds more than tensors before face-alignment reads it.

    face-alignment unpickles the two files itself, and whether it does so weights-only depends on
    its version and on what it loads; each file is therefore read here first with weights-only
    unpickling, so one that would run code when unpickled is refused, in one line, unexecuted.
    """
    from .models.checkpoints import CheckpointError, load_reference_state_dict

    for path in paths:
        try:
            load_reference_state_dict(path)
        except CheckpointError as error:
            raise LandmarkError(f"face-alignment weights: {error}") from None


class _FaceAlignmentBackend:
    name = "face_alignment"

    def __init__(self, device: str = "cpu"):
        paths = face_alignment_weight_paths()
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise LandmarkError(
                "face-alignment weights are not available offline (missing "
                + ", ".join(missing) + ")"
            )
        try:
            import face_alignment
        except ImportError:
            raise LandmarkError("the face_alignment backend needs the face-alignment package") from None
        _check_weights(paths.values())
        self._fa = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D, device=device, flip_input=False, face_detector="sfd",
            face_detector_kwargs={"path_to_detector": str(paths["detector"])}, compile=False,
        )

    def detect(self, image: np.ndarray, boxes=None) -> list[Face]:
        detected = None if boxes is None else [np.array([*box, 1.0], dtype=np.float64) for box in boxes]
        result = self._fa.get_landmarks_from_image(image, detected_faces=detected, return_bboxes=True)
        points, _, bboxes = result
        if points is None:
            return []
        return [
            Face(tuple(float(v) for v in box[:4]), np.asarray(pts[:, :2], dtype=np.float32))
            for pts, box in zip(points, bboxes)
        ]


_BACKENDS = {"dlib": _DlibBackend, "face_alignment": _FaceAlignmentBackend}


class LandmarkDetector:
    """Detect faces and their 68 landmarks in RGB uint8 images.

    ``backend`` is ``"dlib"``, ``"face_alignment"`` or ``"auto"`` (face-alignment when its
    weights are cached, else dlib, after one warning line saying why).
    """

    def __init__(self, backend: str = "dlib", device: str = "cpu"):
        if backend not in (*_BACKENDS, "auto"):
            raise LandmarkError(f"unknown landmark backend {backend!r}; choose dlib, face_alignment or auto")
        if backend == "auto":
            try:
                self._impl = _FaceAlignmentBackend(device)
            except LandmarkError as why:
                log.warning("%s; using the dlib backend", why)
                self._impl = _DlibBackend()
        elif backend == "face_alignment":
            self._impl = _FaceAlignmentBackend(device)
        else:
            self._impl = _DlibBackend()

    @property
    def backend(self) -> str:
        return self._impl.name

    def detect(self, image: np.ndarray, boxes=None) -> list[Face]:
        """All faces in ``image``, largest first. ``boxes`` skips detection and fits landmarks in them."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
        return sorted(self._impl.detect(image, boxes), key=lambda f: -f.area)

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """(68, 2) landmarks of the largest face, or None when there is no face."""
        faces = self.detect(image)
        return faces[0].landmarks if faces else None


def _polygon_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape[:2], dtype=np.uint8)
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


def mouth_mask(landmarks: np.ndarray, shape: tuple[int, int], dilate: int = 0) -> np.ndarray:
    """Boolean (H, W) mask of the mouth: the hull of points 48-67, grown by ``dilate`` pixels."""
    mask = _polygon_mask(np.asarray(landmarks)[MOUTH], shape)
    if dilate > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
        mask = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
    return mask


def mouth_masks(landmarks: np.ndarray, size: int | tuple[int, int], dilate: int = 0) -> np.ndarray:
    """Boolean mouth masks (..., H, W), one per frame, from landmarks (..., 68, 2) in crop pixels:
    the hull of the lips (points 48-67) grown by ``dilate`` pixels, so that the mouth term also sees
    the skin the lips pull on."""
    lm = np.asarray(landmarks)
    if lm.shape[-2:] != (68, 2):
        raise ValueError(f"expected landmarks (..., 68, 2), got shape {lm.shape}")
    shape = (size, size) if isinstance(size, int) else tuple(size)
    flat = lm.reshape(-1, 68, 2)
    masks = np.stack([mouth_mask(points, shape, dilate=dilate) for points in flat]) if len(flat) else \
        np.zeros((0, *shape), dtype=bool)
    return masks.reshape(lm.shape[:-2] + shape)


def face_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) mask of the face: the hull of the jaw line and the brows raised to the
    forehead (the brows mirrored above themselves by a third of the brow-to-chin height)."""
    pts = np.asarray(landmarks, dtype=np.float32)
    brows = pts[17:27].copy()
    lift = (pts[8, 1] - brows[:, 1].mean()) / 3.0
    brows[:, 1] -= lift
    return _polygon_mask(np.concatenate([pts[JAW], brows]), shape)


def lip_gap(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip opening in pixels: mean vertical distance of inner-lip pairs 61-67, 62-66, 63-65.

    Works on (68, 2) or (..., 68, 2) arrays.
    """
    pts = np.asarray(landmarks, dtype=np.float32)
    upper, lower = pts[..., [61, 62, 63], 1], pts[..., [67, 66, 65], 1]
    return (lower - upper).mean(axis=-1)
