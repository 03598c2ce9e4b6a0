"""The whole study runs: `dvc repro` under the smoke profile, from corpus to book, in a copy of the project.

The smoke profile shrinks every stage to seconds (a 40-sentence corpus, a few training steps,
two test clips), so its numbers mean nothing; what it proves is that every stage of dvc.yaml runs,
hands the next stage what it needs, and ends in tables with a row for every variant and a built book.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from conftest import EXTERNAL, ROOT


def _copy_project(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if not source.is_file() or name == "dvc.lock" or name.startswith(("metrics/", "book/chapters/")):
            continue  # outputs of the embedded run: the smoke run makes its own
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    (dest / "data").mkdir(exist_ok=True)
    (dest / "data" / "external").symlink_to(EXTERNAL)


def _git(dest: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=smoke", "-c", "user.email=smoke@localhost", *args], cwd=dest, check=True,
                   capture_output=True)


def test_the_whole_study_runs_under_the_smoke_profile(tmp_path):
    project = tmp_path / "study"
    _copy_project(project)
    params = (project / "params.yaml").read_text()
    assert "\nprofile: embedded\n" in params
    (project / "params.yaml").write_text(params.replace("\nprofile: embedded\n", "\nprofile: smoke\n"))
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "smoke")  # dvclive wants a repository with a commit

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_WAIT_POLICY": "PASSIVE", "OPFLOWTALKER_CHECK_CODE": "1"}  # each command ran only traced code
    run = subprocess.run(["dvc", "repro"], cwd=project, env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]

    group = yaml.safe_load(params)["generators"]
    variants = [*group["variants"], *group["loss_variants"]]
    tables = json.loads((project / "metrics" / "tables.json").read_text())
    shown = {row["variant"] for table in tables.values() for row in table["ours"] if row["kind"] != "missing"}
    assert shown == {*variants, "ground_truth", "still_reference", "wrong_audio", "shifted_audio"}
    full = json.loads((project / "metrics" / "generators" / "full.json").read_text())
    assert full["clips"] == 2 and 0 < full["ssim"] < 1 and full["lse_d"] > 0
    assert set(full["ci"]) >= {"psnr", "lse_c", "wer", "wer_script", "fd_face"}
    truth = json.loads((project / "metrics" / "controls" / "ground_truth.json").read_text())
    assert truth["kind"] == "control" and truth["per_clip"]["keys"] == full["per_clip"]["keys"]
    assert full["fid"] is None and "Inception" in full["unavailable"]["fid"]
    for name in variants:
        assert (project / "models" / "generators" / f"{name}.safetensors").is_file()
        assert (project / "runs" / name / "live").is_dir()  # dvclive's logs
    for name in group["loss_variants"]:  # each continued its reference's warm-up
        log = json.loads((project / "models" / "generators" / f"{name}.json").read_text())
        assert log["warm_start"]["steps"] == 2 and log["resumed_from"] == 2
    times = json.loads((project / "metrics" / "stage_times.json").read_text())
    reader = json.loads((project / "models" / "lipreader.json").read_text())
    assert reader["train_clips"]["extra"] > 0  # the lip-reading corpus joined the training clips
    assert {"corpus", "lipreading-corpus", "train-syncnet", "train-sync-judge", "train-lipreader", "train-generator full",
            "evaluate full", "evaluate-reference", "warm-up full", "train-generator ofs_mae"} <= set(times)
    assert (project / "book" / "_build" / "html" / "chapters" / "study.html").is_file()
    # The HDTF-shaped half: its own corpus at 256 px, its rows (trained there or run on resized
    # frames) and controls in Tables 4 and 5, and its chapter.
    hd = yaml.safe_load(params)["hd"]
    tables_hd = json.loads((project / "metrics" / "tables_hd.json").read_text())
    assert set(tables_hd) == {"table4", "table5a", "table5b", "table5c", "table5d"}
    shown_hd = {row["variant"] for table in tables_hd.values() for row in table["ours"] if row["kind"] != "missing"}
    assert shown_hd == {*hd["variants"], *hd["resized"], "ground_truth", "still_reference", "wrong_audio",
                        "shifted_audio"}
    with np.load(project / "results" / "frames_hd" / "full.npz") as kept:
        assert kept["generated_0"].shape[1:] == (256, 256, 3) and kept["real_0"].shape[1:] == (256, 256, 3)
    with np.load(project / "results" / "frames_hd" / f"{hd['resized'][0]}.npz") as kept:
        assert kept["generated_0"].shape[1:] == (256, 256, 3)
    for name in hd["variants"]:
        assert f"hd train-generator {name}" in times and f"hd evaluate {name}" in times
    assert (project / "book" / "_build" / "html" / "chapters" / "hdtf.html").is_file()
    # Every video of the built book decodes in headless Chromium, from its WebM source, to a frame
    # that is not blank; the corpus and generate chapters hold them.
    from opflowtalker.browser import find_chromium, video_states

    if find_chromium() is not None:
        pages = {page.stem: video_states(page) for page in (project / "book" / "_build" / "html" / "chapters").glob("*.html")}
        assert {"corpus", "generate"} <= {name for name, states in pages.items() if states}
        for name, states in pages.items():
            for state in states:
                assert state["event"] == "loadeddata" and state["readyState"] >= 2, (name, state)
                assert state["source"] == "data:video/webm" and state["spread"] > 5 and state["poster"], (name, state)
    # The explorer ran in headless JupyterLab, its chapter shows it; the curves are DVC plots that
    # `dvc plots show` draws offline.
    shot = json.loads((project / "results" / "explorer.json").read_text())["page"]
    assert shot["figures"] == 2 and shot["errors"] == 0 and (project / "results" / "explorer.png").is_file()
    assert (project / "book" / "_build" / "html" / "chapters" / "explore.html").is_file()
    assert {"syncnet.csv", "sync_judge.csv", "lipreader.csv"} <= {p.name for p in (project / "metrics" / "curves" / "train").iterdir()}
    plotted = subprocess.run(["dvc", "plots", "show"], cwd=project, env=env, capture_output=True, text=True)
    assert plotted.returncode == 0, plotted.stderr[-2000:]
    if find_chromium() is not None:
        from opflowtalker.browser import dump_dom

        dom = dump_dom(project / "dvc_plots" / "index.html")
        assert dom.count('class="marks"') >= 3 + 4 + len(variants)  # judges, flow networks, generators
    again = subprocess.run(["dvc", "status"], cwd=project, env=env, capture_output=True, text=True)
    assert "up to date" in again.stdout, again.stdout[-2000:]
    # DVC reruns what a change changes, and nothing else. A docstring is not code: no fingerprint
    # changes, so no stage of the study is stale after it.
    model = project / "opflowtalker" / "models" / "opflowtalker.py"
    text = model.read_text()
    model.write_text(text.replace('"""', '"""Edited. ', 1))
    assert _stale(project, env) == set()
    # Code is: until the fingerprints are rewritten a stage that runs it refuses to start (the
    # copy's own package runs here, not the one the tests import), and once they are, exactly the
    # stages whose commands run that module are stale.
    own = {**env, "PYTHONPATH": str(project)}
    model.write_text(text + "\nEDITED = True\n")
    cost = project / "metrics" / "model_cost.json"
    before = cost.read_bytes()
    refused = subprocess.run(["opflowtalker", "model-cost", "--out", "metrics/model_cost.json"], cwd=project,
                             env=own, capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "opflowtalker model-cost: error: fingerprints/model-cost.txt does not describe the code any more; run "
        "`opflowtalker fingerprints` (make study does) so that DVC sees which stages the change reruns"], refused.stderr
    assert cost.read_bytes() == before
    subprocess.run(["opflowtalker", "fingerprints"], cwd=project, env=own, check=True, capture_output=True)
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    runs_model = {name for name, stage in stages.items()
                  if any("opflowtalker/models/opflowtalker.py" in (project / dep).read_text()
                         for dep in stage.get("do", stage).get("deps", []) if dep.startswith("fingerprints/"))}
    assert {"model_cost", "train_generator", "evaluate"} <= runs_model and "train_syncnet" not in runs_model
    assert {name.split("@")[0] for name in _stale(project, env)} == runs_model
    model.write_text(text)
    subprocess.run(["opflowtalker", "fingerprints"], cwd=project, env=own, check=True, capture_output=True)
    assert _stale(project, env) == set()
    # One key of the profile: only the stage that reads it (params.yaml rewritten from its values,
    # so every other value stays what it was).
    smoke = yaml.safe_load((project / "params.yaml").read_text())
    smoke["profiles"]["smoke"]["train_syncnet"]["steps"] += 1
    (project / "params.yaml").write_text(yaml.safe_dump(smoke, sort_keys=False))
    assert _stale(project, env) == {"train_syncnet"}


def _stale(project: Path, env: dict) -> set[str]:
    """The stages `dvc status` finds out of date."""
    status = subprocess.run(["dvc", "status", "--json"], cwd=project, env=env, capture_output=True, text=True)
    assert status.returncode == 0, status.stderr[-2000:]
    return set(json.loads(status.stdout or "{}"))
