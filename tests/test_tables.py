"""Each table's rows map to the variants of params.yaml that produce them, and each ablation row
differs from its table's reference in exactly the switch it names, under every profile."""
from __future__ import annotations

import pytest

from conftest import ROOT
from opflowtalker.params import load_params, merge
from opflowtalker.tables import LAYOUT, PAPER, TABLES
from opflowtalker.training.generator import all_variants, changed_fields, variant_params, warm_start_of
import yaml

RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
PROFILES = sorted(RAW["profiles"])


def _group(profile: str) -> dict:
    data = {k: v for k, v in RAW.items() if k != "profiles"}
    return merge(data, RAW["profiles"][profile] or {})["generators"]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("table", sorted(LAYOUT))
def test_each_ablation_row_differs_from_its_reference_in_the_switch_it_names(table, profile):
    group = _group(profile)
    layout = LAYOUT[table]
    reference = variant_params(group, layout.reference)
    for row in layout.rows:
        changed = changed_fields(reference, variant_params(group, row.variant))
        if row.switch is not None:
            assert changed == [row.switch], (table, row.variant, changed)
        elif row.variant == layout.reference:
            assert changed == []
        else:  # shown for context (the baseline, our additions): more than one switch, and no paper row
            assert len(changed) > 1 and row.variant in ("wav2lip", "full_motion"), (table, row.variant, changed)


def test_every_variant_has_a_row_and_every_row_a_variant_or_a_reason():
    group = load_params(ROOT / "params.yaml")["generators"]
    shown = {row.variant for layout in LAYOUT.values() for row in layout.rows}
    assert set(all_variants(group)) == shown
    for name, layout in LAYOUT.items():
        assert layout.reference in {row.variant for row in layout.rows}
        assert layout.anchor in layout.paper_names, name  # the paper has the row the others are read against
        assert set(layout.paper_names.values()) <= set(PAPER[name]), name
        assert name in TABLES
        for variant, label, why in layout.not_trained:  # a row of the paper's we do not train says why
            assert variant not in all_variants(group) and why.startswith("not trained")


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
