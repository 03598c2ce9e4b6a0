"""One command line drives every stage; bad input ends in one clear line and a non-zero exit."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import study_params

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "opflowtalker.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)


def test_landmarks_command_prints_68_points_as_json():
    proc = run_cli("landmarks", "data/external/faces/hopper.png", "--backend", "dlib")
    assert proc.returncode == 0, proc.stderr
    faces = json.loads(proc.stdout)
    assert len(faces) == 1 and len(faces[0]["landmarks"]) == 68


@pytest.mark.parametrize("args, message", [
    (("landmarks", "no/such/image.png"), "cannot read image"),
    (("notebook", "notebooks/missing.ipynb", "out.ipynb"), "notebook not found"),
    (("notebook", "notebooks/audio.ipynb", "out.ipynb", "--params", "nope.yaml"), "parameters file not found"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    proc = run_cli(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (ROOT / "out.ipynb").exists()


def test_a_photo_without_a_face_is_one_line(tmp_path):
    import numpy as np
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 120, 3), 200, np.uint8)).save(blank)
    proc = run_cli("landmarks", blank, "--backend", "dlib")
    assert proc.returncode == 2 and proc.stderr.strip() == f"opflowtalker landmarks: error: no face found in {blank}"


def test_preprocess_of_a_missing_dataset_is_one_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(study_params({"dataset": {"kind": "lrs2", "root": "/no/such/lrs2"}})))
    proc = run_cli("preprocess", "--out", tmp_path / "prepared", "--params", params)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "/no/such/lrs2" in proc.stderr and "Traceback" not in proc.stderr


def test_a_resumed_training_stage_is_charted_with_the_work_of_every_run(tmp_path, monkeypatch):
    """A training stage killed and resumed took the loop time of all its runs, not only the last
    process's few seconds; chapters and the book are not charted (the study chapter reads the file)."""
    from opflowtalker import cli, commands

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")

    def resumed(args):
        args.trained_seconds = 600.0  # the log adds up every run of the loop

    monkeypatch.setattr(commands, "run_train_syncnet", resumed)  # build_parser binds the module's function
    assert cli.main(["train-syncnet"]) == 0
    times = json.loads((tmp_path / "metrics" / "stage_times.json").read_text())
    assert times["train-syncnet"]["seconds"] == 600.0
    assert "notebook" not in cli.TIMED and "book" not in cli.TIMED


def test_a_trial_run_written_outside_the_project_leaves_the_stage_times_alone(tmp_path, monkeypatch):
    from opflowtalker import cli, commands

    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    (project / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setattr(commands, "run_train_syncnet", lambda args: None)
    assert cli.main(["train-syncnet", "--out", str(tmp_path / "trial.safetensors")]) == 0
    assert not (project / "metrics" / "stage_times.json").exists()
    assert cli.main(["train-syncnet", "--out", "models/syncnet.safetensors"]) == 0
    assert "train-syncnet" in json.loads((project / "metrics" / "stage_times.json").read_text())


def test_the_pipeline_order_lists_exactly_the_commands_dvc_yaml_runs():
    import yaml

    from opflowtalker import cli
    from opflowtalker.stages import PIPELINE_ORDER

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    cmds = [stage["do"]["cmd"] if "do" in stage else stage["cmd"] for stage in stages.values()]
    called = {cmd.replace("--hd ", "").split()[1] for cmd in cmds}  # "opflowtalker [--hd] <command> ..."
    assert called == set(PIPELINE_ORDER) and len(PIPELINE_ORDER) == len(set(PIPELINE_ORDER))
    assert cli.TIMED <= set(PIPELINE_ORDER) and "notebook" not in cli.TIMED


def test_the_hd_half_without_an_hd_group_is_one_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("generators: {defaults: {}, variants: {full: {}}}\n")
    proc = run_cli("--hd", "tables", "--results", tmp_path, "--controls", tmp_path, "--out", tmp_path / "t.json",
                   "--params", params)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "no hd.overrides" in proc.stderr and not (tmp_path / "t.json").exists()


def test_a_stage_of_the_hd_half_is_timed_apart_from_its_lrs2_twin():
    import argparse

    from opflowtalker import cli

    args = argparse.Namespace(command="train-generator", variant="full", warm_up=False, hd=True)
    assert cli._stage_name(args) == "hd train-generator full"
    assert cli._stage_name(argparse.Namespace(**{**vars(args), "hd": False})) == "train-generator full"


def test_every_generate_option_says_what_it_does_and_defaults_as_the_api_does():
    import dataclasses

    from opflowtalker import cli
    from opflowtalker.generate import GenerateOptions

    options = cli.command_options("generate")
    assert all(o["help"] for o in options), [o["dest"] for o in options if not o["help"]]
    api = {f.name: f.default for f in dataclasses.fields(GenerateOptions)}
    shared = [o for o in options if o["dest"] in api and o["dest"] != "box"]  # box: None means detect, in both
    assert len(shared) >= 9
    for o in shared:
        default = tuple(o["default"]) if isinstance(o["default"], list) else o["default"]
        assert default == api[o["dest"]], o["dest"]
    # Of Wav2Lip's options, only the face detector's batch size has no meaning here (dlib detects frame by frame).
    accepted = {name for o in options for name in o["options"]}
    assert [n for n in cli.WAV2LIP_OPTIONS if n not in accepted] == ["--face_det_batch_size"]
    with pytest.raises(cli.UserError, match="no command 'nothing'"):
        cli.command_options("nothing")
