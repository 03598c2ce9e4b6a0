"""The flow chapter's tables and sentences follow the run they describe, whichever way it came out."""
from __future__ import annotations

import pandas as pd
import pytest

from opflowtalker.report import ReportError, bound_lines
from opflowtalker.report.flow import (NEAR_ZERO, bounds_sentence, estimator_table, flow_network_bounds, listed,
                                      networks_table, ofs_sentences, ranking_sentences, syllable_sentence,
                                      syllable_table, why_sentences, wrong_motion_ratios)


def epe(**estimators):
    return {"pairs": 40, "size": 96, "mean_flow_px": 0.42, "mean_mouth_flow_px": 0.9,
            "estimators": {name: {"epe": face, "epe_mouth": mouth, "ms_per_pair": 1.0}
                           for name, (face, mouth) in estimators.items()}}


LOGS = {"raft": {"steps": 400, "seconds": 600.0}, "gma": {"steps": 200, "seconds": 1200.0},
        "flownet": {"steps": 800, "seconds": 300.0}}
SIZES = {"raft": 1_000_000, "gma": 2_000_000, "flownet": 500_000}


def study(**estimators):
    run = epe(**estimators)
    table = estimator_table(run)
    return run, table, networks_table(table, LOGS, SIZES)


def test_networks_table_measures_each_trained_network_against_the_zero_flow():
    _, table, networks = study(**{"zero flow": (0.5, 1.0), "DIS": (0.2, 0.5), "raft": (0.4, 0.6),
                                  "gma": (0.5, 1.0)})
    assert list(networks.index) == ["raft", "gma"]  # flownet was not scored, so it has no line
    assert networks.loc["raft", "error removed vs zero flow (%)"] == pytest.approx(20.0)
    assert networks.loc["raft", "EPE removed per training minute (px)"] == pytest.approx(0.1 / 10)
    assert networks.loc["gma", "parameters (M)"] == 2.0 and networks.loc["gma", "training (min)"] == 20.0
    with pytest.raises(ReportError):
        networks_table(table, {"pwc": {"steps": 1, "seconds": 1.0}}, {"pwc": 1})


def test_ranking_says_whether_the_networks_beat_the_classical_methods_and_the_zero_flow():
    _, table, networks = study(**{"zero flow": (0.5, 1.0), "DIS": (0.2, 0.5), "raft": (0.4, 0.6),
                                  "gma": (0.55, 1.1)})
    text = ranking_sentences(table, networks, "raft", "params.yaml")
    assert "Lowest EPE of all: `DIS` (0.200 px)" in text and "does not beat the best classical method, `DIS`" in text
    assert "`raft` beats the zero flow (0.500 px); `gma` does not (0.550 px)." in text
    assert "`gma` the least (-0.0025 px, it is worse than no motion at all)" in text
    assert "the generators' OFS loss uses `raft`" in text and "whose mouth EPE is 0.600 px" in text
    _, table, networks = study(**{"zero flow": (0.5, 1.0), "DIS": (0.45, 0.9), "raft": (0.4, 0.6)})
    text = ranking_sentences(table, networks, "gma", "params.yaml")
    assert "Lowest EPE of all: `raft`" in text and ", beats the best classical method" in text
    assert "whose mouth EPE" not in text  # the OFS loss's network was not scored


def test_why_explains_a_loss_to_the_classical_methods_or_states_the_win():
    run, table, networks = study(**{"zero flow": (0.5, 1.0), "DIS": (0.2, 0.5), "raft": (0.4, 0.6),
                                    "gma": (0.5 * (1 + NEAR_ZERO / 2), 1.0)})
    text = why_sentences(run, table, networks)
    assert text.startswith("Why the networks do not win here.") and "train for 10.0–20.0 CPU minutes" in text
    assert "`gma` scores within 5% of the zero flow's EPE" in text
    assert "`gma` learns slowest, and it is the largest network (2.00 M parameters)." in text
    run, table, networks = study(**{"zero flow": (0.5, 1.0), "DIS": (0.45, 0.9), "raft": (0.4, 0.6)})
    assert why_sentences(run, table, networks).startswith("Here the trained `raft` beats the classical methods")


def test_bounds_sentence_names_the_unmet_bounds():
    met = flow_network_bounds(epe(**{"zero flow": (0.5, 1.0), "raft": (0.3, 0.4), "gma": (0.3, 0.4)})["estimators"],
                              "raft")
    assert bounds_sentence(met, LOGS) == "Both bounds are met on this run."
    unmet = flow_network_bounds(epe(**{"zero flow": (0.5, 1.0), "raft": (0.3, 0.7), "gma": (0.5, 1.0)})["estimators"],
                                "raft")
    text = bounds_sentence(unmet, LOGS)
    assert text.startswith("Not met on this run: raft (the OFS loss's network)") and "GMA's mouth EPE / RAFT's" in text
    assert "GMA trains 200 steps in 20 CPU minutes" in text


def test_ofs_sentences_say_which_wrong_motions_the_loss_does_not_punish():
    ofs = pd.DataFrame({"raft": [1.0, 2.0, 3.0, 1.5], "gma": [1.0, 1.02, 0.97, 1.05]},
                       index=["real frames", "still", "reversed", "one frame late"])
    assert list(wrong_motion_ratios(ofs, "gma").round(2)) == [1.02, 0.97, 1.05]
    _, table, _ = study(**{"zero flow": (0.5, 1.0), "raft": (0.4, 0.6), "gma": (0.5, 1.0)})
    text = ofs_sentences(ofs, table)
    assert "`raft` scores the real frames lowest and every wrong motion higher (1.50× to 3.00×); its EPE is 0.400" in text
    assert "`gma` scores `reversed` no higher than the real frames (0.97× to 1.05×" in text
    assert "nearly the same loss for all 4 (within 10%)" in text and text.count("nearly the same") == 1


def summary(mean, low, high):
    return {"mean": mean, "interval": [low, high]}


def test_syllable_claims_follow_their_intervals():
    flow = {"same_syllable_across_identities": summary(0.6, 0.5, 0.7), "other_syllables_same_identity":
            summary(0.4, 0.3, 0.5), "difference": summary(0.2, 0.1, 0.3), "retrieval": summary(0.8, 0.7, 0.9),
            "occurrences": 36, "chance": 0.17}
    image = {**flow, "difference": summary(-0.2, -0.3, -0.1)}
    table = syllable_table({"lip flow": flow, "image": image})
    assert table.loc["lip flow", "difference (paired)"] == "0.20 [0.10, 0.30]"
    text = syllable_sentence({"lip flow": flow, "image": image}, 6, 3)
    assert text.startswith("36 occurrences of 6 syllables by 3 identities (chance retrieval 0.17).")
    assert "as the paper's Figure 1 says" in text and "The images do the opposite" in text
    flat = {**flow, "difference": summary(0.05, -0.01, 0.1)}
    text = syllable_sentence({"lip flow": flat, "image": flat}, 6, 3)
    assert "against what the paper's Figure 1 says" in text and "do not separate identity" in text


def test_bound_lines_judge_each_bound_by_its_comparison():
    lines = bound_lines([("a", 0.5, ">=", 0.5), ("b", 0.51, "<=", 0.5)])
    assert [line["met"] for line in lines] == [True, False] and lines[1]["bound"] == "<= 0.5"
    with pytest.raises(ReportError):
        bound_lines([("c", 1.0, "==", 1.0)])
    assert listed(["a"]) == "`a`" and listed(["a", "b", "c"]) == "`a`, `b` and `c`"
