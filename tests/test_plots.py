"""The training curves reach `dvc plots show` as flat tables, and its page draws them offline: the
history of a run becomes one row per logged step and one per evaluation, a malformed log is refused
in one line with nothing written, the plots stage depends on every log it reads, and the page loads
only the vega builds vendored in .dvc/plots/vendor, at the versions DVC's renderer names."""
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from opflowtalker.browser import dump_dom, find_chromium
from opflowtalker.params import load_params
from opflowtalker.plots import PlotsError, history_rows, to_csv, training_runs, write_curves

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1"}


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "opflowtalker.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)


def history(steps: int = 3, log_every: int = 10) -> dict:
    """A generator's history as ``training.loop.fit`` keeps it: the loss and its terms every
    ``log_every`` steps, the OFS term from the second log point on, and two evaluations."""
    step = [log_every * (i + 1) for i in range(steps)]
    loss = [round(0.9 * 0.8 ** i + 0.1, 6) for i in range(steps)]
    return {"step": step, "loss": loss, "l1": [v / 2 for v in loss], "ofs": [0.05 * (i + 1) for i in range(steps - 1)],
            "eval": [{"step": step[-2], "val_l1": 0.3}, {"step": step[-1], "val_l1": 0.25, "val_sync": 0.7}]}


def test_a_history_becomes_one_row_per_logged_step_and_one_per_evaluation():
    rows, evaluations = history_rows(history())
    assert rows == [{"step": 10, "loss": 1.0, "l1": 0.5, "ofs": None},
                    {"step": 20, "loss": 0.82, "l1": 0.41, "ofs": 0.05},
                    {"step": 30, "loss": 0.676, "l1": 0.338, "ofs": 0.1}]
    assert evaluations == [{"step": 20, "val_l1": 0.3}, {"step": 30, "val_l1": 0.25, "val_sync": 0.7}]
    assert to_csv(rows).splitlines() == ["step,loss,l1,ofs", "10,1.0,0.5,", "20,0.82,0.41,0.05", "30,0.676,0.338,0.1"]
    assert to_csv(evaluations).splitlines() == ["step,val_l1,val_sync", "20,0.3,", "30,0.25,0.7"]


@pytest.mark.parametrize("change, message", [
    ({"step": None}, "no list of integer steps"),
    ({"loss": [1.0, 0.9, 0.8, 0.7]}, "'loss' has 4 values for 3 steps"),
    ({"l1": [0.5, "nan", 0.3]}, "'l1' is not a list of numbers"),
    ({"eval": [{"val_l1": 0.3}]}, "'eval' holds an entry that is not numbers by step"),
])
def test_a_malformed_history_is_refused(change, message):
    with pytest.raises(PlotsError, match=re.escape(message)):
        history_rows({**history(), **change})


def write_log(models: Path, run: str, log: dict | str) -> None:
    path = models / f"{run}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(log if isinstance(log, str) else json.dumps(log))


def plots_params(tmp_path: Path) -> Path:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"generators": {"variants": {"full": {}}, "loss_variants": {"ofs_mae": {}}}}))
    return params


@pytest.mark.parametrize("log, message", [
    ("{not json", "models/lipreader.json: not valid JSON"),
    ({"steps": 3}, "models/lipreader.json: no training history"),
    ({"history": {"step": [10, 20], "loss": [1.0, 0.9, 0.8]}}, "models/lipreader.json: the history's 'loss' has 3"),
])
def test_a_malformed_log_is_one_line_exit_2_and_nothing_is_written(log, message, tmp_path):
    models, out = tmp_path / "models", tmp_path / "curves"
    write_log(models, "syncnet", {"history": history()})
    write_log(models, "lipreader", log)
    proc = run_cli("plots", "--models", models, "--out", out, "--flow-epe", tmp_path / "none.json",
                   "--params", plots_params(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opflowtalker plots: error: ") and message in lines[0], proc.stderr
    assert not out.exists()


def test_missing_runs_are_skipped_and_named_in_one_line(tmp_path):
    models, out = tmp_path / "models", tmp_path / "curves"
    write_log(models, "syncnet", {"history": history()})
    write_log(models, "generators/full", {"history": history(5)})
    stale = out / "train" / "generators" / "ofs_mae.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("step,loss\n1,1.0\n")
    proc = run_cli("plots", "--models", models, "--out", out, "--flow-epe", tmp_path / "none.json",
                   "--params", plots_params(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1 and proc.stdout.startswith("curves of 2 training runs written")
    for run in ("sync_judge", "lipreader", "flow/raft", "generators/ofs_mae", "none.json"):
        assert run in proc.stdout
    assert len((out / "train" / "generators" / "full.csv").read_text().splitlines()) == 1 + 5
    assert (out / "eval" / "syncnet.csv").read_text().startswith("step,val_l1,val_sync\n")
    assert not stale.exists()  # a run that is gone leaves no chart


def test_the_plots_stage_depends_on_every_log_it_reads_and_its_files_are_plotted():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    stage = dvc["stages"]["plots"]
    logs = {f"models/{run}.json" for run in training_runs(load_params(ROOT / "params.yaml"))}
    assert set(stage["deps"]) == logs | {"fingerprints/plots.txt", "metrics/flow_epe.json"}
    assert stage["cmd"] == "opflowtalker plots --out metrics/curves"
    assert stage["outs"] == [{"metrics/curves": {"cache": False}}]
    plotted = [next(iter(p)) for p in dvc["plots"]]
    for log in logs:  # each run's loss is charted, by its own file or by its folder
        curve = Path("metrics/curves/train") / Path(log).relative_to("models").with_suffix(".csv")
        assert any(curve == Path(p) or Path(p) in curve.parents for p in plotted), curve
    epe = [p for p in dvc["plots"] if "metrics/curves/flow_epe.csv" in json.dumps(p)]
    assert {next(iter(p.values()))["x"] for p in epe} == {"epe", "epe_mouth"}


def dvc_renderer_versions() -> dict[str, str]:
    """The vega packages and versions DVC's renderer loads from its CDN."""
    from dvc_render.vega import VegaRenderer

    return dict(re.findall(r"npm/(vega(?:-lite|-embed)?)@([0-9.]+)", VegaRenderer.SCRIPTS))


def test_the_vendored_builds_are_the_versions_dvc_renders_with():
    versions = dvc_renderer_versions()
    assert set(versions) == {"vega", "vega-lite", "vega-embed"}
    vendor = ROOT / ".dvc" / "plots" / "vendor"
    for name, version in versions.items():
        build = vendor / f"{name}-{version}" / f"{name}.min.js"
        assert f'"{version}"' in build.read_text(), build  # the build's own version string
        assert (build.parent / "LICENSE").is_file()


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """`dvc plots show` in a bare DVC project holding the study's plot definitions, .dvc/plots (page
    template and vendored builds) and .dvc/config's template setting, with curves written here."""
    root = tmp_path_factory.mktemp("project")
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=root, check=True, env=ENV)
    shutil.copytree(ROOT / ".dvc" / "plots", root / ".dvc" / "plots")
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    subprocess.run([DVC, "config", "plots.html_template", config["plots"]["html_template"]], cwd=root, check=True,
                   env=ENV)
    definitions = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"plots": definitions}, sort_keys=False))
    models, runs = root / "models", ["syncnet", "sync_judge", "lipreader", "flow/raft", "generators/full"]
    for run in runs:
        write_log(models, run, {"history": history(12)})
    (root / "flow_epe.json").write_text(json.dumps({"estimators": {
        "DIS": {"epe": 0.12, "epe_mouth": 0.23}, "raft": {"epe": 0.37, "epe_mouth": 0.59}}}))
    write_curves(models, root / "metrics" / "curves", runs, root / "flow_epe.json")
    proc = subprocess.run([DVC, "plots", "show"], cwd=root, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr
    return root / "dvc_plots" / "index.html"


def test_the_page_dvc_plots_show_writes_loads_only_the_vendored_scripts(page):
    html = page.read_text()
    sources = re.findall(r"<script[^>]*\bsrc\s*=\s*[\"']([^\"']+)", html)
    assert len(sources) == 3
    assert not [s for s in sources if re.match(r"(?:[a-z]+:)?//", s)], sources  # no http(s) nor //host
    vendor = (page.parents[1] / ".dvc" / "plots" / "vendor").resolve()
    for source in sources:
        path = (page.parent / source).resolve()
        assert path.is_file() and path.is_relative_to(vendor), source
    assert {f"{n}-{v}" for n, v in dvc_renderer_versions().items()} == {Path(s).parent.name for s in sources}
    assert html.count("vegaEmbed('#") == 5 + 2  # one loss chart per run, two EPE charts


def test_the_page_draws_every_chart_in_headless_chromium(page):
    if find_chromium() is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium), so the page is not opened")
    dom = dump_dom(page)
    assert dom.count('class="marks"') == 7  # one SVG per chart
    lines = re.findall(r'<g class="mark-line role-mark[^"]*"[^>]*>\s*<path[^>]*\bd="M[^"]+"', dom)
    bars = re.findall(r'<g class="mark-rect role-mark[^"]*"[^>]*>\s*<path[^>]*\bd="M[^"]+"', dom)
    assert len(lines) >= 5 and len(bars) >= 2  # a drawn curve in each loss chart, bars in each EPE chart
