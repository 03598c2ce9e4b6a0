"""What each stage of the study runs, as files DVC can depend on.

A stage runs one ``opflowtalker`` command, and that command runs the package modules it imports,
directly or through each other (imports inside functions count: they run when the stage runs).
:func:`command_code` follows those imports from the command's own functions in ``cli.py`` and
``commands.py``, and from
the code cells of the notebook a chapter executes. A module's *fingerprint* is a digest of its
syntax tree without docstrings: editing a docstring, a comment or the layout of a line changes no
fingerprint, while any change to what the code does changes it.

``fingerprints/<command>.txt`` lists each module a command runs with its fingerprint (``cli.py`` and
``commands.py`` only as far as the command uses them: its parser and its function, and the shared
helpers). Every stage of ``dvc.yaml`` depends on the file of its command, so DVC reruns a stage
exactly when code it runs changed in substance. The files are source, kept in git with the code:
``opflowtalker fingerprints`` rewrites them (``make study`` does before ``dvc repro``), the test
suite fails while the committed ones differ from the code, and a stage run in the project on code
its file does not describe refuses to start (:func:`stale_command`). None of this is a DVC stage of
its own, which would depend on the whole package: a docstring edit then makes no stage stale.
"""
from __future__ import annotations

import ast
import hashlib
import json
import warnings
from pathlib import Path

from .errors import OpFlowTalkerError

__all__ = ["FingerprintError", "code_digest", "module_imports", "command_code", "all_fingerprints",
           "write_fingerprints", "stale_fingerprints", "stale_command", "untraced_modules", "NOTEBOOK_COMMANDS", "CHECK_ENV"]

PACKAGE = "opflowtalker"
ROOT = Path(__file__).resolve().parent
# Set (to anything) in the environment, the CLI checks after each command that it imported nothing
# of the package that its fingerprint leaves out (the smoke study sets it).
CHECK_ENV = "OPFLOWTALKER_CHECK_CODE"
# The commands that run a notebook as well as their own code, and which notebook.
NOTEBOOK_COMMANDS = {"explorer-shot": "notebooks/explore.ipynb"}


class FingerprintError(OpFlowTalkerError, ValueError):
    """A command or notebook whose code cannot be traced."""


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def code_digest(source: str | ast.AST) -> str:
    """The fingerprint of Python ``source`` (text or a parsed tree): its syntax without docstrings."""
    tree = ast.parse(source) if isinstance(source, str) else source
    return hashlib.sha256(ast.dump(_strip_docstrings(tree)).encode()).hexdigest()[:16]


def _module_path(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*parts[1:])
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _is_package(module: str) -> bool:
    path = _module_path(module)
    return path is not None and path.name == "__init__.py"


def _exported_by(package: str, name: str) -> str | None:
    """The module of ``package`` whose ``__all__`` declares ``name`` (the package's lazy exports)."""
    from .exports import _declared

    folder = _module_path(package).parent
    for path in sorted(folder.glob("*.py")):
        if not path.name.startswith("_") and name in _declared(path):
            return f"{package}.{path.stem}"
    return None


def _resolve(current: str, is_package: bool, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    parts = current.split(".")
    base = parts if is_package else parts[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports_in(nodes, current: str, is_package: bool) -> set[str]:
    found: set[str] = set()
    for node in nodes:
        for item in ast.walk(node):
            if isinstance(item, ast.Import):
                found.update(alias.name for alias in item.names if alias.name.split(".")[0] == PACKAGE)
            elif isinstance(item, ast.ImportFrom):
                target = _resolve(current, is_package, item.level, item.module)
                if target.split(".")[0] != PACKAGE:
                    continue
                found.add(target)
                for alias in item.names:
                    sub = f"{target}.{alias.name}"
                    if _module_path(sub) is not None:
                        found.add(sub)
                    elif _is_package(target) and (owner := _exported_by(target, alias.name)):
                        found.add(owner)
    # Importing a module imports the packages above it.
    for name in list(found):
        parts = name.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return {name for name in found if _module_path(name) is not None}


def module_imports(module: str) -> set[str]:
    """The package modules ``module`` imports anywhere in its file."""
    path = _module_path(module)
    if path is None:
        raise FingerprintError(f"no module {module} in the package")
    return _imports_in([ast.parse(path.read_text(encoding="utf-8"))], module, path.name == "__init__.py")


def _closure(start: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = sorted(start)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(sorted(module_imports(module) - seen))
    return seen


# The two modules every command runs only in part: its parser in cli.py, what it does in
# commands.py; each file's functions for one command start with the prefix, then the command's name.
SHARED = {"cli": "_parser_", "commands": "run_"}


def _part(module: str, command: str) -> tuple[ast.Module, list[ast.AST]]:
    """``<module>.py`` (``cli`` or ``commands``) as ``command`` runs it: its module-level
    statements, the command's own function there (``_parser_<command>``, ``run_<command>``), in
    cli.py ``main`` and the parser, and the helpers they name, without the functions of the other
    commands. Returns that tree and its nodes."""
    prefix = SHARED[module]
    tree = ast.parse((ROOT / f"{module}.py").read_text(encoding="utf-8"))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    own = prefix + command.replace("-", "_")
    if own not in functions:
        raise FingerprintError(f"{module}.py has no command {command!r} (no function {own})")
    others = {name for name in functions if name.startswith(prefix) and name != own}
    kept = {own} | ({"main", "build_parser"} if module == "cli" else set())
    todo = [n for n in tree.body if not isinstance(n, ast.FunctionDef)] + [functions[name] for name in kept]
    while todo:
        for item in ast.walk(todo.pop()):
            name = getattr(item, "id", None)
            if name in functions and name not in kept and name not in others:
                kept.add(name)
                todo.append(functions[name])
    tree.body = [n for n in tree.body if not isinstance(n, ast.FunctionDef) or n.name in kept]
    return tree, list(tree.body)


def _notebook_modules(path: Path) -> set[str]:
    if not path.is_file():
        raise FingerprintError(f"notebook not found: {path}")
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    try:
        with warnings.catch_warnings():  # a cell's own escapes are the chapter's business
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            tree = ast.parse("\n".join(lines))
    except SyntaxError as error:
        raise FingerprintError(f"{path}: a code cell is not Python ({error.msg}, line {error.lineno})") from None
    return _imports_in([tree], "__main__", False)


def command_code(command: str, notebook: str | Path | None = None) -> dict[str, str]:
    """Each file ``opflowtalker <command>`` runs (with ``notebook``: and the notebook's imports),
    relative to the project, with its fingerprint; ``cli.py`` and ``commands.py`` are keyed by the command."""
    code, modules = {}, set()
    for shared in SHARED:
        tree, nodes = _part(shared, command)
        modules |= _imports_in(nodes, f"{PACKAGE}.{shared}", False)
        code[f"{PACKAGE}/{shared}.py ({command})"] = code_digest(tree)
    if notebook is None:
        notebook = NOTEBOOK_COMMANDS.get(command)
    if notebook is not None:
        modules |= _notebook_modules(Path(notebook))
    partial = {f"{PACKAGE}.{shared}" for shared in SHARED}
    for module in sorted(_closure(modules - partial) - partial):
        path = _module_path(module)
        code[str(path.relative_to(ROOT.parent))] = code_digest(path.read_text(encoding="utf-8"))
    return dict(sorted(code.items()))


def _render(code: dict[str, str]) -> str:
    return "".join(f"{digest}  {name}\n" for name, digest in code.items())


def all_fingerprints(notebooks: str | Path = "notebooks") -> dict[str, str]:
    """Every fingerprint file's name and text: one per command of the study, one per chapter."""
    from .stages import PIPELINE_ORDER

    files = {f"{c}.txt": _render(command_code(c)) for c in PIPELINE_ORDER
             if c not in ("fingerprints", "notebook")}
    for path in sorted(Path(notebooks).glob("*.ipynb")):
        files[f"notebook-{path.stem}.txt"] = _render(command_code("notebook", path))
    return files


def write_fingerprints(out: str | Path, notebooks: str | Path = "notebooks") -> dict[str, str]:
    """Write :func:`all_fingerprints` into folder ``out`` (each file atomically; a file whose text
    is unchanged is left as it is, and files no command needs are removed). Returns what was written."""
    from .files import write_text_atomic

    out = Path(out)
    files = all_fingerprints(notebooks)
    out.mkdir(parents=True, exist_ok=True)
    for stale in set(p.name for p in out.glob("*.txt")) - set(files):
        (out / stale).unlink()
    for name, text in files.items():
        path = out / name
        if not path.is_file() or path.read_text() != text:
            write_text_atomic(path, text)
    return files


def stale_fingerprints(folder: str | Path, notebooks: str | Path = "notebooks") -> list[str]:
    """The fingerprint files of ``folder`` that differ from the code (missing and extra ones too)."""
    folder = Path(folder)
    files = all_fingerprints(notebooks)
    present = {p.name for p in folder.glob("*.txt")}
    stale = [name for name, text in files.items()
             if not (folder / name).is_file() or (folder / name).read_text() != text]
    return sorted(stale + sorted(present - set(files)))


def stale_command(command: str, notebook: str | Path | None = None, project: str | Path = ".") -> str | None:
    """The fingerprint file of ``command`` (a chapter's, with ``notebook``) in ``project`` when it
    no longer describes the code, else None. Only a project that holds this very package and a
    ``fingerprints/`` folder is checked: elsewhere the files, if any, describe other code."""
    project = Path(project).resolve()
    folder = project / "fingerprints"
    if ROOT.parent != project or not folder.is_dir():
        return None
    name = f"notebook-{Path(notebook).stem}.txt" if notebook is not None else f"{command}.txt"
    path = folder / name
    text = _render(command_code(command, notebook))
    return None if path.is_file() and path.read_text() == text else str(path.relative_to(project))


def untraced_modules(command: str, loaded, notebook: str | Path | None = None) -> list[str]:
    """The modules among ``loaded`` (names, as in ``sys.modules``) of the package that
    :func:`command_code` does not find ``command`` running: a command that imports one of them
    depends on code its DVC stage does not. Empty when the tracing is complete."""
    traced = {name.split(" ")[0] for name in command_code(command, notebook)}
    found = []
    for module in sorted(loaded):
        path = _module_path(module)
        if path is not None and str(path.relative_to(ROOT.parent)) not in traced:
            found.append(module)
    return found
