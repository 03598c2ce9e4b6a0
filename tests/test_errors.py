"""One kind of user error: every error class of the package derives from OpFlowTalkerError, and
the CLI prints any of them as one line with exit status 2."""
import importlib
import pkgutil

import pytest

import opflowtalker
from opflowtalker import cli
from opflowtalker.errors import OpFlowTalkerError


def package_errors() -> dict[str, type]:
    found = {}
    for info in pkgutil.walk_packages(opflowtalker.__path__, "opflowtalker."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = value
    return found


def test_every_error_the_package_defines_is_an_opflowtalker_error():
    errors = package_errors()
    assert len(errors) >= 20  # one per module that refuses input
    assert [name for name, cls in errors.items() if not issubclass(cls, OpFlowTalkerError)] == []
    # Each keeps its built-in base, so callers that caught ValueError still do.
    from opflowtalker.video import VideoError

    assert issubclass(VideoError, ValueError)


@pytest.mark.parametrize("name", ["opflowtalker.explore.ExploreError", "opflowtalker.browser.BrowserError",
                                  "opflowtalker.plots.PlotsError"])
def test_the_cli_prints_any_package_error_as_one_line_and_exits_2(name, monkeypatch, capsys):
    error = package_errors()[name]

    def refuse(args):
        raise error("the input cannot be used as asked")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["plots"].set_defaults(func=refuse)
    assert cli.main(["plots"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "opflowtalker plots: error: the input cannot be used as asked\n" and captured.out == ""
