"""The audio front end is Wav2Lip's: same mel features, same window per video frame."""
import subprocess

import imageio_ffmpeg
import librosa
import numpy as np
import pytest
import soundfile

from opflowtalker import audio
from opflowtalker.video import write_video


def wav2lip_mel_reference(wav: np.ndarray) -> np.ndarray:
    """Wav2Lip's ``audio.melspectrogram`` (hparams of NOTES.md, librosa 0.7's reflect-padded STFT),
    written out with NumPy's FFT so it shares no STFT code with the package."""
    x = np.asarray(wav, dtype=np.float64)
    y = np.concatenate([x[:1], x[1:] - 0.97 * x[:-1]])  # pre-emphasis, lfilter([1, -0.97], [1])
    padded = np.pad(y, 400, mode="reflect")  # centred frames of n_fft = 800
    n = 1 + len(y) // 200
    frames = np.stack([padded[i * 200 : i * 200 + 800] for i in range(n)])
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 800)  # periodic Hann
    magnitude = np.abs(np.fft.rfft(frames * hann, axis=1)).T
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, basis @ magnitude)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


def test_melspectrogram_matches_wav2lip_on_real_speech(speech_wav):
    wav = audio.load_wav(speech_wav)
    mel = audio.melspectrogram(wav)
    assert mel.shape == (80, 1 + len(wav) // 200)
    assert np.abs(mel - wav2lip_mel_reference(wav)).max() < 1e-4
    assert mel.min() >= -4 and mel.max() <= 4


@pytest.mark.parametrize("n", [3200, 3201, 16000 + 137])
def test_melspectrogram_matches_wav2lip_on_noise(n):
    wav = np.random.default_rng(n).normal(0, 0.1, n).astype(np.float32)
    assert np.abs(audio.melspectrogram(wav) - wav2lip_mel_reference(wav)).max() < 1e-4


def test_load_wav_resamples_to_16k_mono(speech_wav):
    native, sr = soundfile.read(speech_wav)
    assert sr == 48000
    wav = audio.load_wav(speech_wav)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - len(native) / 3) <= 1


def test_load_wav_reads_flac_mp3_and_video_tracks(speech_wav, tmp_path):
    ref = audio.load_wav(speech_wav)
    flac = tmp_path / "speech.flac"
    soundfile.write(flac, ref, 16000)
    mp3 = tmp_path / "speech.mp3"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(flac), "-b:a", "128k", str(mp3)],
                   check=True)
    video = write_video(tmp_path / "talk.mp4", np.zeros((40, 64, 64, 3), np.uint8), 25, audio=(ref, 16000))
    assert np.abs(audio.load_wav(flac) - ref).max() < 1e-3
    for lossy in (mp3, video):
        got = audio.load_wav(lossy)
        # Lossy codecs add delay and padding: compare the best-aligned overlap.
        lag = int(np.argmax(np.correlate(got[:8000], ref[:4000], mode="valid")))
        overlap = min(len(ref), len(got) - lag)
        assert overlap > 0.95 * len(ref)
        assert np.corrcoef(got[lag : lag + overlap], ref[:overlap])[0, 1] > 0.95


def test_mel_window_for_frame_i_starts_at_80_i_over_fps():
    mel = np.arange(80 * 200, dtype=np.float32).reshape(80, 200) % 200
    assert audio.mel_window(mel, 0)[0, 0] == 0
    assert audio.mel_window(mel, 1)[0, 0] == 3  # int(80 * 1 / 25) = 3
    assert audio.mel_window(mel, 10)[0, 0] == 32
    assert audio.mel_window(mel, 7, fps=30)[0, 0] == int(80 * 7 / 30)
    assert audio.mel_window(mel, 1000).tolist() == mel[:, -16:].tolist()  # past the end: last 16 steps
    assert audio.mel_window(mel, 3).shape == (80, 16)


def test_one_window_per_video_frame_of_the_audio():
    wav = np.random.default_rng(0).normal(0, 0.1, 16000 * 2).astype(np.float32)  # 2 s
    windows = audio.mel_windows(audio.melspectrogram(wav), fps=25)
    assert windows.shape == (50, 80, 16)


def test_bad_audio_gives_a_clear_error(tmp_path):
    with pytest.raises(audio.AudioError, match="not found"):
        audio.load_wav(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(audio.AudioError, match="no audio samples"):
        audio.load_wav(empty)
    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(16000, np.float32), 16000)
    with pytest.raises(audio.AudioError, match="silent"):
        audio.load_wav(silent)
    garbage = tmp_path / "garbage.wav"
    garbage.write_text("this is not audio")
    with pytest.raises(audio.AudioError, match="cannot read audio"):
        audio.load_wav(garbage)
    with pytest.raises(audio.AudioError, match="too short"):
        audio.melspectrogram(np.ones(100, np.float32))
    with pytest.raises(audio.AudioError, match="too short"):
        audio.mel_window(np.zeros((80, 10), np.float32), 0)
