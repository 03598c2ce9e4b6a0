"""Video in and out: H.264 mp4 with the audio muxed, frames back as written, 25 fps resampling."""
import numpy as np
import pytest

from opflowtalker import video
from opflowtalker.audio import load_wav


def moving_square(n: int, size=(96, 128)) -> np.ndarray:
    frames = np.full((n, *size, 3), 40, np.uint8)
    for i in range(n):
        frames[i, 20:60, 5 + 2 * i : 45 + 2 * i] = (220, 120, 30)
    return frames


def test_mp4_round_trip_keeps_frames_fps_size_and_audio(tmp_path, speech_wav):
    wav = load_wav(speech_wav)
    frames = moving_square(int(len(wav) / 16000 * 25))
    out = video.write_video(tmp_path / "clip.mp4", frames, fps=25, audio=(wav, 16000))
    info = video.probe(out)
    assert (info.width, info.height, info.fps) == (128, 96, 25.0)
    assert info.audio_codec == "aac"
    assert abs(info.duration - len(wav) / 16000) < 0.1
    back, fps = video.read_video(out)
    assert fps == 25.0 and back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 3  # H.264 at CRF 18 is near-lossless on flat colour


def test_writing_streams_frames_in_chunks(tmp_path):
    frames = moving_square(30)
    with video.VideoWriter(tmp_path / "chunks.mp4", fps=25) as writer:
        for start in range(0, 30, 7):
            writer.write(frames[start : start + 7])
    assert video.read_video(tmp_path / "chunks.mp4")[0].shape == frames.shape


def test_odd_sizes_are_padded_to_even_not_rescaled(tmp_path):
    frames = np.zeros((3, 33, 47, 3), np.uint8)
    info = video.probe(video.write_video(tmp_path / "odd.mp4", frames, fps=25))
    assert (info.width, info.height) == (48, 34)


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with video.VideoWriter(target, fps=25) as writer:
            writer.write(moving_square(5))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(video.VideoError, match="no frames"):
        with video.VideoWriter(target, fps=25):
            pass
    assert list(tmp_path.iterdir()) == []


def test_resampling_to_25_fps_keeps_duration(tmp_path):
    frames = moving_square(60)  # 2 s at 30 fps
    path = video.write_video(tmp_path / "thirty.mp4", frames, fps=30)
    resampled, fps = video.read_video(path, fps=25)
    assert fps == 25 and len(resampled) == 50
    idx = video.resample_indices(60, 30, 25)
    assert len(idx) == 50 and idx[0] == 0 and idx[-1] == 58
    assert np.all(np.diff(idx) >= 1)
    # Output frame k shows the source frame on screen at time k/25.
    assert idx[5] == int(5 / 25 * 30)
    assert video.resample_indices(10, 12.5, 25).tolist() == [i // 2 for i in range(20)]


@pytest.mark.parametrize("rate", [(24000, 1001), (30000, 1001), (60000, 1001), (10, 1)],
                         ids=["23.976", "29.97", "59.94", "10"])
def test_probe_reads_a_frame_rate_exactly_not_as_ffmpeg_shows_it(tmp_path, rate):
    # ffmpeg shows 24000/1001 as 23.98: a video rewritten at that rate would run fast.
    fps = rate[0] / rate[1]
    path = video.write_video(tmp_path / "clip.mp4", moving_square(8), fps=fps)
    assert video.probe(path).fps == pytest.approx(fps, rel=1e-12)


def test_bad_video_input_gives_a_clear_error(tmp_path):
    with pytest.raises(video.VideoError, match="not found"):
        video.probe(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(video.VideoError, match="cannot read video"):
        video.read_video(junk)
    with pytest.raises(video.VideoError, match="RGB"):
        with video.VideoWriter(tmp_path / "gray.mp4", fps=25) as writer:
            writer.write(np.zeros((2, 8, 8), np.uint8)[None].repeat(2, 0))


def _streams(path) -> str:
    import subprocess

    import imageio_ffmpeg

    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    return " ".join(line.strip() for line in probe.stderr.splitlines() if "Stream #" in line)


def test_the_webm_copy_holds_vp9_and_opus_and_the_same_frames(tmp_path, speech_wav):
    wav = load_wav(speech_wav)
    frames = moving_square(int(len(wav) / 16000 * 25))
    mp4 = video.write_video(tmp_path / "clip.mp4", frames, fps=25, audio=(wav, 16000))
    webm = video.write_webm(mp4)
    assert webm == tmp_path / "clip.webm"
    streams = _streams(webm)
    assert "Video: vp9" in streams and "Audio: opus" in streams
    info = video.probe(webm)
    assert (info.width, info.height, info.fps) == (128, 96, 25.0) and abs(info.duration - len(wav) / 16000) < 0.1
    back, _ = video.read_video(webm)
    assert back.shape == frames.shape and np.abs(back.astype(int) - frames).mean() < 4
    # A silent video gets no audio stream rather than a failure.
    silent = video.write_webm(video.write_video(tmp_path / "silent.mp4", frames[:10], fps=25), tmp_path / "out" / "s.webm")
    assert "Audio" not in _streams(silent)


def test_a_webm_copy_of_a_missing_or_broken_video_is_refused_and_nothing_written(tmp_path):
    with pytest.raises(video.VideoError, match="not found"):
        video.write_webm(tmp_path / "none.mp4")
    (tmp_path / "broken.mp4").write_text("not a video")
    with pytest.raises(video.VideoError, match="broken.mp4"):
        video.write_webm(tmp_path / "broken.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mp4"]
