"""Flow networks learn from the corpus's exact flow, and every estimator is scored the same way."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from opflowtalker.flow.checkpoints import load_trained_network
from opflowtalker.flow.train import FlowTrainParams, evaluate_estimators, load_pairs, train_flow_network
from opflowtalker.params import from_params_yaml
from opflowtalker.preprocess import PreprocessParams, preprocess_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from opflowtalker.corpus.build import CorpusParams, build_corpus

    root = tmp_path_factory.mktemp("flowdata")
    build_corpus(root / "corpus", from_params_yaml(CorpusParams, "corpus", n_sentences=40, size=96, workers=2,
                                                   faces=str(ROOT / "data" / "external" / "faces")))
    preprocess_dataset("corpus", root / "corpus", root / "prepared", splits=("train", "test"),
                       params=from_params_yaml(PreprocessParams, "preprocess", size=96, workers=1))
    return root / "prepared"


def test_pairs_are_consecutive_crops_with_exact_flow(prepared):
    pairs = load_pairs(prepared, "train", 30, seed=0, per_clip=5)
    assert len(pairs) == 30
    assert pairs.image1.shape == (30, 3, 96, 96) and pairs.flow.shape == (30, 2, 96, 96)
    assert pairs.valid.mean() > 0.9 and (pairs.mouth & pairs.valid).any()


def test_a_flow_network_trains_and_is_scored_with_the_classical_baselines(prepared, tmp_path):
    params = from_params_yaml(FlowTrainParams, "train_flow", steps={"flownet": 40, "raft_small": 3}, batch_size=2,
                              train_pairs=40, eval_pairs=16, pairs_per_clip=4, iters=2, eval_iters=2)
    log = train_flow_network("flownet", prepared, tmp_path / "flownet.safetensors", params, tmp_path / "runs" / "flownet")
    loss = log["history"]["loss"]
    assert len(loss) == 40 and np.mean(loss[-10:]) < np.mean(loss[:10])
    assert json.loads((tmp_path / "flownet.json").read_text())["steps"] == 40
    train_flow_network("raft_small", prepared, tmp_path / "raft_small.safetensors", params, tmp_path / "runs" / "raft")
    assert load_trained_network(tmp_path / "raft_small.safetensors").training is False
    result = evaluate_estimators(prepared, {"flownet": tmp_path / "flownet.safetensors",
                                            "raft_small": tmp_path / "raft_small.safetensors"}, params)
    rows = result["estimators"]
    assert set(rows) == {"zero flow", "DIS", "Farneback", "flownet", "raft_small"}
    # The zero flow's error is the mean true motion; DIS, on this small smooth motion, does better.
    assert rows["zero flow"]["epe"] == pytest.approx(result["mean_flow_px"], rel=1e-5)
    assert rows["DIS"]["epe"] < rows["zero flow"]["epe"]
    assert all(np.isfinite(r["epe"]) and np.isfinite(r["epe_mouth"]) for r in rows.values())


def test_a_killed_flow_run_resumes_to_the_weights_of_one_that_never_stopped(prepared, tmp_path, monkeypatch):
    """Flow networks train through the one loop: killed after its step-4 checkpoint and started
    again, a run continues from step 4 and ends on the weights of an uninterrupted run."""
    from opflowtalker.flow import train as flow_train
    from opflowtalker.models.checkpoints import load_safetensors

    params = from_params_yaml(FlowTrainParams, "train_flow", steps={"raft_small": 6}, batch_size=2, train_pairs=12,
                              pairs_per_clip=4, iters=1, checkpoint_every=4, warmup=0.2)
    whole = train_flow_network("raft_small", prepared, tmp_path / "whole.safetensors", params, tmp_path / "whole")
    assert whole["resumed_from"] == 0 and whole["history"]["step"] == [1, 2, 3, 4, 5, 6]
    loss, calls = flow_train._loss, []

    def killed_after_four(*args):
        calls.append(1)
        if len(calls) > 5:  # the 6th step: after the checkpoint of step 4 was written
            raise KeyboardInterrupt
        return loss(*args)

    monkeypatch.setattr(flow_train, "_loss", killed_after_four)
    with pytest.raises(KeyboardInterrupt):
        train_flow_network("raft_small", prepared, tmp_path / "killed.safetensors", params, tmp_path / "killed")
    assert not (tmp_path / "killed.safetensors").exists()
    monkeypatch.setattr(flow_train, "_loss", loss)
    again = train_flow_network("raft_small", prepared, tmp_path / "killed.safetensors", params, tmp_path / "killed")
    assert again["resumed_from"] == 4
    first, _ = load_safetensors(tmp_path / "whole.safetensors")
    second, _ = load_safetensors(tmp_path / "killed.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert load_trained_network(tmp_path / "killed.safetensors").training is False


@pytest.mark.parametrize("name", ["gma", "raft", "raft_small", "flownet"])
def test_every_flow_network_round_trips_through_our_checkpoint(name, tmp_path):
    """RAFT's reference layout aliases one norm under two names; our safetensors files still hold
    every name and load back bit for bit."""
    import torch

    from opflowtalker.flow.checkpoints import build_network
    from opflowtalker.models.checkpoints import load_safetensors, save_safetensors

    torch.manual_seed(0)
    model = build_network(name)
    save_safetensors(model, tmp_path / "net.safetensors")
    state, _ = load_safetensors(tmp_path / "net.safetensors")
    again = build_network(name)
    again.load_state_dict(state)
    for (key, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), key
