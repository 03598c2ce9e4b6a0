"""The study's plumbing: profiles, generator variants and Eq. 8, the evaluation protocol, the tables."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml

from opflowtalker.cli import main
from opflowtalker.models.generator import GeneratorOutput
from opflowtalker.losses import OFS_ALPHA, OFS_AREAS, OFSSchedule, mouth_l1_loss, ofs_loss
from opflowtalker.params import ParamsError, from_params_yaml, load_params, merge
from opflowtalker.renditions import generate_clip, reference_windows
from opflowtalker.tables import PAPER, TABLES, build_tables, format_cell
from opflowtalker.training.data import PreparedClip, generator_batch
from opflowtalker.training.generator import GeneratorLoss, GeneratorTrainParams, build_generator, variant_params

from conftest import ROOT, study_params

torch.set_num_threads(1)


def test_a_profile_changes_only_the_values_it_names(tmp_path):
    params = {"profile": "small", "train": {"steps": 100, "lr": 0.1, "sizes": {"a": 1, "b": 2}},
              "profiles": {"big": {}, "small": {"train": {"steps": 3, "sizes": {"b": 5}}}}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    loaded = load_params(path)
    assert loaded["train"] == {"steps": 3, "lr": 0.1, "sizes": {"a": 1, "b": 5}}
    assert "profiles" not in loaded and loaded["profile"] == "small"
    params["profile"] = "huge"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match="profile 'huge' is not one of"):
        load_params(path)
    assert merge({"a": {"b": 1}}, {"a": 2}) == {"a": 2}


def test_the_project_profiles_are_complete_and_every_variant_is_valid():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert raw["profile"] == "embedded" and set(raw["profiles"]) >= {"embedded", "smoke", "paper"}
    for profile in raw["profiles"]:
        params = load_params_for(raw, profile)
        for variant in params["generators"]["variants"]:
            variant_params(params["generators"], variant)  # raises on a bad key or combination
    paper = load_params_for(raw, "paper")
    assert paper["generators"]["defaults"]["width"] == 1.0 and paper["generators"]["defaults"]["batch_size"] == 256


# Table 3d: each row removes exactly this part from the paper's model.
TABLE_3D = {"no_audio_aug": "audio_aug", "no_flow_predictor": "flow_predictor",
            "no_sequential_fusion": "sequential_fusion", "no_ofs": "ofs_weight"}


@pytest.mark.parametrize("profile", ["embedded", "paper"])
def test_full_is_the_papers_model_and_each_ablation_removes_one_part(profile):
    from dataclasses import asdict

    from opflowtalker.models.opflowtalker import OpFlowTalkerConfig

    params = load_params_for(yaml.safe_load((ROOT / "params.yaml").read_text()), profile)["generators"]
    full = asdict(variant_params(params, "full"))
    assert full["model"] == "opflowtalker" and full["ofs_weight"] > 0
    assert all(full[part] for part in OpFlowTalkerConfig.PAPER_PARTS)
    assert not any(full[part] for part in OpFlowTalkerConfig.OUR_PARTS)
    for variant, part in TABLE_3D.items():
        row = asdict(variant_params(params, variant))
        assert [k for k in full if row[k] != full[k]] == [part], variant
        assert not row[part], variant
    ours = asdict(variant_params(params, "full_motion"))
    assert sorted(k for k in full if ours[k] != full[k]) == sorted(OpFlowTalkerConfig.OUR_PARTS)


def load_params_for(raw: dict, profile: str) -> dict:
    return merge({k: v for k, v in raw.items() if k != "profiles"}, raw["profiles"][profile] or {})


def _clip(n: int = 12, size: int = 96, seed: int = 0) -> PreparedClip:
    rng = np.random.default_rng(seed)
    landmarks = np.tile(np.array([[48.0, 60.0]]), (n, 68, 1)) + rng.normal(0, 4, (n, 68, 2))
    return PreparedClip(key=f"id/{seed:05d}", faces=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                        mels=rng.normal(size=(n, 80, 16)).astype(np.float32), landmarks=landmarks.astype(np.float32),
                        fps=25.0, mel=rng.normal(size=(80, 16 + 3 * n)).astype(np.float32),
                        flow=rng.normal(size=(n - 1, size, size, 2)).astype(np.float16),
                        valid=np.ones((n - 1, size, size), bool))


# The values these tests' losses were written against where params.yaml's generators.defaults
# differ: Eq. 8 as the paper weighs it, no mouth term, no augmentation, RAFT for the OFS loss.
AS_TESTED = {"mouth_weight": 0.0, "sync_weight": 0.1, "ofs_weight": 1.0, "flow_network": "raft", "mouth_start_step": 0,
             "ofs_windows": 0, "flip": 0.0, "color_jitter": 0.0, "lr": 1e-4, "checkpoint_every": 50}


def _params(**overrides) -> GeneratorTrainParams:
    """A one-step tiny generator's parameters: params.yaml's generators.defaults with :data:`AS_TESTED`."""
    return from_params_yaml(GeneratorTrainParams, "generators.defaults",
                            **{**AS_TESTED, "width": 0.0625, "steps": 1, "batch_size": 2, **overrides})


class FlowByDifference(torch.nn.Module):
    """A differentiable stand-in flow network: the flow is the mean colour change, in both components."""

    def forward(self, a, b):
        return ((b - a).mean(dim=1, keepdim=True) / 255.0).expand(-1, 2, -1, -1)


class ColourExpert(torch.nn.Module):
    """A stand-in lip-sync expert that sees every stacked channel: the lip embedding is the mean of
    each of the 15 channels (frame by frame, three each), the audio embedding positive weights from
    the mel, so which half, which frames and which channel order it is given all change the score."""

    def forward(self, mel, faces):
        return mel.mean(dim=-1)[:, 0, :15].exp(), faces.mean(dim=(2, 3))


def test_eq8_is_the_weighted_sum_of_rec_sync_and_ofs_each_computed_from_its_definition():
    """L_total = l1 L_rec + l2 L_sync + l3 L_ofs (Eq. 8, plus our weighted KL of the audio
    augmentation), each term recomputed here from the generated frames: the mean absolute error,
    the mean -log cos(audio, lip) of the expert on the lower halves, and Eq. 7's (1 - alpha) face +
    alpha mouth mean squared flow error over valid pixels."""
    clip = _clip()
    valid = np.random.default_rng(3).random(clip.valid.shape) < 0.7  # some pixels without ground-truth flow
    batch = generator_batch([dataclasses.replace(clip, valid=valid)], np.random.default_rng(0), 2, 5)
    params = _params(l1_weight=0.7, sync_weight=0.3, ofs_weight=2.0, kl_weight=0.5, sync_start_step=0,
                     mouth_start_step=0, ofs_area="face+mouth", ofs_interval=1, ofs_distance="l2",
                     ofs_reduction="mean", flow_size=0, ofs_windows=0, mouth_weight=0.0)
    torch.manual_seed(0)
    model = build_generator(params).train()  # batch statistics: frames with structure, as in training
    torch.nn.init.normal_(model.face_decoder.output_block[1].weight, std=0.1)  # not the bare reference
    expert = ColourExpert()
    torch.manual_seed(1)  # the same audio-augmentation draws and dropout in every call below
    terms = GeneratorLoss(params, expert=expert, flow_net=FlowByDifference().eval())(model, batch, step=0)
    assert set(terms) == {"l1", "kl", "sync", "ofs", "loss"}

    torch.manual_seed(1)
    with torch.no_grad():
        frames, aux = model(batch.audio, batch.faces)
    b, _, t, h, w = frames.shape
    assert frames[:, :, :, : h // 2].mean((3, 4)).sub(frames[:, :, :, h // 2 :].mean((3, 4))).abs().max() > 0.003
    rec = (frames - batch.target).abs().mean()
    lower = frames[:, :, :, h // 2 :].transpose(1, 2).reshape(b, 3 * t, h // 2, w)  # frame by frame
    audio_embedding, lip_embedding = expert(batch.sync_mel, lower)
    cosine = (audio_embedding * lip_embedding).sum(1) / (audio_embedding.norm(dim=1) * lip_embedding.norm(dim=1))
    sync = -torch.log(cosine).mean()
    predicted = (frames[:, :, 1:] - frames[:, :, :-1]).mean(dim=1)  # (B, T-1, H, W), both flow components
    per_pixel = ((predicted[:, :, None] - batch.flow) ** 2).mean(dim=2)
    face_region = batch.valid.float()
    mouth_region = (batch.valid & batch.mouth[:, :-1].bool()).float()
    face = ((per_pixel * face_region).sum((2, 3)) / face_region.sum((2, 3))).mean()
    mouth = ((per_pixel * mouth_region).sum((2, 3)) / mouth_region.sum((2, 3))).mean()
    assert (mouth_region.sum((2, 3)) > 0).all() and not torch.isclose(face, mouth)
    ofs = (1 - OFS_ALPHA) * face + OFS_ALPHA * mouth
    kl = aux["kl"]
    assert min(rec, sync, ofs, kl) > 1e-4  # every term present and non-zero

    torch.testing.assert_close(terms["l1"], rec)
    torch.testing.assert_close(terms["sync"], sync)
    torch.testing.assert_close(terms["ofs"], ofs)
    torch.testing.assert_close(terms["kl"], kl)
    torch.testing.assert_close(terms["loss"].detach(), 0.7 * rec + 0.3 * sync + 2.0 * ofs + 0.5 * kl)
    terms["loss"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)

    # Before sync_start_step the sync term is reported but not trained on.
    late = GeneratorLoss(dataclasses.replace(params, sync_start_step=1), expert, FlowByDifference().eval())
    torch.manual_seed(1)
    early = late(model, batch, step=0)
    torch.testing.assert_close(early["sync"], sync)
    torch.testing.assert_close(early["loss"].detach(), 0.7 * rec + 2.0 * ofs + 0.5 * kl)


def test_the_wav2lip_baseline_trains_without_the_ofs_term():
    batch = generator_batch([_clip()], np.random.default_rng(0), 2, 5)
    baseline = _params(model="wav2lip", ofs_weight=0.0)
    assert not baseline.uses_ofs
    wav2lip = build_generator(baseline)
    assert type(wav2lip).__name__ == "Wav2Lip" and wav2lip.config.width == 0.0625
    assert set(GeneratorLoss(baseline, None, None)(wav2lip, batch, 0)) == {"l1", "kl", "loss"}


def test_ofs_windows_scores_the_first_windows_of_the_batch_only():
    batch = generator_batch([_clip(), _clip(seed=1)], np.random.default_rng(0), 3, 5)

    flow_net = FlowByDifference().eval()
    params = _params(ofs_windows=1)
    torch.manual_seed(0)
    model = build_generator(params).eval()
    terms = GeneratorLoss(params, expert=None, flow_net=flow_net)(model, batch, step=0)
    with torch.no_grad():
        frames, _ = model(batch.audio, batch.faces)
    alpha = OFS_AREAS[params.ofs_area] if params.mouth_start_step <= 0 else 0.0
    first = ofs_loss(frames[:1], batch.flow[:1], batch.valid[:1], batch.mouth[:1], flow_net, alpha=alpha)
    every = ofs_loss(frames, batch.flow, batch.valid, batch.mouth, flow_net, alpha=alpha)
    torch.testing.assert_close(terms["ofs"], first)
    assert not torch.isclose(first, every)
    with pytest.raises(ParamsError, match="ofs_windows"):
        _params(ofs_windows=-1)


def test_ofs_area_rows_set_alpha_of_eq7():
    assert OFS_AREAS == {"face": 0.0, "mouth": 1.0, "face+mouth": OFS_ALPHA}
    # With both terms the mouth joins at mouth_start_step; a mouth-only loss has it from the start.
    assert [OFSSchedule(3, "face+mouth")(s) for s in (0, 2, 3)] == [0.0, 0.0, OFS_ALPHA]
    assert [OFSSchedule(3, "mouth")(s) for s in (0, 3)] == [1.0, 1.0]
    assert [OFSSchedule(3, "face")(s) for s in (0, 3)] == [0.0, 0.0]
    with pytest.raises(ValueError, match="OFS area"):
        OFSSchedule(0, "lips")
    with pytest.raises(ParamsError, match="needs windows of more than 5"):
        _params(ofs_interval=5)
    group = {"defaults": study_params()["generators"]["defaults"], "variants": {"v": {"widht": 1.0}}}
    with pytest.raises(ParamsError, match="unknown parameter"):
        variant_params(group, "v")


def test_evaluation_windows_cover_every_frame_with_references_half_a_clip_away():
    for n in (5, 6, 12, 13, 51):
        pairs = reference_windows(n, 5)
        covered = np.zeros(n, bool)
        for start, ref in pairs:
            covered[start : start + 5] = True
            assert 0 <= ref <= n - 5
            if n >= 10:
                assert abs(ref - start) >= 3  # another mouth than the target's
        assert covered.all()
    with pytest.raises(ValueError, match="shorter than one window"):
        reference_windows(4, 5)


def test_generate_clip_regenerates_every_frame_from_its_own_audio():
    clip = _clip(n=13)

    class Echo(torch.nn.Module):
        """Returns the masked target's upper half and the mel's first value per frame, so we can
        see which frame and which audio each output came from."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        window, image_size = 5, 96

        def forward(self, audio, faces):
            frames = faces[:, :3].clone()
            frames[:, :, :, -1, -1] = audio[:, :, 0, 0, 0].sigmoid()[:, None, :]
            return frames

        def generate(self, audio, faces):
            frames = self(audio, faces)
            return GeneratorOutput(frames, frames.new_zeros(()), None)

    out = generate_clip(Echo(), clip, 5, batch_windows=2)
    assert out.shape == clip.faces.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :48], clip.faces[:, :48])  # frame t came from target t
    expected = np.round(torch.from_numpy(clip.mels[:, 0, 0]).sigmoid().numpy() * 255)
    np.testing.assert_array_equal(out[:, -1, -1, 0], expected)  # with audio t


def test_a_96_px_generator_scores_a_256_px_clip_through_resized_frames():
    """The HDTF-shaped half's Wav2Lip row: the model sees the clip at its own 96 px and its frames
    come back at the clip's 256 px, close to the clip where the model copies its input."""
    clip = _clip(n=13, size=256)
    clip = PreparedClip(**{**clip.__dict__, "faces": np.repeat(np.repeat(
        np.random.default_rng(1).integers(0, 256, (13, 8, 8, 3), dtype=np.uint8), 32, axis=1), 32, axis=2)})
    seen = []

    class Copy(torch.nn.Module):
        window, image_size = 5, 96

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def generate(self, audio, faces):
            seen.append(tuple(faces.shape[-2:]))
            return GeneratorOutput(faces[:, 3:].clone(), faces.new_zeros(()), None)  # the reference frames

    out = generate_clip(Copy(), clip, 5, batch_windows=4)
    assert seen and set(seen) == {(96, 96)}
    assert out.shape == clip.faces.shape and out.dtype == np.uint8
    pairs = reference_windows(len(clip), 5)
    s, r = pairs[0]
    error = np.abs(out[s].astype(int) - clip.faces[r].astype(int)).mean()
    assert error < 8, error  # blockwise-constant frames survive the round trip to 96 px nearly intact
    assert np.abs(out[s].astype(int) - clip.faces[s].astype(int)).mean() > 3 * error  # and it is the reference


def _row(variant, label, value):
    keys = {k for columns in TABLES.values() for k, _, _ in columns}
    row = {"variant": variant, "label": label, **{k: value for k in keys}}
    row["fid"] = None
    row["unavailable"] = {"fid": "needs Inception weights"}
    return row


def test_tables_hold_our_rows_the_ground_truth_and_the_paper_labelled_apart(tmp_path):
    for variant, label, value in [("wav2lip", "Wav2Lip", 1.0), ("full", "OpFlowTalker", 2.0),
                                  ("no_ofs", "without OFSM", 3.0), ("ground_truth", "Ground Truth", 0.0)]:
        (tmp_path / f"{variant}.json").write_text(json.dumps(_row(variant, label, value)))
    variants = {"wav2lip": {}, "full": {}, "no_ofs": {}}
    with pytest.raises(ValueError, match="still_reference"):
        build_tables(tmp_path, variants, tmp_path)  # the controls must all be there
    for variant in ("still_reference", "wrong_audio", "shifted_audio"):
        (tmp_path / f"{variant}.json").write_text(json.dumps(_row(variant, variant, 0.5)))
    tables = build_tables(tmp_path, variants, tmp_path)
    controls = ["ground_truth", "still_reference", "wrong_audio", "shifted_audio"]
    assert [r["variant"] for r in tables["table1"]["ours"]] == ["wav2lip", "full", "full_motion", *controls]
    # Table 3d's rows in its order; those params.yaml does not define say so in every cell.
    table3d = tables["table3d"]["ours"]
    assert [r["variant"] for r in table3d] == ["wav2lip", "no_audio_aug", "no_flow_predictor", "no_sequential_fusion",
                                               "no_ofs", "full", "full_motion", *controls]
    assert table3d[1]["kind"] == "missing" and table3d[1]["why"] == "not a variant of params.yaml"
    assert table3d[4]["switch"] == "ofs_weight" and table3d[4]["cells"]["psnr"] == "3.0000"
    assert tables["table3a"]["compare_with"] == "raft" and tables["table3a"]["paper_names"]["flownet"] == "FlowNet2"
    gma = next(r for r in tables["table3a"]["ours"] if r["variant"] == "gma")
    assert gma["kind"] == "missing" and gma["why"] == "not a variant of params.yaml"
    assert list(tables["table6"]["paper"]) == ["MSE", "MAE", "Ground Truth"]
    assert tables["table1"]["ours"][1]["cells"]["fid"] == "n/a (needs Inception weights)"
    assert tables["table2"]["paper"] == PAPER["table2"]
    assert format_cell({"psnr": 31.15123}, "psnr") == "31.151" and format_cell({"wer": 0.123456}, "wer") == "0.1235"
    assert format_cell({"wer": 0.5, "ci": {"wer": [0.4, 0.61]}}, "wer") == "0.5000 [0.4000, 0.6100]"
    with pytest.raises(ValueError, match="no evaluation of missing"):
        build_tables(tmp_path, {**variants, "missing": {}})


def test_tables_command_says_what_is_missing_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"generators": {"variants": {"full": {}}}}))
    (tmp_path / "results").mkdir()
    assert main(["tables", "--results", "results", "--out", "tables.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("opflowtalker tables: error: no evaluation of full") and "\n" not in err
    assert not (tmp_path / "tables.json").exists()


def test_the_mouth_term_is_the_l1_error_over_the_mouth_alone():
    batch = generator_batch([_clip(), _clip(seed=1)], np.random.default_rng(0), 2, 5)
    params = _params(mouth_weight=3.0, ofs_weight=0.0, sync_weight=0.0)
    torch.manual_seed(0)
    model = build_generator(params).eval()
    torch.nn.init.normal_(model.face_decoder.output_block[1].weight, std=0.1)  # not the bare reference
    terms = GeneratorLoss(params, expert=None, flow_net=None)(model, batch, step=0)
    with torch.no_grad():
        frames, _ = model(batch.audio, batch.faces)
    inside = batch.mouth[:, None].expand_as(frames)
    assert 0 < inside.float().mean() < 0.5
    torch.testing.assert_close(terms["mouth_l1"], (frames - batch.target).abs()[inside].mean())
    torch.testing.assert_close(terms["loss"], terms["l1"] + 3.0 * terms["mouth_l1"])
    assert "mouth_l1" not in GeneratorLoss(_params(ofs_weight=0.0), None, None)(model, batch, 0)
    with pytest.raises(ValueError, match="do not fit"):
        mouth_l1_loss(frames, batch.target, batch.mouth[:, :2])
