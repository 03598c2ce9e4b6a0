"""`opflowtalker generate`: a real photo and real speech in, an mp4 out; bad input, one line out."""
from __future__ import annotations

import numpy as np
import sys
import pytest
import soundfile
import torch

from opflowtalker.audio import load_wav, mel_windows, melspectrogram
from opflowtalker.cli import main
from opflowtalker.generate import GenerateOptions, Generator, blend_mask, generate
from opflowtalker.models.checkpoints import save_safetensors
from opflowtalker.models.conv import fold_batchnorm
from opflowtalker.models.opflowtalker import OpFlowTalker, OpFlowTalkerConfig
from opflowtalker.models.syncnet import SyncNet
from opflowtalker.models.wav2lip import Wav2Lip
from opflowtalker.video import VideoWriter, probe, read_image, read_video

from conftest import EXTERNAL

PHOTO = EXTERNAL / "faces" / "hopper.png"
SPEECH = EXTERNAL / "speech" / "Front_Center.wav"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_safetensors(OpFlowTalker(OpFlowTalkerConfig(width=0.0625)), path)
    return path


def test_a_photo_and_speech_give_an_h264_video_as_long_as_the_speech(tmp_path, checkpoint, capsys):
    out = tmp_path / "out.mp4"
    assert main(["generate", "--face", str(PHOTO), "--audio", str(SPEECH), "--checkpoint", str(checkpoint),
                 "--outfile", str(out), "--quiet"]) == 0
    assert "passed through" in capsys.readouterr().out
    info = probe(out)
    photo = read_image(PHOTO)
    assert (info.height, info.width) == photo.shape[:2] and info.fps == 25.0 and info.audio_codec == "aac"
    speech_seconds = len(load_wav(SPEECH)) / 16000
    assert abs(info.duration - speech_seconds) <= 1.5 / 25
    frames, _ = read_video(out)
    # Only the lower face changes: the top of the photo comes through (up to H.264 rounding).
    assert np.abs(frames[:, :100].astype(int) - photo[None, :100]).mean() < 3


class LoudnessMouth(torch.nn.Module):
    """A generator whose mouth is the audio: each frame is its reference with the lower half painted
    the grey of its mel window's mean (Wav2Lip's mel range -4..4 to 0..1). An untrained generator
    barely hears the audio (its bottleneck's share of the output is ~1e-4 of a grey level), so
    this is what shows whether the pipeline hands frame t the audio of frame t."""

    window, image_size = 5, 96

    def forward(self, audio, faces):
        level = ((audio.mean(dim=(2, 3, 4)) + 4.0) / 8.0).clamp(0.0, 1.0)  # (B, T)
        frames = faces[:, 3:].clone()
        frames[:, :, :, self.image_size // 2 :] = level[:, None, :, None, None]
        return frames

    @staticmethod
    def output(raw):
        from opflowtalker.models.generator import GeneratorOutput

        return GeneratorOutput(raw, raw.new_zeros(()), None)

    def generate(self, audio, faces):
        return self.output(self(audio, faces))


def test_each_frames_lower_face_follows_the_audio_of_that_frame_and_nothing_above_it_changes(
        tmp_path, checkpoint, monkeypatch):
    """Under one photo, speech and the same speech reversed: the mouth's brightness in every frame
    follows the loudness of that frame's own mel window (not its neighbours'), the two audios give
    different lower faces, and above the mouth the frames are the photo's in both (to H.264 rounding)."""
    from PIL import Image

    from opflowtalker.models import registry

    monkeypatch.setattr(registry, "load_model_checkpoint", lambda path: LoudnessMouth().eval())
    photo = np.ascontiguousarray(read_image(PHOTO)[::2, ::2])
    face = tmp_path / "face.png"
    Image.fromarray(photo).save(face)
    top, bottom, left, right = 76, 177, 83, 184  # dlib's face box of the half-size photo
    middle = (top + bottom) // 2
    wav = load_wav(SPEECH)[:16000]  # 1 s: 25 frames
    mouths = {}
    for name, samples in (("speech", wav), ("reversed", wav[::-1].copy())):
        soundfile.write(tmp_path / f"{name}.wav", samples, 16000)
        generate(face, tmp_path / f"{name}.wav", checkpoint, tmp_path / f"{name}.mp4",
                 GenerateOptions(progress=False, box=(top, bottom, left, right)))
        frames = read_video(tmp_path / f"{name}.mp4")[0].astype(int)
        # Inside the blend mask's plateau, away from its feathered edges.
        brightness = frames[:, middle + 15 : bottom - 12, left + 25 : right - 25].mean(axis=(1, 2, 3))
        level = (mel_windows(melspectrogram(samples)).mean(axis=(1, 2)) + 4.0) / 8.0
        assert len(brightness) == len(level) == 25 and level.std() > 0.05
        own = np.corrcoef(brightness, level)[0, 1]
        assert own > 0.99, name
        assert own > np.corrcoef(brightness[1:], level[:-1])[0, 1] + 0.05, name  # not one frame late
        assert own > np.corrcoef(brightness[:-1], level[1:])[0, 1] + 0.05, name  # nor one frame early
        assert np.abs(frames[:, : middle - 10] - photo[None, : middle - 10]).mean() < 3, name
        mouths[name] = brightness
    assert np.abs(mouths["speech"] - mouths["reversed"]).mean() > 10  # grey levels


def test_a_video_longer_than_the_speech_is_cut_and_a_shorter_one_looped(tmp_path, checkpoint):
    photo = read_image(PHOTO)[::2, ::2]
    for seconds in (0.6, 3.0):
        video = tmp_path / f"face_{seconds}.mp4"
        with VideoWriter(video, 25) as writer:
            writer.write(np.repeat(photo[None], int(seconds * 25), axis=0))
        out = tmp_path / f"out_{seconds}.mp4"
        summary = generate(video, SPEECH, checkpoint, out, GenerateOptions(progress=False, chunk_frames=8))
        assert summary["frames"] == len(read_video(out)[0]) and summary["faces"] == summary["frames"]
        assert abs(probe(out).duration - len(load_wav(SPEECH)) / 16000) <= 1.5 / 25


@pytest.mark.parametrize("fps", [24000 / 1001, 10.0, 60.0], ids=["23.976", "10", "60"])
def test_a_video_keeps_its_frame_rate_and_lasts_as_long_as_the_speech(tmp_path, checkpoint, fps):
    # One second of video, looped over the 1.4 s of speech: every frame a face, so the rate and the
    # count of frames are all that is checked. NTSC film's 24000/1001 is the rate ffmpeg shows as 23.98.
    photo = read_image(PHOTO)[::2, ::2]
    video = tmp_path / "face.mp4"
    with VideoWriter(video, fps) as writer:
        writer.write(np.repeat(photo[None], int(fps), axis=0))
    assert probe(video).fps == pytest.approx(fps, abs=1e-9)
    out = tmp_path / "out.mp4"
    summary = generate(video, SPEECH, checkpoint, out, GenerateOptions(progress=False, batch_size=8))
    info = probe(out)
    assert summary["fps"] == pytest.approx(fps, abs=1e-9) and info.fps == pytest.approx(fps, abs=1e-9)
    speech_seconds = len(load_wav(SPEECH)) / 16000
    n_frames = len(read_video(out)[0])
    assert n_frames == summary["frames"] and abs(n_frames / fps - speech_seconds) <= 1 / fps
    assert abs(info.duration - speech_seconds) <= 1 / fps


def test_frames_without_a_face_pass_through_unchanged(tmp_path, checkpoint):
    photo = read_image(PHOTO)[::2, ::2]
    blank = np.full_like(photo, 128)
    video = tmp_path / "mixed.mp4"
    with VideoWriter(video, 25) as writer:
        writer.write(np.stack([photo] * 10 + [blank] * 10 + [photo] * 10))
    summary = generate(video, SPEECH, checkpoint, tmp_path / "out.mp4", GenerateOptions(progress=False))
    assert summary["passed_through"] == 10 and summary["faces"] == summary["frames"] - 10


def test_the_blend_mask_covers_the_lower_face_and_fades_at_its_edges():
    mask = blend_mask(96)
    assert mask[70, 48] == pytest.approx(1.0, abs=1e-3) and mask[10, 48] == 0 and mask[70, 0] == 0  # mouth: generated
    column = mask[:, 48]
    assert np.all(np.diff(column[30:70]) >= -1e-6)  # rises smoothly from the cheeks down
    assert 0 < column[45] < 1


def test_wav2lip_checkpoints_load_and_see_bgr_frames(tmp_path):
    path = tmp_path / "wav2lip.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in Wav2Lip().state_dict().items()}}, path)
    generator = Generator(path)
    assert generator.bgr and generator.window == 5
    crops = np.zeros((3, 96, 96, 3), np.uint8)
    assert generator(crops, np.zeros((3, 80, 16), np.float32)).shape == (3, 96, 96, 3)


def _fails(capsys, *argv) -> str:
    assert main(["generate", *argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("opflowtalker generate: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_gets_one_line_and_leaves_no_output(tmp_path, checkpoint, capsys):
    out = tmp_path / "out.mp4"
    common = ["--checkpoint", str(checkpoint), "--outfile", str(out)]
    assert "face file not found" in _fails(capsys, "--face", str(tmp_path / "none.mp4"), "--audio", str(SPEECH),
                                           *common)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    assert "garbage.mp4" in _fails(capsys, "--face", str(garbage), "--audio", str(SPEECH), *common)
    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(16000, np.float32), 16000)
    assert "silent" in _fails(capsys, "--face", str(PHOTO), "--audio", str(silent), *common)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, np.float32), 16000)
    _fails(capsys, "--face", str(PHOTO), "--audio", str(empty), *common)
    faceless = tmp_path / "wall.png"
    from PIL import Image
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(faceless)
    assert "no face found in any frame" in _fails(capsys, "--face", str(faceless), "--audio", str(SPEECH), *common)
    expert = tmp_path / "syncnet.safetensors"
    save_safetensors(SyncNet(0.125), expert)
    assert "not a generator" in _fails(capsys, "--face", str(PHOTO), "--audio", str(SPEECH), "--checkpoint",
                                       str(expert), "--outfile", str(out))
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_mmap_threshold_can_be_fixed_on_glibc():
    from opflowtalker.generate import fixed_mmap_threshold

    assert fixed_mmap_threshold(1 << 20) is True


@pytest.mark.parametrize("build", [lambda: Wav2Lip(0.125), lambda: OpFlowTalker(OpFlowTalkerConfig(width=0.0625))],
                         ids=["wav2lip", "opflowtalker"])
def test_folding_the_batch_norms_into_the_convolutions_keeps_the_output(build):
    import copy

    torch.manual_seed(0)
    model = build()
    for m in model.modules():  # statistics and affine terms as after training, not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    if isinstance(model, OpFlowTalker):  # a fresh residual output layer is zero: the bare reference
        torch.nn.init.normal_(model.face_decoder.output_block[1].weight, std=0.1)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(copy.deepcopy(model).train())
    model.eval()
    folded = fold_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    audio, faces = torch.randn(2, 5, 1, 80, 16), torch.rand(2, 6, 5, 96, 96)
    with torch.no_grad():
        a, b = model(audio, faces), folded(audio, faces)
    a, b = (x[0] if isinstance(x, tuple) else x for x in (a, b))
    assert a.std() > 0.01
    torch.testing.assert_close(b, a, atol=1e-4, rtol=0)


def _moving_face(tmp_path, n: int = 60) -> tuple:
    """A video of the photo sliding over a grey frame, and the slide of every frame (x, y)."""
    photo = read_image(PHOTO)[::2, ::2]
    h, w = photo.shape[:2]
    shifts = [(40 + int(30 * np.sin(i / 6)), 10 + int(8 * np.sin(i / 4))) for i in range(n)]
    video = tmp_path / "moving.mp4"
    with VideoWriter(video, 25) as writer:
        for x, y in shifts:
            frame = np.full((h + 40, w + 100, 3), 90, np.uint8)
            frame[y : y + h, x : x + w] = photo
            writer.write(frame)
    return video, np.array([(x, y, x, y) for x, y in shifts], np.float64)


def test_a_followed_face_is_searched_for_once_a_second_and_boxed_as_well_as_searching_every_frame(tmp_path):
    from opflowtalker.generate import _FaceTracker
    from opflowtalker.video import iter_frames

    video, shifts = _moving_face(tmp_path)
    frames = list(iter_frames(video))
    errors, searches = {}, {}
    for track in (False, True):
        tracker = _FaceTracker(GenerateOptions(progress=False), track)
        boxes = np.array([tracker.box(f) for f in frames], np.float64)
        # The face is the same picture in every frame: its box, less the slide, should not move.
        steady = boxes - shifts
        errors[track] = np.abs(steady - np.median(steady, axis=0)).max(axis=1)
        searches[track] = tracker.searches
    # Once a second (frames 0, 26, 52), and again where a fit strays: a handful, not every frame.
    assert searches[False] == len(frames) and 3 <= searches[True] <= len(frames) // 15
    side = float(np.median(boxes[:, 2] - boxes[:, 0]))
    # About as close as a search of every frame (whose own boxes stray too), and never far off.
    assert np.percentile(errors[True], 95) <= 1.25 * np.percentile(errors[False], 95) + 1
    assert errors[True].max() < 0.1 * side


def test_a_followed_face_that_leaves_is_searched_for_at_once(tmp_path):
    from opflowtalker.generate import _FaceTracker

    photo = read_image(PHOTO)[::2, ::2]
    frames = [photo] * 5 + [np.full_like(photo, 128)] * 3 + [photo] * 2
    tracker = _FaceTracker(GenerateOptions(progress=False))
    boxes = [tracker.box(f) for f in frames]
    assert [b is None for b in boxes] == [False] * 5 + [True] * 3 + [False] * 2
    assert tracker.searches == 1 + 3 + 1  # the first frame, each blank one, the face's return


def test_a_photos_faces_are_encoded_once_and_give_the_frames_encoding_every_window_gives(tmp_path):
    torch.manual_seed(0)
    model = OpFlowTalker(OpFlowTalkerConfig(width=0.0625))
    torch.nn.init.normal_(model.face_decoder.output_block[1].weight, std=0.5)  # an output that shows the faces
    path = tmp_path / "m.safetensors"
    save_safetensors(model, path)
    generator = Generator(path)
    calls = []
    generator.model.face_encoder.register_forward_hook(lambda *_: calls.append(1))
    crop = np.ascontiguousarray(read_image(PHOTO)[100:292:2, 60:252:2])
    mels = mel_windows(melspectrogram(load_wav(SPEECH)), 25.0)[:23].astype(np.float32)
    still = generator(np.repeat(crop[None], 23, 0), mels, batch_size=2)
    assert len(calls) == 1  # 5 windows in 3 batches, one encoding
    varied = np.repeat(crop[None], 23, 0)
    varied[-1, 0, 0, 0] ^= 1  # one pixel of the last frame: every window encoded
    calls.clear()
    each = generator(varied, mels, batch_size=2)
    assert len(calls) == 3
    assert np.array_equal(still[:20], each[:20])
    assert still[0].std() > 5  # the frames show the faces, so equal frames say the encodings were equal


def test_a_followed_face_that_slides_out_of_the_frame_is_lost_without_an_error():
    from opflowtalker.generate import _FaceTracker

    photo = read_image(PHOTO)[::2, ::2]
    width = photo.shape[1]
    frames = []
    for shift in np.linspace(0, width, 12).astype(int):  # from in place to wholly past the right edge
        frame = np.full_like(photo, 90)
        frame[:, shift:] = photo[:, : width - shift]
        frames.append(frame)
    tracker = _FaceTracker(GenerateOptions(progress=False))
    boxes = [tracker.box(f) for f in frames]
    assert boxes[0] is not None and boxes[-1] is None
    assert all(b is None or (0 <= b[0] and b[2] <= width + 1) for b in boxes)
