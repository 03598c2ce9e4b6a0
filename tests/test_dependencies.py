"""DVC's dependencies are the code and the parameters each stage runs on, no more and no less."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from opflowtalker import fingerprints
from opflowtalker.fingerprints import code_digest, command_code, stale_fingerprints
from opflowtalker.params import ParamsError, StageParams
from opflowtalker.stages import params_of

from conftest import ROOT


def _stages() -> dict[str, dict]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def _command(body: dict) -> tuple[str, bool, str | None]:
    """The opflowtalker command a stage runs, whether under --hd, and the chapter it executes."""
    words = shlex.split(body["cmd"])
    assert words[0] == "opflowtalker"
    hd = words[1] == "--hd"
    command = words[2] if hd else words[1]
    notebook = words[2].rsplit("/", 1)[-1].removesuffix(".ipynb") if command == "notebook" else None
    return command, hd, notebook


@pytest.mark.parametrize("name", list(_stages()))
def test_each_stage_depends_on_exactly_the_groups_its_command_reads(name):
    body = _stages()[name]
    command, hd, notebook = _command(body)
    groups = set(params_of(command, hd, notebook))
    params = body.get("params", [])
    top = {p.split(".")[0] for p in params if not p.startswith("profiles.")}
    profiled = {p for p in params if p.startswith("profiles.")}
    assert top == groups, name
    assert profiled == {f"profiles.${{profile}}.{g}" for g in groups}, name


def test_every_profile_names_every_group_a_stage_reads():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    read = {g for body in _stages().values() for g in params_of(*_command(body))}
    for profile, groups in raw["profiles"].items():
        assert read <= set(groups or {}), (profile, sorted(read - set(groups or {})))


@pytest.mark.parametrize("name", list(_stages()))
def test_each_stage_depends_on_its_commands_fingerprint_and_no_package_folder(name):
    body = _stages()[name]
    deps = body.get("deps", [])
    command, _, notebook = _command(body)
    own = f"fingerprints/notebook-{notebook}.txt" if notebook else f"fingerprints/{command}.txt"
    assert [d for d in deps if d.startswith("fingerprints")] == [own]
    assert not [d for d in deps if d.startswith("opflowtalker")], name


def test_the_committed_fingerprints_are_those_of_the_code():
    assert stale_fingerprints(ROOT / "fingerprints", ROOT / "notebooks") == []


def test_no_stage_depends_on_the_package_or_the_notebooks_as_folders():
    # A stage that did (a stage writing the fingerprints, say) would be stale after any docstring edit.
    for name, body in _stages().items():
        deps = body.get("deps", [])
        assert not {"opflowtalker", "notebooks", "fingerprints"} & {d.rstrip("/") for d in deps}, name


def _project(tmp_path: Path) -> Path:
    """A copy of the package and its fingerprints in ``tmp_path``."""
    import shutil

    shutil.copytree(ROOT / "opflowtalker", tmp_path / "opflowtalker", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "fingerprints", tmp_path / "fingerprints")
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    return tmp_path


def test_a_stage_refuses_code_its_fingerprint_does_not_describe(tmp_path, monkeypatch, capsys):
    from opflowtalker import cli

    project = _project(tmp_path)
    monkeypatch.setattr(fingerprints, "ROOT", project / "opflowtalker")
    monkeypatch.chdir(project)
    assert fingerprints.stale_command("train-generator") is None
    model = project / "opflowtalker" / "models" / "opflowtalker.py"
    model.write_text(model.read_text().replace('"""', '"""Edited. ', 1))  # a docstring: no change
    assert fingerprints.stale_command("train-generator") is None
    model.write_text(model.read_text() + "\nEDITED = True\n")
    assert fingerprints.stale_command("train-generator") == "fingerprints/train-generator.txt"
    assert fingerprints.stale_command("train-syncnet") is None  # it does not run the generator
    assert fingerprints.stale_command("notebook", "notebooks/models.ipynb") == "fingerprints/notebook-models.txt"
    assert cli.main(["train-generator", "full", "--out", "g.safetensors"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["opflowtalker train-generator: error: fingerprints/train-generator.txt does not describe the "
                   "code any more; run `opflowtalker fingerprints` (make study does) so that DVC sees which "
                   "stages the change reruns"]
    assert not (project / "g.safetensors").exists()
    fingerprints.write_fingerprints(project / "fingerprints", project / "notebooks")
    assert fingerprints.stale_command("train-generator") is None


def test_fingerprints_of_another_copy_of_the_code_are_not_checked(tmp_path, monkeypatch):
    project = _project(tmp_path)
    (project / "fingerprints" / "train-generator.txt").write_text("other code\n")
    monkeypatch.chdir(project)  # this package is ROOT's, not the copy's
    assert fingerprints.stale_command("train-generator") is None
    assert fingerprints.stale_command("train-generator", project=ROOT) is None


def test_a_fingerprint_ignores_docstrings_and_comments_and_sees_code():
    source = 'def f(x):\n    """Twice x."""\n    return 2 * x  # doubled\n'
    assert code_digest(source) == code_digest('def f(x):\n    """Two times x, said otherwise."""\n\n    return 2 * x\n')
    assert code_digest(source) != code_digest('def f(x):\n    """Twice x."""\n    return 3 * x\n')
    assert code_digest(source) != code_digest('def f(y):\n    """Twice x."""\n    return 2 * y\n')


def test_a_command_runs_the_modules_it_imports_and_not_the_others():
    syncnet = command_code("train-syncnet")
    generator = command_code("train-generator")
    assert "opflowtalker/models/syncnet.py" in syncnet
    assert "opflowtalker/models/opflowtalker.py" not in syncnet
    assert "opflowtalker/models/opflowtalker.py" in generator
    # cli.py counts only as far as the command uses it: another command's function is left out.
    assert syncnet["opflowtalker/cli.py (train-syncnet)"] != generator["opflowtalker/cli.py (train-generator)"]
    assert (syncnet["opflowtalker/commands.py (train-syncnet)"]
            != generator["opflowtalker/commands.py (train-generator)"])


def test_editing_one_command_leaves_the_fingerprints_of_the_others(tmp_path, monkeypatch):
    import shutil

    package = tmp_path / "opflowtalker"
    shutil.copytree(ROOT / "opflowtalker", package, ignore=shutil.ignore_patterns("__pycache__"))
    before = {c: command_code(c) for c in ("train-syncnet", "train-generator")}
    commands = package / "commands.py"
    source = commands.read_text()
    assert "def run_train_generator(args: argparse.Namespace) -> None:\n" in source
    commands.write_text(source.replace("def run_train_generator(args: argparse.Namespace) -> None:\n",
                                       "def run_train_generator(args: argparse.Namespace) -> None:\n    args = args\n"))
    monkeypatch.setattr(fingerprints, "ROOT", package)
    after = {c: command_code(c) for c in ("train-syncnet", "train-generator")}
    assert after["train-syncnet"] == before["train-syncnet"]
    assert after["train-generator"]["opflowtalker/commands.py (train-generator)"] != \
        before["train-generator"]["opflowtalker/commands.py (train-generator)"]


def test_a_chapter_runs_what_its_notebook_imports():
    assert "opflowtalker/explore.py" in command_code("notebook", ROOT / "notebooks/explore.ipynb")
    assert "opflowtalker/explore.py" not in command_code("notebook", ROOT / "notebooks/audio.ipynb")


def test_an_unknown_command_cannot_be_traced():
    with pytest.raises(fingerprints.FingerprintError, match="no command"):
        command_code("no-such-stage")


def test_a_command_is_refused_a_group_it_does_not_declare():
    params = StageParams({"train_syncnet": {"steps": 3}, "generators": {}}, ("train_syncnet",), "opflowtalker x")
    assert params["train_syncnet"] == {"steps": 3}
    with pytest.raises(ParamsError, match="does not declare"):
        params["generators"]
    with pytest.raises(ParamsError, match="does not declare"):
        params.get("generators")


def test_a_module_a_command_imports_outside_its_trace_is_found():
    assert fingerprints.untraced_modules("train-syncnet", ["opflowtalker.models.syncnet", "numpy"]) == []
    assert fingerprints.untraced_modules("train-syncnet", ["opflowtalker.models.opflowtalker"]) == [
        "opflowtalker.models.opflowtalker"]


def _chapters() -> dict[str, tuple[dict, str]]:
    """Each stage that runs a notebook, with the notebook's name."""
    found = {}
    for name, body in _stages().items():
        command, _, notebook = _command(body)
        if command == "notebook":
            found[name] = (body, notebook)
        elif command in fingerprints.NOTEBOOK_COMMANDS:
            found[name] = (body, fingerprints.NOTEBOOK_COMMANDS[command].rsplit("/", 1)[-1].removesuffix(".ipynb"))
    return found


@pytest.mark.parametrize("name", sorted(_chapters()))
def test_a_chapter_stage_depends_on_every_path_its_notebook_reads(name):
    body, notebook = _chapters()[name]
    settings = yaml.safe_load((ROOT / "params.yaml").read_text())["notebooks"][notebook]
    deps = [str(d) for d in body.get("deps", [])]
    outs = [next(iter(o)) if isinstance(o, dict) else str(o) for o in body.get("outs", [])]
    assert f"notebooks/{notebook}.ipynb" in deps
    paths = [v for v in settings.values() if isinstance(v, str) and "/" in v]
    assert paths, f"{notebook} reads no path from its parameters"
    for path in paths:
        if path in outs:
            continue  # what the stage itself writes
        covered = [d for d in deps if d == path or d.startswith(path + "/") or path.startswith(d + "/")]
        assert covered, f"{name} reads {path} (params.yaml: notebooks.{notebook}) without depending on it"
