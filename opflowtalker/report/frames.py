"""Frames as the book shows them: the stretch where the mouth works, Figure-3-style strips with the
real frames on top, and clips as ``<video>`` elements that play in every browser (WebM first)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from .comparisons import ReportError

__all__ = ["moving_stretch", "strips_of_clip", "frame_strip_rows", "video_html"]


def moving_stretch(real: np.ndarray, n_frames: int) -> int:
    """The first frame of the ``n_frames`` consecutive real frames (T, H, W, 3) whose lower halves
    change the most from frame to frame: where the strips show the mouth at work."""
    lower = np.asarray(real[:, real.shape[1] // 2:], dtype=np.float32)
    change = np.abs(np.diff(lower, axis=0)).mean(axis=(1, 2, 3))  # (T-1,)
    if len(real) <= n_frames:
        return 0
    totals = np.convolve(change, np.ones(n_frames - 1), mode="valid") if n_frames > 1 else change
    return int(np.argmax(totals))


def strips_of_clip(data: Mapping[str, np.ndarray], clip: int = 0) -> dict[str, np.ndarray]:
    """One clip's strip from a ``results/frames/<variant>.npz`` file (written by
    :func:`opflowtalker.evaluate.strip_arrays`), under the names :func:`frame_strip_rows` reads:
    ``generated``, ``real``, ``still_index`` and ``clip``."""
    kept = int(np.asarray(data["n_clips"])) if "n_clips" in data else 0
    if not 0 <= clip < kept:
        raise ReportError(f"the frame file keeps {kept} clips (evaluate.strip_clips); there is no clip {clip}")
    return {name: data[f"{name}_{clip}"] for name in ("generated", "real", "still_index", "clip")}


def frame_strip_rows(frames: Mapping[str, Mapping], n_frames: int | None = None, start: int = 0,
                     still: bool = False, mouth: bool = False) -> tuple[list[list[np.ndarray]], list[str]]:
    """Rows of tiles for :func:`opflowtalker.viz.contact_sheet`: the real frames, then (``still``) the
    still-reference control (the real frame at the files' ``still_index`` held), then each variant's
    generated frames (``results/frames/<variant>.npz`` contents, in ``frames``' order), all from frame
    ``start`` and cut to the same length; ``mouth`` keeps the lower half of each face. Returns (rows,
    row names: ``"real"``, ``"still_reference"`` and the variant names)."""
    if not frames:
        raise ReportError("no generated frames to show")
    clips = {str(np.asarray(f["clip"])) for f in frames.values()}
    if len(clips) != 1:
        raise ReportError(f"the frame strips come from different clips ({', '.join(sorted(clips))})")
    first = next(iter(frames.values()))
    real = first["real"]
    n = min(min(len(f["generated"]) for f in frames.values()), len(real))
    if not 0 <= start < n:
        raise ReportError(f"the strips hold {n} frames; cannot start at frame {start}")
    n = n - start if n_frames is None else min(n - start, n_frames)
    rows, names = [list(real[start:start + n])], ["real"]
    if still:
        if "still_index" not in first:
            raise ReportError("these frame files do not say which frame the still reference holds")
        if int(first["still_index"]) >= len(real):
            raise ReportError(f"the still reference holds frame {int(first['still_index'])}, beyond the {len(real)} "
                              "real frames kept (evaluate.strip_frames; 0 keeps them all)")
        rows.append([real[int(first["still_index"])]] * n)
        names.append("still_reference")
    rows += [list(f["generated"][start:start + n]) for f in frames.values()]
    names += list(frames)
    if mouth:
        rows = [[tile[tile.shape[0] // 2:] for tile in row] for row in rows]
    return rows, names


def _data_uri(data: bytes, mime: str) -> str:
    import base64

    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def video_html(path: str | Path, width: int = 256, attributes: str = "controls loop") -> str:
    """An HTML ``<video>`` of the mp4 at ``path`` with a WebM source first and the mp4 second, both
    embedded as data URIs, and the first frame as the poster (so the page shows the face before
    it plays). The WebM copy is made in a temporary folder: the mp4's own folder (often a DVC
    output) is left as it is."""
    import tempfile

    from ..video import iter_frames, write_webm

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="opflowtalker-webm-") as tmp:
        webm = write_webm(path, Path(tmp) / "clip.webm").read_bytes()
    first = next(iter_frames(path))
    ok, png = cv2.imencode(".png", cv2.cvtColor(first, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ReportError(f"cannot encode the first frame of {path} as a poster")
    return (f'<video width="{int(width)}" {attributes} preload="auto" poster="{_data_uri(png.tobytes(), "image/png")}">'
            f'<source src="{_data_uri(webm, "video/webm")}" type=\'video/webm; codecs="vp9, opus"\'>'
            f'<source src="{_data_uri(path.read_bytes(), "video/mp4")}" type="video/mp4">'
            "Your browser plays neither WebM nor H.264 video.</video>")

