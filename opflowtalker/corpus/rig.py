"""The rig: a portrait covered by a triangle mesh, cut along the line where the lips meet, with the
per-vertex basis displacements (jaw drop, lip lift, spread, rounding, press, tuck, blinks) that move it."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .portrait import JAW, LEFT_EYE, LOWER_INNER, RIGHT_EYE, UPPER_INNER, Portrait, crop_face

__all__ = ["RenderConfig", "FaceRig", "build_rig", "smoothstep"]


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


def smoothstep(x: np.ndarray) -> np.ndarray:
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
    """The rig of ``portrait`` at ``config.size``: the face cropped and prefiltered, a triangle mesh
    (a grid refined around the mouth and eyes, one row on the line where the lips meet, cut between
    the mouth corners), the landmarks located in it and the motion bases. One function, longer than
    most, because each step of the mesh reads what the previous ones measured on the cropped face
    (the lip line, the mouth's frame and size); the bases themselves are :func:`_motion_bases`."""
    S = config.size
    canvas, lm = crop_face(portrait.image, np.asarray(portrait.landmarks, np.float64), S, config.face_scale)
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
    head_w = head_w * smoothstep(border / (2.0 * cell))
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
    ramp = smoothstep((dv + 0.9) / 1.6)
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

