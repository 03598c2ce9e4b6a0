"""Each table's rows map to the variants of params.yaml that produce them, and each ablation row
differs from its table's reference in exactly the switch it names, under every profile."""
from __future__ import annotations

import json

import pytest

from conftest import ROOT
from opflowtalker.params import load_params, merge
from opflowtalker.tables import LAYOUT, LAYOUT_HD, NOT_IN_HD, PAPER, TABLES, build_tables, hd_rows
from opflowtalker.training.generator import all_variants, changed_fields, variant_params, warm_start_of
import yaml

RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
PROFILES = sorted(RAW["profiles"])


def _profiled(profile: str) -> dict:
    data = {k: v for k, v in RAW.items() if k != "profiles"}
    return merge(data, RAW["profiles"][profile] or {})


def _group(profile: str) -> dict:
    return _profiled(profile)["generators"]


ALL_LAYOUTS = {**LAYOUT, **LAYOUT_HD}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("table", sorted(ALL_LAYOUTS))
def test_each_ablation_row_differs_from_its_reference_in_the_switch_it_names(table, profile):
    group = _group(profile)
    layout = ALL_LAYOUTS[table]
    reference = variant_params(group, layout.reference)
    for row in layout.rows:
        changed = changed_fields(reference, variant_params(group, row.variant))
        if row.switch is not None and changed == [] and profile == "paper":
            # the paper's full model uses GMA: in the paper profile our reference does too, so the GMA
            # row is the reference's own loss (and nothing else is)
            assert (row.variant, row.switch, getattr(reference, row.switch)) == ("gma", "flow_network", "gma"), (table, row)
        elif row.switch is not None:
            assert changed == [row.switch], (table, row.variant, changed)
        elif row.variant == layout.reference:
            assert changed == []
        else:  # shown for context (the baseline, our additions): more than one switch, and no paper row
            assert len(changed) > 1 and row.variant in ("wav2lip", "full_motion"), (table, row.variant, changed)


def test_every_variant_has_a_row_and_every_row_a_variant_or_a_reason():
    group = load_params(ROOT / "params.yaml")["generators"]
    shown = {row.variant for layout in LAYOUT.values() for row in layout.rows}
    assert set(all_variants(group)) == shown
    assert {row.variant for layout in LAYOUT_HD.values() for row in layout.rows} <= set(all_variants(group))
    for name, layout in ALL_LAYOUTS.items():
        assert layout.reference in {row.variant for row in layout.rows}
        assert layout.anchor in layout.paper_names, name  # the paper has the row the others are read against
        assert set(layout.paper_names.values()) <= set(PAPER[name]), name
        assert name in TABLES


def test_loss_variants_share_their_references_first_steps_and_nothing_else_of_theirs():
    group = load_params(ROOT / "params.yaml")["generators"]
    sources = {warm_start_of(group, name) for name in group["loss_variants"]}
    assert sources == set(group["warm_up"]["variants"])
    for name in group["variants"]:
        assert warm_start_of(group, name) is None  # the architecture rows train from scratch
    for table in ("table3a", "table3b", "table3c", "table6", "table7"):
        for row in LAYOUT[table].rows:
            if row.switch is not None:  # a loss-only row continues its own table's reference
                assert warm_start_of(group, row.variant) == LAYOUT[table].reference, (table, row.variant)


@pytest.mark.parametrize("profile", PROFILES)
def test_the_hd_half_trains_variants_from_scratch_and_resizes_only_96_px_ones(profile):
    params = _profiled(profile)
    group = params["generators"]
    rows = hd_rows(params["hd"], all_variants(group), group["variants"])
    assert "full" in rows and rows["full"] == "trained"  # Table 4's and Table 5's reference
    shown = {row.variant for layout in LAYOUT_HD.values() for row in layout.rows}
    assert set(rows) <= shown
    hd = merge(params, params["hd"]["overrides"])["generators"]
    for name, kind in rows.items():
        size = variant_params(hd if kind == "trained" else group, name).image_size
        assert size == (256 if kind == "trained" else 96), (name, kind, size)


def test_hd_rows_refuses_a_loss_variant_and_a_resized_row_that_is_also_trained():
    group = load_params(ROOT / "params.yaml")["generators"]
    variants = all_variants(group)
    with pytest.raises(ValueError, match="trained from scratch"):
        hd_rows({"variants": ["full", "raft"]}, variants, group["variants"])
    with pytest.raises(ValueError, match="hd.resized"):
        hd_rows({"variants": ["full"], "resized": ["full"]}, variants, group["variants"])


def test_the_hd_tables_show_the_rows_of_this_half_and_say_why_the_others_are_missing(tmp_path):
    group = load_params(ROOT / "params.yaml")["generators"]
    variants = all_variants(group)
    results, controls = tmp_path / "generators", tmp_path / "controls"
    results.mkdir(), controls.mkdir()
    scored = {"full": "trained", "wav2lip": "resized"}
    for i, name in enumerate(list(scored) + ["ground_truth", "still_reference", "wrong_audio", "shifted_audio"]):
        folder = results if name in scored else controls
        row = {"variant": name, "label": name, "psnr": 20.0 + i, "ci": {"psnr": [19.0 + i, 21.0 + i]}}
        (folder / f"{name}.json").write_text(json.dumps(row))
    tables = build_tables(results, variants, controls, LAYOUT_HD, scored)
    assert set(tables) == set(LAYOUT_HD)
    block = {row["variant"]: row for row in tables["table5d"]["ours"]}
    assert block["full"]["kind"] == "generator" and block["full"]["cells"]["psnr"] == "20.000 [19.000, 21.000]"
    assert block["no_ofs"]["kind"] == "missing" and block["no_ofs"]["why"] == NOT_IN_HD
    assert [r["variant"] for r in tables["table4"]["ours"]][:2] == ["wav2lip", "full"]
    assert tables["table4"]["paper"]["OpFlowTalker"]["wer"] == 0.8542  # the paper's Table 4
