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

from dataclasses import dataclass

import cv2
import numpy as np

from .portrait import Portrait, detect_landmarks, load_portrait
from .rig import FaceRig, RenderConfig, build_rig, smoothstep
from .viseme import frame_times

__all__ = ["RenderConfig", "Portrait", "RenderedClip", "FaceRig", "detect_landmarks", "load_portrait", "build_rig",
           "blink_track", "vertex_tracks", "rasterise", "render", "render_clip"]


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
        rise = smoothstep(x / close)
        fall = 1.0 - smoothstep((x - close - hold) / reopen)
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
    tongue_w = smoothstep((yf - (y_up + 0.6 * gap)) / (0.4 * gap + 1e-6)) * np.clip(jaw * 1.2, 0, 0.55)
    tongue_w *= np.clip(1.0 - u * u, 0, 1)
    col = col * (1 - tongue_w[:, None]) + tongue[None] * 0.55 * tongue_w[:, None]
    teeth_alpha = smoothstep((teeth_h - d_up) / 0.8 + 0.5) * smoothstep((0.92 - np.abs(u)) / 0.12)
    shade = (1.0 - 0.35 * u * u - 0.25 * np.clip(1.0 - d_up / (0.12 * hw + 1e-6), 0, 1))[:, None]
    col = col * (1 - teeth_alpha[:, None]) + (rig.teeth_rgb[None] * shade) * teeth_alpha[:, None]
    lower_teeth = smoothstep((0.16 * hw * np.clip(jaw - 0.4, 0, 1) / 0.6 - d_lo) / 0.8 + 0.5)
    lower_teeth *= smoothstep((0.7 - np.abs(u)) / 0.15) * (jaw > 0.4)
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
