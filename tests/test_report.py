"""What the study chapter reports, on small hand-made pipeline outputs.

The claims: our table and the paper's stay apart; the better of two variants follows each column's
direction, and values that print the same are a tie; the head-to-head paragraph counts and states
what the numbers say, whichever variant wins; curves from several logs share one step axis; the
experts are judged against chance; stage times come in pipeline order in minutes; frame strips put
the real frames on top and refuse strips from different clips.
"""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pandas as pd
import pytest

from opflowtalker.metrics.lip_dynamics import lip_sync_row, loudness_per_frame, window_loudness, window_samples
from opflowtalker.report import (ReportError, agreement_sentence, agreement_with_paper, better_of, eval_curves,
                                 flow_network_bounds, frame_strip_rows, head_to_head_sentences, lip_sync_sentence,
                                 lipreader_verdict, missing_rows, paper_rows, sharpness, sharpness_sentence,
                                 stage_minutes, strips_of_clip, syncnet_verdict, table_frame, training_curves,
                                 unavailable_notes, variant_labels, versus_reference, winner_mask)
from conftest import ROOT
from opflowtalker import audio
from opflowtalker.tables import format_cell

COLUMNS = [{"key": "psnr", "heading": "PSNR ↑", "higher_is_better": True},
           {"key": "lse_d", "heading": "LSE-D ↓", "higher_is_better": False},
           {"key": "fid", "heading": "FID ↓", "higher_is_better": False}]
FID_REASON = "needs Inception weights"


def _row(variant: str, label: str, **values) -> dict:
    row = {"variant": variant, "label": label, **{c["key"]: values.get(c["key"]) for c in COLUMNS}}
    row["unavailable"] = {"fid": FID_REASON}
    row["cells"] = {c["key"]: format_cell(row, c["key"]) for c in COLUMNS}
    return row


def _table(full: dict, wav2lip: dict) -> dict:
    return {"columns": COLUMNS,
            "ours": [_row("wav2lip", "Wav2Lip (baseline)", **wav2lip), _row("full", "OpFlowTalker (full model)", **full),
                     _row("ground_truth", "Ground Truth", psnr=100.0, lse_d=6.0)],
            "paper": {"Wav2Lip": {"psnr": 31.151, "fid": 4.738}, "OpFlowTalker": {"psnr": 32.832, "fid": 2.635}}}


@pytest.fixture
def table() -> dict:
    # OpFlowTalker wins PSNR (higher) and loses LSE-D (it is higher, and lower is better).
    return _table(full=dict(psnr=20.0, lse_d=8.0), wav2lip=dict(psnr=16.0, lse_d=7.5))


def test_our_table_has_every_row_and_nan_where_a_metric_could_not_run(table):
    frame = table_frame(table, "ours")
    assert list(frame.index) == ["Wav2Lip (baseline)", "OpFlowTalker (full model)", "Ground Truth"]
    assert list(frame.columns) == ["PSNR ↑", "LSE-D ↓", "FID ↓"]
    assert frame.loc["OpFlowTalker (full model)", "PSNR ↑"] == 20.0
    assert frame["FID ↓"].isna().all()
    assert unavailable_notes(table) == {"FID ↓": FID_REASON}


def test_paper_table_keeps_only_the_columns_the_paper_reports(table):
    frame = table_frame(table, "paper")
    assert list(frame.index) == ["Wav2Lip", "OpFlowTalker"]
    assert list(frame.columns) == ["PSNR ↑", "FID ↓"]  # no LSE-D in the paper
    assert frame.loc["OpFlowTalker", "FID ↓"] == 2.635
    with pytest.raises(ReportError):
        table_frame(table, "theirs")


def test_better_of_follows_each_columns_direction(table):
    winners = better_of(table["ours"], "full", "wav2lip", COLUMNS)
    assert winners == {"psnr": "full", "lse_d": "wav2lip", "fid": None}
    # Swapping the pair does not change who wins.
    assert better_of(table["ours"], "wav2lip", "full", COLUMNS) == winners


def test_values_that_print_the_same_are_a_tie():
    tied = _table(full=dict(psnr=20.00001, lse_d=8.0), wav2lip=dict(psnr=20.0, lse_d=8.0))
    assert better_of(tied["ours"], "full", "wav2lip", COLUMNS)["psnr"] == "tie"
    assert not winner_mask(tied, "full", "wav2lip").to_numpy().any()


def test_winner_mask_marks_the_better_cell_only(table):
    mask = winner_mask(table, "full", "wav2lip")
    expected = pd.DataFrame(False, index=mask.index, columns=mask.columns)
    expected.loc["OpFlowTalker (full model)", "PSNR ↑"] = True
    expected.loc["Wav2Lip (baseline)", "LSE-D ↓"] = True
    pd.testing.assert_frame_equal(mask, expected)


def test_paper_rows_take_our_variant_names_and_skip_rows_the_paper_lacks(table):
    rows = paper_rows(table, {"wav2lip": "Wav2Lip", "full": "OpFlowTalker", "no_ofs": "without OFSM"})
    assert rows == [{"variant": "wav2lip", "label": "Wav2Lip", "psnr": 31.151, "fid": 4.738},
                    {"variant": "full", "label": "OpFlowTalker", "psnr": 32.832, "fid": 2.635}]


def test_agreement_with_paper_compares_directions_not_numbers(table):
    # Here OpFlowTalker wins PSNR as in the paper (20 vs 16; paper 32.832 vs 31.151); the paper
    # reports no LSE-D, and FID was not computed here.
    names = {"wav2lip": "Wav2Lip", "full": "OpFlowTalker"}
    agreement = agreement_with_paper(table, names)
    assert agreement.to_dict(orient="index") == {
        "Wav2Lip (baseline)": {"PSNR ↑": "same", "LSE-D ↓": "n/a", "FID ↓": "n/a"}}
    opposite = _table(full=dict(psnr=15.0, lse_d=8.0, fid=3.0), wav2lip=dict(psnr=16.0, lse_d=7.5, fid=3.0))
    assert agreement_with_paper(opposite, names).iloc[0].tolist() == ["opposite", "n/a", "tie here"]
    with pytest.raises(ReportError):
        agreement_with_paper(table, {"wav2lip": "Wav2Lip"})


def _ablation(full: dict, row: dict) -> dict:
    """A one-row ablation table with per-clip values: ``row`` changes one switch from ``full``."""
    def scored(variant, label, values, switch=None):
        r = _row(variant, label, **{k: float(np.mean(v)) for k, v in values.items()})
        r["per_clip"] = {**values, "keys": [f"c{i}" for i in range(len(next(iter(values.values()))))]}
        r["switch"] = switch
        return r

    return {"columns": COLUMNS, "reference": "full", "compare_with": "full",
            "paper_names": {"full": "Mean", "ofs_max": "Max"},
            "ours": [scored("full", "full model", full), scored("ofs_max", "max pooling", row, "ofs_max")],
            "paper": {"Mean": {"psnr": 32.376, "lse_d": 6.036}, "Max": {"psnr": 32.523, "lse_d": 5.905}}}


def test_versus_reference_marks_a_row_better_or_worse_only_outside_the_paired_interval():
    clips = np.arange(8.0)
    # The row is higher on PSNR on every clip by 1 (better), and equal up to noise on LSE-D.
    table = _ablation({"psnr": clips, "lse_d": clips}, {"psnr": clips + 1, "lse_d": clips + np.tile([0.5, -0.5], 4)})
    versus = versus_reference(table)
    assert versus.to_dict(orient="index") == {"max pooling": {"PSNR ↑": "better", "LSE-D ↓": "=", "FID ↓": ""}}
    worse = versus_reference(_ablation({"psnr": clips, "lse_d": clips}, {"psnr": clips - 1, "lse_d": clips + 1}))
    assert worse.iloc[0].tolist() == ["worse", "worse", ""]


def test_agreement_sentence_counts_the_papers_direction_and_says_what_follows():
    clips = np.arange(8.0)
    # The paper: Max beats Mean on PSNR (higher) and on LSE-D (lower). Here: Max wins PSNR, LSE-D level.
    table = _ablation({"psnr": clips, "lse_d": clips}, {"psnr": clips + 1, "lse_d": clips + np.tile([0.5, -0.5], 4)})
    text = agreement_sentence(table)
    assert "the winner is the paper's on 1, the other on 0, and no difference is measured here on 1" in text
    assert text.endswith("mostly goes the paper's way.")
    against = _ablation({"psnr": clips, "lse_d": clips}, {"psnr": clips - 1, "lse_d": clips + 1})
    assert agreement_sentence(against).endswith("mostly goes against the paper.")
    level = _ablation({"psnr": clips, "lse_d": clips}, {"psnr": clips + np.tile([0.5, -0.5], 4), "lse_d": clips})
    assert agreement_sentence(level).endswith("can neither confirm nor contradict the paper's direction.")


def test_head_to_head_states_each_metric_with_hand_computed_differences(table):
    text = head_to_head_sentences({"table1": table}, "full", "wav2lip")
    lead, _, *bullets = text.splitlines()
    assert lead == ("Of the 2 metrics computed for both, **OpFlowTalker (full model)** is better than "
                    "**Wav2Lip (baseline)** on 1, worse on 1, and no difference is measured on 0: neither comes "
                    "out ahead. Not computed: FID ↓.")
    # Rows without per-clip values are compared as printed: PSNR 20 vs 16, LSE-D 8 vs 7.5 (lower is better).
    assert bullets == [
        "- PSNR ↑: 20.000 vs 16.000; no per-clip values, compared as printed: OpFlowTalker (full model) is better.",
        "- LSE-D ↓: 8.0000 vs 7.5000; no per-clip values, compared as printed: Wav2Lip (baseline) is better.",
    ]


def test_head_to_head_follows_the_paired_interval_over_clips(table):
    """A difference that every clip shows is a win; one that clips disagree on is no difference."""
    rows = {r["variant"]: r for r in table["ours"]}
    rows["wav2lip"]["per_clip"] = {"psnr": [16.0, 15.0, 17.0, 16.0], "lse_d": [7.0, 8.0, 7.5, 7.5]}
    rows["full"]["per_clip"] = {"psnr": [20.0, 19.0, 21.0, 20.0], "lse_d": [9.0, 7.0, 8.5, 7.5]}
    text = head_to_head_sentences({"table1": table}, "full", "wav2lip")
    assert "- PSNR ↑: 20.000 vs 16.000; difference +4, paired 95% interval [+4, +4]: OpFlowTalker (full model) " \
           "is better." in text
    assert "- LSE-D ↓: 8.0000 vs 7.5000; difference +0.5" in text and text.endswith("no difference measured.")
    assert better_of(table["ours"], "full", "wav2lip", COLUMNS[:2]) == {"psnr": "full", "lse_d": "tie"}


def test_head_to_head_reports_a_loss_as_a_loss():
    losing = _table(full=dict(psnr=15.0, lse_d=9.0), wav2lip=dict(psnr=16.0, lse_d=7.5))
    text = head_to_head_sentences({"table1": losing}, "full", "wav2lip")
    assert "better than **Wav2Lip (baseline)** on 0, worse on 2" in text
    assert "**Wav2Lip (baseline)** comes out ahead" in text


def test_head_to_head_counts_a_metric_once_across_tables(table):
    again = {**table, "columns": COLUMNS[:1]}  # table3 repeats PSNR
    text = head_to_head_sentences({"table1": table, "table3": again})
    assert text.count("- PSNR ↑") == 1


def test_head_to_head_needs_both_rows(table):
    with pytest.raises(ReportError, match="no_ofs"):
        head_to_head_sentences({"table1": table}, "no_ofs", "wav2lip")


def _log(steps, **terms) -> dict:
    return {"history": {"step": steps, **terms}}


def test_training_curves_share_one_step_axis_and_skip_logs_without_the_term():
    logs = {"wav2lip": _log([10, 20], l1=[0.3, 0.2]),
            "full": _log([10, 20, 30], l1=[0.4, 0.3, 0.1], ofs=[1.0, 0.5, 0.25])}
    l1 = training_curves(logs, "l1")
    assert list(l1.index) == [10, 20, 30] and list(l1.columns) == ["wav2lip", "full"]
    assert math.isnan(l1.loc[30, "wav2lip"]) and l1.loc[30, "full"] == 0.1
    ofs = training_curves(logs, "ofs")
    assert list(ofs.columns) == ["full"]
    with pytest.raises(ReportError, match="'kl'"):
        training_curves(logs, "kl")


def test_eval_curves_read_the_validation_scores():
    log = {"history": {"step": [1], "eval": [{"step": 50, "accuracy": 0.6}, {"step": 100, "accuracy": 0.7}]}}
    curve = eval_curves({"syncnet": log}, "accuracy")
    assert curve["syncnet"].to_dict() == {50: 0.6, 100: 0.7}


def _lipreader_log(wer: float) -> dict:
    return {"test": {"wer": wer, "cer": 0.3, "sentence_accuracy": 0.25, "n": 4},
            "chance": {"majority_sentence": "PLACE BLUE IN U FIVE AGAIN", "majority_wer": 0.8,
                       "majority_cer": 0.6, "random_wer": 0.75, "random_cer": 0.62}}


def test_lipreader_is_judged_against_the_better_of_the_two_chance_levels():
    assert "better than chance" in lipreader_verdict(_lipreader_log(0.5))
    # 0.78 beats the majority sentence (0.8) but not random words (0.75): not above chance.
    text = lipreader_verdict(_lipreader_log(0.78))
    assert "no better than chance" in text
    assert "WER is 0.780" in text and "\"PLACE BLUE IN U FIVE AGAIN\"" in text and "25%" in text


def test_syncnet_is_judged_against_half_right():
    log = {"history": {"eval": [{"step": 3, "bce": 0.84, "accuracy": 0.375}]}}
    text = syncnet_verdict(log)
    assert "37.5%" in text and "no better than chance" in text
    log["history"]["eval"].append({"step": 200, "bce": 0.5, "accuracy": 0.8})
    assert "After 200 steps" in syncnet_verdict(log) and "better than chance" in syncnet_verdict(log)
    with pytest.raises(ReportError):
        syncnet_verdict({"history": {"step": [1]}})


def test_stage_minutes_in_pipeline_order():
    times = {"train-generator full": {"seconds": 120.0}, "corpus": {"seconds": 30.0},
             "evaluate full": {"seconds": 6.0}, "train-generator wav2lip": {"seconds": 60.0},
             "preprocess": {"seconds": 90.0}}
    frame = stage_minutes(times)
    assert list(frame.index) == ["corpus", "preprocess", "train-generator full", "train-generator wav2lip",
                                 "evaluate full"]
    assert frame["minutes"].tolist() == [0.5, 1.5, 2.0, 1.0, 0.1]
    assert frame.loc["evaluate full", "command"] == "evaluate"
    assert frame["minutes"].sum() == pytest.approx(5.1)


def _frames(clip: str, value: int, n: int) -> dict:
    return {"generated": np.full((n, 4, 4, 3), value, np.uint8), "real": np.full((n, 4, 4, 3), 200, np.uint8),
            "clip": np.array(clip)}


def test_frame_strips_put_the_real_frames_on_top_and_cut_to_a_common_length():
    rows, names = frame_strip_rows({"wav2lip": _frames("woman/1", 10, 4), "full": _frames("woman/1", 20, 3)})
    assert names == ["real", "wav2lip", "full"]
    assert [len(r) for r in rows] == [3, 3, 3]
    assert [int(r[0][0, 0, 0]) for r in rows] == [200, 10, 20]
    rows, _ = frame_strip_rows({"full": _frames("woman/1", 20, 3)}, n_frames=2)
    assert len(rows[0]) == 2


def test_mouth_strips_start_where_asked_hold_the_still_frame_and_keep_the_lower_half():
    real = np.arange(6 * 4 * 4 * 3, dtype=np.uint8).reshape(6, 4, 4, 3)
    shown = {"generated": real[::-1].copy(), "real": real, "clip": np.array("woman/1"), "still_index": np.array(4)}
    rows, names = frame_strip_rows({"full": shown}, n_frames=3, start=2, still=True, mouth=True)
    assert names == ["real", "still_reference", "full"]
    np.testing.assert_array_equal(rows[0][0], real[2, 2:])
    assert all((tile == real[4, 2:]).all() for tile in rows[1]) and len(rows[1]) == 3
    np.testing.assert_array_equal(rows[2][2], real[::-1][4, 2:])
    with pytest.raises(ReportError, match="cannot start"):
        frame_strip_rows({"full": shown}, start=6)
    with pytest.raises(ReportError, match="still reference"):
        frame_strip_rows({"full": _frames("woman/1", 20, 3)}, still=True)
    with pytest.raises(ReportError, match="beyond the 6 real frames"):
        frame_strip_rows({"full": {**shown, "still_index": np.array(9)}}, still=True)


def test_a_clip_the_frame_file_does_not_keep_is_refused_in_one_sentence():
    kept = {"n_clips": np.array(1), **{f"{k}_0": v for k, v in _frames("woman/1", 10, 4).items()},
            "still_index_0": np.array(2)}
    assert str(strips_of_clip(kept, 0)["clip"]) == "woman/1"
    with pytest.raises(ReportError, match="keeps 1 clips"):
        strips_of_clip(kept, 1)
    with pytest.raises(ReportError, match="keeps 0 clips"):
        strips_of_clip(_frames("woman/1", 10, 4), 0)


def test_frame_strips_from_different_clips_are_refused():
    with pytest.raises(ReportError, match="different clips"):
        frame_strip_rows({"wav2lip": _frames("woman/1", 10, 4), "full": _frames("woman/2", 20, 4)})


def test_variant_labels_keep_the_files_order():
    params = {"generators": {"variants": {"wav2lip": {"label": "Wav2Lip (baseline)"}, "full": {}}}}
    assert variant_labels(params) == {"wav2lip": "Wav2Lip (baseline)", "full": "full"}
    with pytest.raises(ReportError):
        variant_labels({})


def test_lip_sync_row_finds_a_mouth_that_opens_two_frames_before_the_sound():
    rng = np.random.default_rng(0)
    rms = 0.5 + np.abs(rng.normal(size=200))
    rms[50:70] = 0.0  # a pause
    gap = 3.0 * np.roll(rms, -2)  # the mouth two frames ahead
    row = lip_sync_row(gap, rms, fps=25.0)
    assert row["best r within ±0.2 s"] == pytest.approx(1.0, abs=0.02)
    assert row["mouth ahead of sound (ms)"] == 80.0
    assert row["r (lip gap, loudness)"] < 0.5
    assert row["mean gap, silence (px)"] < row["mean gap, speech (px)"]
    text = lip_sync_sentence("M", row, 200)
    assert "80 ms ahead of" in text and "is more open in speech" in text


def test_a_mouth_that_does_not_move_is_said_to_hardly_move():
    rms = np.abs(np.random.default_rng(1).normal(size=100))
    row = lip_sync_row(np.full(100, 4.0), rms, fps=25.0)
    assert np.isnan(row["r (lip gap, loudness)"]) and row["lip gap s.d. (px)"] == 0
    assert "hardly moves" in lip_sync_sentence("M", row, 100)
    np.testing.assert_allclose(loudness_per_frame(np.ones(1280), 16000, 25.0, 3), [1.0, 1.0, 0.0])


def test_a_mel_window_hears_exactly_the_samples_window_samples_names():
    # A burst of noise in silence: a window's mel values rise above the floor of the scale exactly
    # when the burst lies in its span, and that is when its loudness is above zero.
    wav = np.zeros(16000 * 2, np.float32)
    wav[8100:9100] = np.random.default_rng(0).normal(0, 0.1, 1000)
    windows = audio.mel_windows(audio.melspectrogram(wav))
    loudness = window_loudness(wav, 25.0, len(windows))
    hears = windows.max(axis=(1, 2)) > -4 + 1e-3
    assert hears.any() and not hears.all()
    assert (loudness > 0).tolist() == hears.tolist()
    first, last = window_samples(12, 25.0, len(wav))
    assert (first, last) == (38 * 200 - 400, (38 + 15) * 200 + 400)  # int(80 * 12 / 25) = 38
    assert window_samples(10_000, 25.0, len(wav))[1] == len(wav)  # past the end: the last 16 steps


def test_blurring_lowers_sharpness_and_the_sentence_says_so():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    region = (32, 64, 0, 64)
    blurred = cv2.GaussianBlur(photo, (0, 0), 2.0)
    assert sharpness(photo[None], region) == pytest.approx(sharpness(photo, region))
    ratio = sharpness(blurred[None], region) / sharpness(photo[None], region)
    assert ratio < 0.5
    assert "blurred" in sharpness_sentence("W", ratio)
    assert "as sharp as the photo" in sharpness_sentence("O", 0.95)
    assert "softer than a copy" in sharpness_sentence("O", 0.6, reference="a copy")
    assert "artefacts" in sharpness_sentence("O", 2.0)
    assert "keeps 95% of the sharpness of the photo in the mouth" in sharpness_sentence("O", 0.95, "the mouth")
    with pytest.raises(ReportError):
        sharpness(photo[None], (10, 10, 0, 64))


def _clip_row(variant: str, **per_clip: list[float]) -> dict:
    n = len(next(iter(per_clip.values())))
    return {"variant": variant, "label": variant, **{k: float(np.mean(v)) for k, v in per_clip.items()},
            "per_clip": {"keys": [f"woman/{i}" for i in range(n)], **per_clip}}


def test_lip_sync_bounds_hold_a_generator_to_the_truth_and_above_the_still_frame():
    from opflowtalker.report import lip_sync_bounds

    rng = np.random.default_rng(0)
    n = 20

    def values(centre):
        return list(centre + rng.normal(0, 0.01, n))

    rows = {"ground_truth": _clip_row("ground_truth", wer_script=values(0.2), lse_c=values(0.6),
                                      offset_ok=[1.0] * n, silence_motion=values(1.0), m_lmd=values(0.0)),
            "still_reference": _clip_row("still_reference", wer_script=values(0.85), lse_c=values(0.05),
                                         offset_ok=[0.0] * n, silence_motion=values(1.1), m_lmd=values(2.0)),
            "good": _clip_row("good", wer_script=values(0.4), lse_c=values(0.4), offset_ok=[1.0] * 16 + [0.0] * 4,
                              silence_motion=values(1.2), m_lmd=values(1.0)),
            "mumbles": _clip_row("mumbles", wer_script=values(0.4), lse_c=values(0.35), offset_ok=[1.0] * n,
                                 silence_motion=values(2.0), m_lmd=values(1.0))}
    good = lip_sync_bounds(rows, "good")
    assert good["met"].all(), good
    assert good.loc["LSE-C / the real video's", "measured"] == pytest.approx(0.4 / 0.6, abs=0.01)
    mumbles = lip_sync_bounds(rows, "mumbles")
    failed = mumbles.index[~mumbles["met"]].tolist()
    # It moves in silence more than 1.5x the truth; where a still frame is close to ideal it is no floor.
    assert failed == ["motion in silence / the real video's"]
    assert not lip_sync_bounds(rows, "still_reference")["met"].all()


def test_the_strips_start_where_the_real_mouth_moves_most():
    from opflowtalker.report import moving_stretch

    real = np.zeros((20, 8, 8, 3), np.uint8)
    real[11:15:2, 4:] = 255  # the mouth flickers in frames 11-14
    real[2, :4] = 255  # the upper half does not count
    start = moving_stretch(real, 4)
    assert 8 <= start <= 11 and moving_stretch(real[:3], 4) == 0



def test_head_to_head_pairs_every_metric_of_every_table_by_its_clips():
    from opflowtalker.report import head_to_head_sentences

    def row(variant, psnr, wer):
        return {"variant": variant, "label": variant, "psnr": float(np.mean(psnr)), "wer": float(np.mean(wer))}

    a, b = row("a", [20, 21, 22, 23], [0.5, 0.5, 0.5, 0.5]), row("b", [10, 11, 12, 13], [0.9, 0.8, 0.9, 0.8])
    tables = {}
    for name, key, heading, higher in (("table1", "psnr", "PSNR", True), ("table2", "wer", "WER", False)):
        tables[name] = {"columns": [{"key": key, "heading": heading, "higher_is_better": higher}],
                        "ours": [{**r, "per_clip": {"keys": ["c0", "c1", "c2", "c3"],
                                                    key: {"a": [20, 21, 22, 23] if key == "psnr" else [0.5] * 4,
                                                          "b": [10, 11, 12, 13] if key == "psnr" else [0.9, 0.8] * 2
                                                          }[r["variant"]]}} for r in (a, b)]}
    text = head_to_head_sentences(tables, "a", "b")
    assert "compared as printed" not in text and text.count("paired 95% interval") == 2


def test_flow_network_bounds_hold_the_ofs_network_and_gma_to_their_claims():
    estimators = {"zero flow": {"epe_mouth": 0.8}, "raft_small": {"epe_mouth": 0.5}, "raft": {"epe_mouth": 0.6},
                  "gma": {"epe_mouth": 0.7}}
    bounds = flow_network_bounds(estimators, "raft_small")
    assert bounds["measured"].tolist() == [0.375, round(0.7 / 0.6, 3)] and not bounds["met"].any()
    estimators.update(raft_small={"epe_mouth": 0.4}, gma={"epe_mouth": 0.6})
    assert flow_network_bounds(estimators, "raft_small")["met"].all()  # half removed; GMA level with RAFT
    with pytest.raises(ReportError):
        flow_network_bounds({"zero flow": {"epe_mouth": 0.8}}, "dis")


def test_a_row_missing_as_a_whole_gives_its_reason_once_and_not_as_a_columns_note(table):
    absent = {"variant": "gma", "label": "OFS with GMA", "kind": "missing", "why": "not trained here", "psnr": None,
              "lse_d": None, "fid": None, "cells": {c["key"]: "n/a (row not in this run)" for c in COLUMNS}}
    table = {**table, "ours": [*table["ours"], absent]}
    assert missing_rows(table) == {"OFS with GMA": "not trained here"}
    assert unavailable_notes(table) == {"FID ↓": FID_REASON}  # the columns' notes come from the measured rows


def test_a_tables_views_group_missing_rows_by_reason_and_label_the_papers_rows(tmp_path):
    from opflowtalker.params import load_params
    from opflowtalker.report import table_views
    from opflowtalker.tables import LAYOUT_HD, NOT_IN_HD, build_tables
    from opflowtalker.training.generator import all_variants

    variants = all_variants(load_params(ROOT / "params.yaml")["generators"])
    rng = np.random.default_rng(0)
    for name in ("full", "wav2lip", "ground_truth", "still_reference", "wrong_audio", "shifted_audio"):
        values = rng.normal(20, 1, 6).tolist()
        row = {"variant": name, "label": name, "psnr": float(np.mean(values)), "ci": {"psnr": [19.0, 21.0]},
               "per_clip": {"keys": list("abcdef"), "psnr": values}}
        (tmp_path / f"{name}.json").write_text(json.dumps(row))
    tables = build_tables(tmp_path, variants, tmp_path, LAYOUT_HD, {"full": "trained", "wav2lip": "resized"})
    views = table_views(tables["table5a"], head_to_head=False, data="256 px", paper_data="HDTF")
    texts = [v.data for v in views if hasattr(v, "data") and isinstance(v.data, str)]
    missing = next(t for t in texts if t.startswith("Rows not in this run"))
    assert missing.count(NOT_IN_HD) == 1  # the reason once, for the three rows it covers
    assert all(variants[name]["label"] in missing for name in ("flownet", "raft", "gma"))
    captions = [v.caption for v in views if hasattr(v, "caption") and v.caption]
    assert captions[0].startswith("ours (256 px)") and "reported by the paper (HDTF" in captions[1]
    # the anchor (RAFT) is missing, so no sentence on the paper's direction is claimed
    assert any(t.startswith("No row of this table") for t in texts)
