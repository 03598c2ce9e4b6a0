"""The project's setup promises: one environment described twice, CI running the README's test
command, a pipeline DVC can read, and a book that builds offline with warnings as errors."""
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from opflowtalker.notebooks import build_book, execute_notebook
from opflowtalker.params import load_params

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_pins_the_same_packages_as_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(deps) == sorted(p for p in pip if p != "-e .")
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.+]*", d) for d in deps)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^\s*(make \w+)\s*$", readme, flags=re.M)
    assert "make study" in commands and "make test" in commands
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == ["make test"]


def test_dvc_pipeline_is_valid_and_analytics_are_off():
    config = (ROOT / ".dvc" / "config").read_text()
    assert re.search(r"analytics\s*=\s*false", config)
    dvc = Path(sys.executable).parent / "dvc"
    proc = subprocess.run([str(dvc), "dag", "--md"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]:
        assert stage in proc.stdout
    assert "audio" in load_params(ROOT / "params.yaml")["notebooks"]


def test_the_audio_chapter_executes_and_the_book_builds_offline(tmp_path):
    book = tmp_path / "book"
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("_build", "chapters"))
    # Only the audio chapter is executed here (the others need the pipeline's data): the copy's
    # table of contents lists just that one, with everything else about the book unchanged.
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    toc["parts"] = [{**toc["parts"][0], "chapters": [{"file": "chapters/audio"}]}]
    (book / "_toc.yml").write_text(yaml.safe_dump(toc))
    params = load_params(ROOT / "params.yaml")["notebooks"]["audio"]
    execute_notebook(ROOT / "notebooks" / "audio.ipynb", book / "chapters" / "audio.ipynb", params, cwd=ROOT)
    html = build_book(book)
    page = (html / "chapters" / "audio.html").read_text()
    assert "<img" in page and "_images/" in page  # the figure made it in
    assert "mathjax/tex-chtml.js" in page  # MathJax served from the book itself
    external = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', page)
    assert external == []


# Numbers the chapters' prose may state because they define something rather than measure it: the
# paper's weights, the interval level and the judges' window length.
DEFINED_IN_PROSE = {("study.ipynb", "0.1"), ("study.ipynb", "0.2"), ("study.ipynb", "95%")}


def test_chapter_prose_states_no_measured_number():
    """Every measured number in the book is printed by a code cell: the notebooks' markdown holds no
    decimal or percentage beyond the definitions above."""
    typed = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "markdown":
                text = "".join(cell["source"])
                typed |= {(path.name, m.replace(" ", "")) for m in
                          re.findall(r"(?<![\w.$\\])(\d+\.\d+|\d+(?:\.\d+)?\s?%)", text)}
    assert typed <= DEFINED_IN_PROSE, sorted(typed - DEFINED_IN_PROSE)
