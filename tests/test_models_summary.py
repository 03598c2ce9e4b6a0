"""The numbers the models chapter shows come from these functions: they must mean what they say."""
import torch

from opflowtalker.models.cost import measure_generator
from opflowtalker.models.opflowtalker import OpFlowTalker, OpFlowTalkerConfig, count_parameters
from opflowtalker.models.summary import (calibrate_batch_norm, flops_by_part, frame_influence, output_shapes,
                                         parameters_by_part)


def small_model():
    torch.manual_seed(0)
    return OpFlowTalker(OpFlowTalkerConfig(width=0.125))


def window():
    return torch.randn(1, 5, 1, 80, 16), torch.rand(1, 6, 5, 96, 96)


def test_parts_add_up_to_the_whole():
    model = small_model()
    assert sum(parameters_by_part(model).values()) == count_parameters(model)


def test_flops_of_the_parts_add_up_to_the_whole_pass():
    model = small_model().eval()
    parts = flops_by_part(model, *window())
    total = measure_generator("OpFlowTalker", model, 96, repeats=1, train_step=False)["gflop_per_frame"] * 5e9
    assert sum(parts.values()) == round(total)
    assert parts["face_decoder"] > parts["sequential_fusion"] > 0
    assert parts["(outside the parts)"] >= 0


def test_output_shapes_follow_the_forward_order():
    shapes = dict(output_shapes(small_model().eval(), *window()))
    assert shapes["audio_encoder"] == "(5, 64)"
    assert shapes["face_decoder"].startswith("(5, 3, 96, 96)")


def test_influence_is_lower_triangular_and_the_diagonal_is_strong():
    model = small_model()
    audio, faces = window()
    # A fresh residual output layer is zero: the frame is the reference whatever the other inputs,
    # which would hide every path but the reference's. Weights there, as after training.
    torch.nn.init.normal_(model.face_decoder.output_block[1].weight, std=0.1)
    calibrate_batch_norm(model, audio, faces)
    influence = frame_influence(model, audio, faces)
    assert torch.all(torch.triu(influence, diagonal=1) == 0)
    assert torch.all(torch.diagonal(influence) > 1e-4)
    below = torch.tril(torch.ones(5, 5, dtype=torch.bool), diagonal=-1)
    assert torch.all(influence[below] > 0)  # earlier frames do reach later ones


def test_cost_row_counts_parameters_and_flops_per_frame():
    model = small_model()
    row = measure_generator("OpFlowTalker", model, 96, repeats=1, train_step=False)
    assert row["params"] == count_parameters(model)
    assert row["gflop_per_frame"] > 0 and row["infer_ms_per_frame"] > 0 and row["train_ms_per_frame"] is None
