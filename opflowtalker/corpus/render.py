"""Photo-driven talking-face renderer with exact landmarks and exact optical flow.

A portrait is cropped to a face-centred square and covered by a triangle mesh: a regular
grid refined around the mouth and eyes, one of whose rows follows the line where the lips
meet.  Along that row between the mouth corners the mesh is cut (the vertices are doubled),
so the upper and lower lip can part.  Every frame moves the mesh vertices by a smooth field
built from a few per-vertex basis displacements (jaw drop, upper-lip lift, lip spread,
rounding, lip press, lower-lip tuck, blinks) plus a small head motion.  The image is the
source texture under the piecewise-affine map, so the warp between any two frames is known
exactly: a pixel inside a triangle keeps its barycentric coordinates.  That gives the
forward flow, the landmarks and the validity mask by construction.  Pixels no triangle
covers are the opening between the lips; they are painted (cavity, teeth) and are invalid
for flow.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from opflowtalker.corpus.viseme import frame_times

# iBUG 68-point layout
JAW = np.arange(0, 17)
LEFT_EYE = np.arange(36, 42)
RIGHT_EYE = np.arange(42, 48)
UPPER_INNER = (61, 62, 63)
LOWER_INNER = (67, 66, 65)


@dataclass(frozen=True)
class RenderConfig:
    size: int = 96
    face_scale: float = 1.8
    """Crop side over the jaw width (landmarks 0..16): LRS2-like framing, face plus margin."""
    grid_cells: int = 24
    jaw_gain: float = 0.8
    """Lower-lip drop at jaw = 1, in half mouth widths."""
    lift_gain: float = 0.16
    spread_gain: float = 0.2
    round_narrow: float = 0.3
    round_open: float = 0.28
    press_gain: float = 0.35
    tuck_gain: float = 0.45
    head_rot_deg: float = 2.0
    head_shift: float = 0.015
    """Head translation amplitude as a fraction of the frame size."""
    head_scale: float = 0.01
    head_freq: tuple[float, float] = (0.15, 0.8)
    """Range of the head motion's frequencies in Hz."""
    texture_blur: float = 0.7
    """Gaussian prefilter of the source texture, in output pixels."""
    blink_rate: float = 0.3
    """Blinks per second (Poisson, with a refractory gap)."""
    fps: float = 25.0


@dataclass
class Portrait:
    image: np.ndarray
    """(H, W, 3) uint8 RGB with a closed mouth."""
    landmarks: np.ndarray
    """(68, 2) float, x and y in pixels of ``image``."""


@dataclass
class RenderedClip:
    frames: np.ndarray
    """(T, S, S, 3) uint8 RGB."""
    landmarks: np.ndarray
    """(T, 68, 2) float32, exact positions of the source landmarks in every frame."""
    flow: np.ndarray
    """(T-1, S, S, 2) float32: flow[t, y, x] moves pixel (x, y) of frame t into frame t+1."""
    valid: np.ndarray
    """(T-1, S, S) bool: False where the flow carries no moved pixel (mouth interior, its
    anti-aliased rim, pixels whose target is painted or out of frame)."""
    mouth_open: np.ndarray
    """(T,) float32: distance between inner-lip landmarks 62 and 66 in pixels."""
    interior: np.ndarray
    """(T, S, S) bool: painted pixels (mouth interior and its rim)."""
    fps: float


# ---------------------------------------------------------------- landmarks of a photo


@functools.lru_cache(maxsize=1)
def _detector():
    from opflowtalker.landmarks import LandmarkDetector

    return LandmarkDetector("dlib")


def detect_landmarks(rgb: np.ndarray, pick: str = "left") -> np.ndarray | None:
    """68 dlib landmarks of one face in ``rgb``, or None if no face is found.

    ``pick`` chooses among several faces: "left" (multi-panel figures show the source in
    the left panel) or "largest".
    """
    faces = _detector().detect(rgb)
    if not faces:
        return None
    face = min(faces, key=lambda f: f.box[0]) if pick == "left" else faces[0]
    return face.landmarks.astype(np.float64)


def load_portrait(path: str, pick: str = "left") -> Portrait:
    """A photo and its landmarks.  In a figure with several faces side by side, the image is
    cut halfway to the neighbouring faces so the crop cannot reach into another panel."""
    from opflowtalker.video import read_image

    rgb = read_image(path)
    faces = _detector().detect(rgb)
    lm = detect_landmarks(rgb, pick=pick)
    if lm is None:
        raise ValueError(f"no face found in {path}")
    x_lo, x_hi = lm[:, 0].min(), lm[:, 0].max()
    left, right = 0, rgb.shape[1]
    for face in faces:
        l, r = face.box[0], face.box[2]
        if r < x_lo:
            left = max(left, int(0.5 * (r + x_lo)))
        if l > x_hi:
            right = min(right, int(0.5 * (l + x_hi)))
    lm = lm - np.array([left, 0.0])
    return Portrait(np.ascontiguousarray(rgb[:, left:right]), lm)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _falloff(d: np.ndarray, reach: float) -> np.ndarray:
    """1 for d <= 0, smoothly 0 at d >= reach."""
    u = np.clip(d / reach, 0.0, 1.0)
    return (1.0 - u * u) ** 3


def _outside_distance(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Distance from each point to the polygon, 0 inside."""
    poly = polygon.astype(np.float32).reshape(-1, 1, 2)
    d = np.array([cv2.pointPolygonTest(poly, (float(x), float(y)), True) for x, y in points])
    return np.maximum(-d, 0.0)


def _merge_lines(base: np.ndarray, fine: list[np.ndarray], required: list[float], lo: float, hi: float,
                 min_gap: float) -> np.ndarray:
    required = np.unique(np.clip(np.asarray(required + [lo, hi], dtype=np.float64), lo, hi))
    others = np.sort(np.concatenate([base] + fine))
    others = others[(others > lo) & (others < hi)]
    near_required = np.min(np.abs(others[:, None] - required[None, :]), axis=1) < min_gap
    others = others[~near_required]
    kept: list[float] = []
    for x in others:
        if not kept or x - kept[-1] >= min_gap:
            kept.append(x)
    return np.sort(np.concatenate([required, np.asarray(kept)]))


def _crop_box(lm: np.ndarray, face_scale: float) -> tuple[np.ndarray, float]:
    jaw_w = np.linalg.norm(lm[16] - lm[0])
    brow = lm[17:27, 1].min()
    chin = lm[8, 1]
    top = brow - 0.3 * (chin - brow)
    centre = np.array([lm[JAW, 0].mean(), 0.5 * (top + chin)])
    side = max(face_scale * jaw_w, 1.35 * (chin - top))
    return centre, side


def _clean_bounds(image: np.ndarray, lm: np.ndarray, box: tuple[float, float, float, float]) -> list[float]:
    """The region around the face free of figure panel borders and the photo's edge.

    Scans outward from the face for a row or column that is flat (a panel gap, a black
    bar): replicated or foreign pixels in the crop would be smeared by the warp.
    """
    gray = image.astype(np.float32).mean(axis=2)
    H, W = gray.shape
    fx0, fy0 = lm[:, 0].min(), lm[:, 1].min()
    fx1, fy1 = lm[:, 0].max(), lm[:, 1].max()
    x0, y0, x1, y1 = box
    # Flatness is judged along the face's own extent: a panel gap crosses it, while a row
    # reaching past the panel would mix in the next panel and never look flat.
    col_std = gray[int(max(fy0, 0)) : int(min(fy1, H))].std(axis=0)
    row_std = gray[:, int(max(fx0, 0)) : int(min(fx1, W))].std(axis=1)
    flat = 1.0  # panel gaps are flat to JPEG noise; dark hair or caps are not quite

    def scan(stds, start, stop, step, limit):
        for i in range(int(start), int(stop), step):
            if 0 <= i < limit and stds[i] < flat:
                return float(i - 3 * step)  # JPEG ringing spreads a border by a pixel or two
        return float(np.clip(stop - step, 0, limit - 1))

    left = scan(col_std, fx0, x0 - 1, -1, W)
    right = scan(col_std, fx1, x1 + 1, 1, W)
    top = scan(row_std, fy0, y0 - 1, -1, H)
    bottom = scan(row_std, fy1, y1 + 1, 1, H)
    return [max(left, 0.0), max(top, 0.0), min(right, W - 1.0), min(bottom, H - 1.0)]


def _crop(image: np.ndarray, lm: np.ndarray, size: int, face_scale: float) -> tuple[np.ndarray, np.ndarray]:
    centre, side = _crop_box(lm, face_scale)
    box = (centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2, centre[1] + side / 2)
    left, top, right, bottom = _clean_bounds(image, lm, box)
    # Shrink towards the face (never below a tight face box) and shift to fit the clean region.
    jaw_w = np.linalg.norm(lm[16] - lm[0])
    side = max(min(side, right - left + 1, bottom - top + 1), 1.25 * jaw_w)
    centre = np.array([np.clip(centre[0], left + side / 2, max(right - side / 2, left + side / 2)),
                       np.clip(centre[1], top + side / 2, max(bottom - side / 2, top + side / 2))])
    side_i = int(round(side))
    x0, y0 = (np.round(centre - side_i / 2.0)).astype(int)
    pad = side_i
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    crop = padded[y0 + pad : y0 + pad + side_i, x0 + pad : x0 + pad + side_i]
    interp = cv2.INTER_AREA if side_i >= size else cv2.INTER_CUBIC
    canvas = cv2.resize(crop, (size, size), interpolation=interp)
    scale = size / side_i
    lm_out = (lm - np.array([x0, y0]) + 0.5) * scale - 0.5
    return canvas, lm_out


# ---------------------------------------------------------------- the rig


@dataclass
class FaceRig:
    """A portrait prepared for one output size: texture, mesh and motion bases."""

    config: RenderConfig
    canvas: np.ndarray  # (S, S, 3) uint8 source texture at output size
    landmarks: np.ndarray  # (68, 2) source landmarks in canvas pixels
    points: np.ndarray  # (N, 2) mesh vertices in the source
    tris: np.ndarray  # (M, 3) int32
    bases: dict[str, np.ndarray]  # name -> (N, 2) displacement per unit of the track
    head_weight: np.ndarray  # (N,)
    head_centre: np.ndarray  # (2,)
    lm_tri: np.ndarray  # (68,) triangle holding each landmark
    lm_bary: np.ndarray  # (68, 3)
    slit_upper: np.ndarray  # vertex ids along the upper lip edge, corner to corner
    slit_lower: np.ndarray  # same positions on the lower lip
    mouth_halfwidth: float
    mouth_axes: np.ndarray  # (2, 2): rows = along the mouth, down the face
    teeth_rgb: np.ndarray  # (3,) float


def build_rig(portrait: Portrait, config: RenderConfig = RenderConfig()) -> FaceRig:
    S = config.size
    canvas, lm = _crop(portrait.image, np.asarray(portrait.landmarks, np.float64), S, config.face_scale)
    if config.texture_blur > 0:
        # A texture at full output sharpness aliases as the mesh slides it by sub-pixel amounts
        # (a shimmer no flow explains); a slight prefilter, like a camera's optics, removes it.
        canvas = cv2.GaussianBlur(canvas, (0, 0), config.texture_blur)

    a, b = lm[60], lm[64]
    hw = 0.5 * np.linalg.norm(b - a)
    ex = (b - a) / (2.0 * hw)
    ey = np.array([-ex[1], ex[0]])  # down the face in image coordinates (y grows down)
    if ey[1] < 0:
        ey = -ey
    m0 = 0.5 * (a + b)
    line_pts = np.array([a, *(0.5 * (lm[u] + lm[l]) for u, l in zip(UPPER_INNER, LOWER_INNER)), b])
    eye_l, eye_r = lm[LEFT_EYE], lm[RIGHT_EYE]
    eye_w = 0.5 * (np.linalg.norm(lm[39] - lm[36]) + np.linalg.norm(lm[45] - lm[42]))

    # --- grid lines: uniform, refined around the mouth and eyes; the lip landmarks and the
    # corners sit exactly on lines so the cut follows the lip line through them.
    lo, hi = -0.5, S - 0.5
    cell = S / config.grid_cells
    base = np.linspace(lo, hi, config.grid_cells + 1)
    mouth_step = hw / 7.0
    eye_step = eye_w / 7.0
    fine_x = [np.arange(a[0] - 0.6 * hw, b[0] + 0.6 * hw, mouth_step)]
    fine_y = [np.arange(m0[1] - 1.0 * hw, m0[1] + 1.0 * hw, mouth_step)]
    for eye in (eye_l, eye_r):
        fine_x.append(np.arange(eye[:, 0].min() - 0.3 * eye_w, eye[:, 0].max() + 0.3 * eye_w, eye_step))
        fine_y.append(np.arange(eye[:, 1].mean() - 0.9 * eye_w, eye[:, 1].mean() + 0.7 * eye_w, eye_step))
    xs = _merge_lines(base, fine_x, list(line_pts[:, 0]), lo, hi, 0.45 * min(mouth_step, eye_step))
    y0 = float(line_pts[2, 1])  # the row that becomes the lip line
    # Rows through both lids of both eyes, so the blink squeezes exactly between them.
    lids = [lm[[37, 38]][:, 1].mean(), lm[[40, 41]][:, 1].mean(), lm[[43, 44]][:, 1].mean(), lm[[46, 47]][:, 1].mean()]
    ys = _merge_lines(base, fine_y, [y0] + lids, lo, hi, 0.45 * min(mouth_step, eye_step))
    nx, ny = len(xs), len(ys)
    j0 = int(np.argmin(np.abs(ys - y0)))

    gx, gy = np.meshgrid(xs, ys)
    # Bend the rows near the lip line so row j0 follows the (piecewise-linear) lip line.
    lip_y = np.interp(gx, line_pts[:, 0], line_pts[:, 1])
    beyond = np.maximum(np.maximum(a[0] - gx, gx - b[0]), 0.0)
    bend = (lip_y - y0) * _falloff(np.abs(gy - y0), 1.2 * hw) * _falloff(beyond, 1.0 * hw)
    gy = gy + bend
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)

    def vid(i, j):
        return j * nx + i

    inner_cols = np.nonzero((xs > a[0] + 1e-9) & (xs < b[0] - 1e-9))[0]
    n0 = len(points)
    lower_copy = {int(i): n0 + k for k, i in enumerate(inner_cols)}
    points = np.concatenate([points, points[[vid(i, j0) for i in inner_cols]]])
    is_lower = np.zeros(len(points), bool)
    is_lower[n0:] = True

    tris = []
    for j in range(ny - 1):
        for i in range(nx - 1):
            v00, v10, v01, v11 = vid(i, j), vid(i + 1, j), vid(i, j + 1), vid(i + 1, j + 1)
            if j == j0:
                v00 = lower_copy.get(i, v00)
                v10 = lower_copy.get(i + 1, v10)
            tris.append((v00, v10, v11))
            tris.append((v00, v11, v01))
    tris = np.asarray(tris, np.int32)
    rows = np.repeat(np.arange(ny), nx)
    is_lower[:n0] = rows > j0

    ia, ib = int(np.argmin(np.abs(xs - a[0]))), int(np.argmin(np.abs(xs - b[0])))
    slit_cols = np.arange(ia, ib + 1)
    slit_upper = np.array([vid(i, j0) for i in slit_cols])
    slit_lower = np.array([lower_copy.get(int(i), vid(i, j0)) for i in slit_cols])

    bases = _motion_bases(points, is_lower, lm, line_pts, m0, ex, ey, hw, eye_w, config)

    # --- head weight: 1 on the head, fading through hair, neck and background to 0 at the
    # frame border, so the background is never torn and no frame edge is revealed.
    chin_h = lm[8, 1] - lm[17:27, 1].mean()
    forehead = lm[26:16:-1] - ey * 0.55 * chin_h
    hull = np.concatenate([lm[JAW], forehead])
    jaw_w = np.linalg.norm(lm[16] - lm[0])
    head_w = _falloff(_outside_distance(points, hull), 0.3 * jaw_w)
    border = np.min(np.stack([points[:, 0] - lo, hi - points[:, 0], points[:, 1] - lo, hi - points[:, 1]]), axis=0)
    head_w = head_w * _smoothstep(border / (2.0 * cell))
    head_centre = lm.mean(axis=0)

    lm_tri, lm_bary = _locate_landmarks(lm, points, tris, slit_upper)

    skin = canvas[np.clip(np.round(lm[[1, 2, 3, 13, 14, 15, 29, 30, 31, 35]]).astype(int), 0, S - 1)[:, 1],
                  np.clip(np.round(lm[[1, 2, 3, 13, 14, 15, 29, 30, 31, 35]]).astype(int), 0, S - 1)[:, 0]]
    lum = float(np.median(skin.astype(np.float64) @ np.array([0.299, 0.587, 0.114])))
    teeth_rgb = np.array([214.0, 206.0, 190.0]) * np.clip(lum / 160.0, 0.6, 1.0)

    return FaceRig(
        config=config, canvas=canvas, landmarks=lm, points=points, tris=tris, bases=bases,
        head_weight=head_w, head_centre=head_centre, lm_tri=lm_tri, lm_bary=lm_bary,
        slit_upper=slit_upper, slit_lower=slit_lower, mouth_halfwidth=float(hw),
        mouth_axes=np.stack([ex, ey]), teeth_rgb=teeth_rgb,
    )


def _motion_bases(points, is_lower, lm, line_pts, m0, ex, ey, hw, eye_w, cfg: RenderConfig):
    rel = points - m0
    u = rel @ ex / hw
    v = rel @ ey / hw
    lu = (line_pts - m0) @ ex / hw
    lv = (line_pts - m0) @ ey / hw
    dv = v - np.interp(u, lu, lv)  # signed distance below the lip line, half mouth widths
    inside = np.clip(1.0 - u * u, 0.0, None)
    g = inside ** 1.5  # gap profile along the mouth: rounder than a lens, 0 at the corners
    lower = is_lower.astype(np.float64)
    upper = 1.0 - lower

    # Jaw drop: everything below the lip line follows the jaw; the upper lip stays and the
    # cheeks at mouth height stretch.  Near the cut the weight jumps from 0 (upper lip) to
    # 1 (lower lip); beyond the corners the two sides agree, so the mesh stays continuous.
    ramp = _smoothstep((dv + 0.9) / 1.6)
    near = g * np.exp(-((dv / 0.6) ** 2))
    w = np.where(is_lower, ramp + (1.0 - ramp) * near, ramp * (1.0 - near))
    jaw_w = np.linalg.norm(lm[16] - lm[0])
    uf = (points - 0.5 * (lm[0] + lm[16])) @ ex / (0.5 * jaw_w)
    depth = np.sqrt(np.clip(1.0 - uf * uf, 0.0, 1.0))  # the chin is far from the hinge, the jaw angle is not
    chin_h = lm[8, 1] - lm[17:27, 1].mean()
    skin = _falloff(_outside_distance(points, lm[JAW]), 0.28 * chin_h)
    jaw = (cfg.jaw_gain * hw) * (w * depth * skin)[:, None] * ey

    lift_prof = inside * np.exp(-((np.minimum(dv, 0.0) / 0.7) ** 2))
    lift = -(cfg.lift_gain * hw) * (upper * lift_prof)[:, None] * ey

    # Spread moves the corners along the mouth, fading beyond them and away from the line.
    along = u * np.exp(-(u * u) / (2 * 1.2**2)) / np.exp(-1.0 / (2 * 1.2**2))
    env = np.exp(-((dv / 1.1) ** 2)) * skin
    spread = (cfg.spread_gain * hw) * (along * env)[:, None] * ex

    narrow = -(cfg.round_narrow / cfg.spread_gain) * spread
    lip_env = inside * np.exp(-((dv / 0.55) ** 2))
    round_open = (0.5 * cfg.round_open * hw) * ((lower - upper) * lip_env)[:, None] * ey

    # Press and tuck thin the lips towards the cut; both vanish on it, so they never overlap.
    thin = -dv * np.exp(-((dv / 0.35) ** 2)) * inside
    press = (cfg.press_gain * hw) * thin[:, None] * ey
    tuck = (cfg.tuck_gain * hw) * (lower * thin)[:, None] * ey

    blink = np.zeros_like(points)
    for eye in (lm[LEFT_EYE], lm[RIGHT_EYE]):
        blink += _blink_basis(points, eye)

    return {"jaw": jaw, "lift": lift, "spread": spread, "round": narrow, "round_open": round_open,
            "press": press, "tuck": tuck, "blink": blink}


def _blink_basis(points: np.ndarray, eye: np.ndarray) -> np.ndarray:
    """Upper lid down to the lower lid (which rises a little); the eyeball is squeezed between
    them.  The map along the lid normal is monotone, so the mesh never folds."""
    c = eye.mean(axis=0)
    ax = eye[3] - eye[0]
    hw = 0.5 * np.linalg.norm(ax)
    ax = ax / (2 * hw)
    down = np.array([-ax[1], ax[0]])
    if down[1] < 0:
        down = -down
    hg = max(0.25 * (np.dot(eye[5] - eye[1], down) + np.dot(eye[4] - eye[2], down)), 0.12 * hw)
    rel = points - c
    ue = rel @ ax / hw
    ve = rel @ down
    knots = [-hg - 0.8 * hw, -hg, hg, hg + 0.6 * hw]
    shift = np.interp(ve, knots, [0.0, 1.75 * hg, -0.15 * hg, 0.0])
    taper = np.sqrt(np.clip(1.0 - ue * ue, 0.0, 1.0))
    return (taper * shift)[:, None] * down


def _locate_landmarks(lm, points, tris, slit_upper):
    # Inner-lip landmarks lie on the cut: nudge them to their own lip so they follow it.
    # dlib rarely puts both lips exactly on the cut, so clamp each to its side of it.
    lm = lm.copy()
    line = points[slit_upper]
    for i in UPPER_INNER:
        lm[i, 1] = min(lm[i, 1], np.interp(lm[i, 0], line[:, 0], line[:, 1]) - 1e-3)
    for i in LOWER_INNER:
        lm[i, 1] = max(lm[i, 1], np.interp(lm[i, 0], line[:, 0], line[:, 1]) + 1e-3)
    tri_pts = points[tris]  # (M, 3, 2)
    out_t = np.zeros(68, np.int64)
    out_b = np.zeros((68, 3))
    for k, p in enumerate(lm):
        bary = _barycentric(tri_pts, p[None, :])[:, 0]  # (M, 3)
        score = bary.min(axis=1)
        t = int(np.argmax(score))
        out_t[k], out_b[k] = t, bary[t]
    return out_t, out_b


def _barycentric(tri_pts: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Barycentric coordinates of points q (Q, 2) in triangles (M, 3, 2): (M, Q, 3)."""
    p0 = tri_pts[:, 0]
    e1 = tri_pts[:, 1] - p0
    e2 = tri_pts[:, 2] - p0
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    det = np.where(np.abs(det) < 1e-12, 1e-12, det)
    d = q[None, :, :] - p0[:, None, :]
    l1 = (d[..., 0] * e2[:, None, 1] - d[..., 1] * e2[:, None, 0]) / det[:, None]
    l2 = (e1[:, None, 0] * d[..., 1] - e1[:, None, 1] * d[..., 0]) / det[:, None]
    return np.stack([1.0 - l1 - l2, l1, l2], axis=-1)


# ---------------------------------------------------------------- motion over time


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, n: int, freq: tuple[float, float]) -> np.ndarray:
    """n independent smooth signals with unit-ish amplitude: a few slow sinusoids each."""
    out = np.zeros((n, t.size))
    for k in range(n):
        f = rng.uniform(freq[0], freq[1], 3)
        ph = rng.uniform(0, 2 * np.pi, 3)
        amp = rng.uniform(0.5, 1.0, 3)
        out[k] = (amp[:, None] * np.sin(2 * np.pi * f[:, None] * t[None] + ph[:, None])).sum(0) / amp.sum()
    return out


def blink_track(rng: np.random.Generator, n_frames: int, fps: float, rate: float) -> np.ndarray:
    t = frame_times(n_frames, fps)
    out = np.zeros(n_frames)
    if rate <= 0 or n_frames == 0:
        return out
    s = rng.uniform(0.2, 1.0 / rate)
    while s < t[-1] + 0.5:
        close, hold, reopen = 0.08, 0.04, 0.13
        x = t - s
        rise = _smoothstep(x / close)
        fall = 1.0 - _smoothstep((x - close - hold) / reopen)
        out = np.maximum(out, np.where(x < close + hold, rise, fall) * (x >= 0))
        s += close + hold + reopen + 1.0 + rng.exponential(1.0 / rate)
    return out


def vertex_tracks(rig: FaceRig, tracks: dict[str, np.ndarray], seed: int) -> np.ndarray:
    """Mesh vertex positions for every frame, (T, N, 2)."""
    cfg = rig.config
    n = len(next(iter(tracks.values())))
    rng = np.random.default_rng(seed)
    closure = np.asarray(tracks.get("closure", np.zeros(n)), np.float64)
    coef = {
        "jaw": tracks["jaw"],
        "lift": tracks["lift"],
        "spread": tracks["spread"],
        "round": tracks["round"],
        "round_open": np.asarray(tracks["round"]) * (1.0 - closure),
        "press": closure,
        "tuck": tracks["tuck"],
        "blink": blink_track(rng, n, cfg.fps, cfg.blink_rate),
    }
    V = np.broadcast_to(rig.points, (n,) + rig.points.shape).copy()
    for name, basis in rig.bases.items():
        V += np.asarray(coef[name], np.float64)[:, None, None] * basis[None]

    t = frame_times(n, cfg.fps)
    rot, tx, ty, sc = _smooth_noise(rng, t, 4, cfg.head_freq)
    theta = np.deg2rad(cfg.head_rot_deg) * rot
    scale = 1.0 + cfg.head_scale * sc
    shift = cfg.head_shift * cfg.size * np.stack([tx, ty], axis=1)
    rel = rig.points - rig.head_centre
    cos, sin = np.cos(theta) * scale, np.sin(theta) * scale
    moved = np.stack([cos[:, None] * rel[:, 0] - sin[:, None] * rel[:, 1],
                      sin[:, None] * rel[:, 0] + cos[:, None] * rel[:, 1]], axis=-1)
    head = moved + shift[:, None, :] - rel
    V += rig.head_weight[None, :, None] * head
    return V


# ---------------------------------------------------------------- rasterisation


def rasterise(V: np.ndarray, tris: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Which triangle covers each pixel centre, and where in it.

    Returns (tri, bary): (S, S) int32 with -1 where uncovered, and (S, S, 3) float64.
    Vectorised over the pixels of every triangle's bounding box.
    """
    tp = V[tris]  # (M, 3, 2)
    lo = np.ceil(tp.min(axis=1) - 1e-9).astype(np.int64)
    hi = np.floor(tp.max(axis=1) + 1e-9).astype(np.int64)
    lo = np.clip(lo, 0, size - 1)
    hi = np.clip(hi, -1, size - 1)
    w = np.maximum(hi[:, 0] - lo[:, 0] + 1, 0)
    h = np.maximum(hi[:, 1] - lo[:, 1] + 1, 0)
    n = w * h
    tri_id = np.repeat(np.arange(len(tris)), n)
    start = np.repeat(np.cumsum(n) - n, n)
    k = np.arange(tri_id.size) - start
    wk = w[tri_id]
    px = lo[tri_id, 0] + k % wk
    py = lo[tri_id, 1] + k // wk

    p0 = tp[:, 0]
    e1 = tp[:, 1] - p0
    e2 = tp[:, 2] - p0
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    inv = 1.0 / np.where(np.abs(det) < 1e-12, 1e-12, det)
    dx = px - p0[tri_id, 0]
    dy = py - p0[tri_id, 1]
    l1 = (dx * e2[tri_id, 1] - dy * e2[tri_id, 0]) * inv[tri_id]
    l2 = (e1[tri_id, 0] * dy - e1[tri_id, 1] * dx) * inv[tri_id]
    l0 = 1.0 - l1 - l2
    eps = -1e-7
    inside = (l0 >= eps) & (l1 >= eps) & (l2 >= eps)

    tri_map = np.full((size, size), -1, np.int32)
    bary = np.zeros((size, size, 3))
    flat = (py * size + px)[inside]
    tri_map.ravel()[flat] = tri_id[inside]
    bary.reshape(-1, 3)[flat] = np.stack([l0[inside], l1[inside], l2[inside]], axis=1)
    return tri_map, bary


def _interp_vertices(values: np.ndarray, tris: np.ndarray, tri_map: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Barycentric interpolation of per-vertex 2-vectors at covered pixels, (S, S, 2)."""
    idx = tris[np.maximum(tri_map, 0)]  # (S, S, 3)
    return np.einsum("hwk,hwkc->hwc", bary, values[idx])


# ---------------------------------------------------------------- mouth interior


def _paint_mouth(frame: np.ndarray, hole: np.ndarray, rig: FaceRig, V: np.ndarray, jaw: float) -> np.ndarray:
    """Paint the opening between the lips; returns the painted (alpha > 0) mask."""
    up = V[rig.slit_upper]
    lo = V[rig.slit_lower]
    hw = rig.mouth_halfwidth
    # A 1-px rim around the hole is blended, which hides the staircase of the lip edge.
    rim = cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    ys, xs = np.nonzero(rim)
    if ys.size == 0:
        return rim
    xf, yf = xs.astype(np.float64), ys.astype(np.float64)
    y_up = np.interp(xf, up[:, 0], up[:, 1])
    y_lo = np.interp(xf, lo[:, 0], lo[:, 1])
    centre_x = 0.5 * (up[0, 0] + up[-1, 0])
    half = max(0.5 * (up[-1, 0] - up[0, 0]), 1e-6)
    u = (xf - centre_x) / half
    gap = np.maximum(y_lo - y_up, 1e-6)
    d_up = yf - y_up
    d_lo = y_lo - yf

    # Upper teeth: a band under the upper lip; the arch makes them recede at the sides.
    teeth_h = 0.22 * hw * (1.0 - 0.45 * u * u)
    cavity = np.array([52.0, 18.0, 22.0])
    tongue = np.array([150.0, 62.0, 66.0])
    depth = np.clip(np.minimum(d_up, d_lo) / (0.25 * hw), 0.0, 1.0)
    col = cavity[None] * (1.0 - 0.45 * depth[:, None])
    tongue_w = _smoothstep((yf - (y_up + 0.6 * gap)) / (0.4 * gap + 1e-6)) * np.clip(jaw * 1.2, 0, 0.55)
    tongue_w *= np.clip(1.0 - u * u, 0, 1)
    col = col * (1 - tongue_w[:, None]) + tongue[None] * 0.55 * tongue_w[:, None]
    teeth_alpha = _smoothstep((teeth_h - d_up) / 0.8 + 0.5) * _smoothstep((0.92 - np.abs(u)) / 0.12)
    shade = (1.0 - 0.35 * u * u - 0.25 * np.clip(1.0 - d_up / (0.12 * hw + 1e-6), 0, 1))[:, None]
    col = col * (1 - teeth_alpha[:, None]) + (rig.teeth_rgb[None] * shade) * teeth_alpha[:, None]
    lower_teeth = _smoothstep((0.16 * hw * np.clip(jaw - 0.4, 0, 1) / 0.6 - d_lo) / 0.8 + 0.5)
    lower_teeth *= _smoothstep((0.7 - np.abs(u)) / 0.15) * (jaw > 0.4)
    col = col * (1 - lower_teeth[:, None]) + (rig.teeth_rgb[None] * 0.8) * lower_teeth[:, None]

    alpha = np.where(hole[ys, xs], 1.0, 0.5 * np.clip(gap / 1.0, 0, 1))
    cur = frame[ys, xs].astype(np.float64)
    frame[ys, xs] = np.clip(np.round(cur * (1 - alpha[:, None]) + col * alpha[:, None]), 0, 255).astype(np.uint8)
    return rim


# ---------------------------------------------------------------- the clip


def render(rig: FaceRig, tracks: dict[str, np.ndarray], seed: int = 0) -> RenderedClip:
    """Render one clip: frames, exact landmarks, exact forward flow and its validity."""
    S = rig.config.size
    V_all = vertex_tracks(rig, tracks, seed)
    T = V_all.shape[0]
    frames = np.zeros((T, S, S, 3), np.uint8)
    interior = np.zeros((T, S, S), bool)
    flow = np.zeros((max(T - 1, 0), S, S, 2), np.float32)
    valid = np.zeros((max(T - 1, 0), S, S), bool)
    grid = np.stack(np.meshgrid(np.arange(S, dtype=np.float64), np.arange(S, dtype=np.float64)), axis=-1)
    jaw = np.asarray(tracks["jaw"], np.float64)

    prev = None
    for t in range(T):
        tri_map, bary = rasterise(V_all[t], rig.tris, S)
        src = _interp_vertices(rig.points, rig.tris, tri_map, bary).astype(np.float32)
        frame = cv2.remap(rig.canvas, src[..., 0], src[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        hole = tri_map < 0
        interior[t] = _paint_mouth(frame, hole, rig, V_all[t], float(jaw[t])) if hole.any() else hole
        frames[t] = frame
        if prev is not None:
            p_map, p_bary = prev
            target = _interp_vertices(V_all[t], rig.tris, p_map, p_bary)
            f = (target - grid).astype(np.float32)
            f[p_map < 0] = 0.0  # painted pixels did not move from anywhere
            flow[t - 1] = f
            # A target must land among moved pixels of the next frame: bilinear sampling
            # there reads no painted pixel, and it stays inside the frame.
            solid = (~interior[t]).astype(np.uint8)
            solid = cv2.erode(solid, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
            tx, ty = np.round(target[..., 0]).astype(np.int64), np.round(target[..., 1]).astype(np.int64)
            inframe = (target[..., 0] >= 0) & (target[..., 0] <= S - 1) & (target[..., 1] >= 0) & (target[..., 1] <= S - 1)
            ok = np.zeros((S, S), bool)
            ok[inframe] = solid[ty[inframe], tx[inframe]].astype(bool)
            valid[t - 1] = ok & ~interior[t - 1]
        prev = (tri_map, bary)

    lm = np.einsum("lk,tlkc->tlc", rig.lm_bary, V_all[:, rig.tris[rig.lm_tri]]).astype(np.float32)
    mouth_open = np.linalg.norm(lm[:, 66] - lm[:, 62], axis=1).astype(np.float32)
    return RenderedClip(frames=frames, landmarks=lm, flow=flow, valid=valid, mouth_open=mouth_open,
                        interior=interior, fps=rig.config.fps)


def render_clip(portrait: Portrait, tracks: dict[str, np.ndarray], seed: int = 0,
                config: RenderConfig = RenderConfig()) -> RenderedClip:
    return render(build_rig(portrait, config), tracks, seed)
