"""The book's videos play in a browser without H.264: a WebM source first, the mp4 second, a poster;
checked in headless Chromium by decoding each video's first frame."""
import re

import numpy as np
import pytest

from opflowtalker import video
from opflowtalker.browser import BrowserError, find_chromium, screenshot, video_states
from opflowtalker.report import video_html

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="headless Chromium is not installed")


def face_like_clip(path, n=25, level=None):
    rng = np.random.default_rng(0)
    if level is None:
        frames = np.clip(rng.normal(128, 50, (n, 96, 96, 3)), 0, 255).astype(np.uint8)
    else:
        frames = np.full((n, 96, 96, 3), level, np.uint8)
    sr = 16000
    wav = (0.2 * np.sin(2 * np.pi * 220 * np.arange(int(n / 25 * sr)) / sr)).astype(np.float32)
    return video.write_video(path, frames, fps=25, audio=(wav, sr))


def page(tmp_path, *clips):
    out = tmp_path / "page.html"
    out.write_text("<html><body>" + "".join(video_html(c) for c in clips) + "</body></html>")
    return out


def test_a_video_is_embedded_as_webm_first_then_mp4_with_a_poster(tmp_path):
    html = video_html(face_like_clip(tmp_path / "a.mp4"), width=320)
    sources = re.findall(r'<source src="data:(video/[a-z0-9]+);base64,', html)
    assert sources == ["video/webm", "video/mp4"]
    assert 'width="320"' in html and 'poster="data:image/png;base64,' in html
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]  # the WebM went to a temporary folder


@needs_chromium
def test_chromium_decodes_each_video_from_its_webm_source(tmp_path):
    states = video_states(page(tmp_path, face_like_clip(tmp_path / "a.mp4"), face_like_clip(tmp_path / "b.mp4", level=0)))
    assert [s["event"] for s in states] == ["loadeddata", "loadeddata"]
    assert all(s["readyState"] >= 2 and s["source"] == "data:video/webm" and s["poster"] for s in states)
    assert (states[0]["width"], states[0]["height"]) == (96, 96)
    # The frame is measured, so a black clip reads as blank and a textured one does not.
    assert states[0]["spread"] > 20 and states[1]["spread"] < 2 and states[1]["mean"] < 5


@needs_chromium
def test_a_video_chromium_cannot_decode_is_reported_as_an_error(tmp_path):
    broken = tmp_path / "page.html"
    broken.write_text('<html><body><video><source src="data:video/webm;base64,AAAA" type="video/webm"></video></body></html>')
    assert [s["event"] for s in video_states(broken)] == ["error"]


@needs_chromium
def test_screenshots_are_written_whole_or_not_at_all(tmp_path):
    shot = screenshot(page(tmp_path, face_like_clip(tmp_path / "a.mp4")), tmp_path / "shots" / "page.png", 400, 300)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in shot.parent.iterdir()] == ["page.png"]
    with pytest.raises(BrowserError, match="no page"):
        video_states(tmp_path / "missing.html")
