"""The import check: dependencies point one way along the data walk, and packages share only public names.

raw record -> beam_pipelines (shards) -> tfdata (tf.data batch) -> models -> evaluation; benchmarks and
experiments sit on top. Every module is parsed with `ast` (nothing is imported), lazy imports inside
functions included.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("tfdata", "models", "evaluation", "benchmarks", "experiments", "beam_pipelines")
ENTRY_POINTS = ("train.py", "evaluate.py", "predict.py")


@dataclasses.dataclass(frozen=True)
class Rule:
    """Modules of `package` may not import `forbidden` packages (a module matches a package or a prefix
    of its dotted name), except the modules in `allowed`."""
    name: str
    package: str
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] = ()


RULES = (
    Rule("tfdata imports nothing above it", "tfdata",
         ("models", "evaluation", "benchmarks", "experiments", "beam_pipelines")),
    Rule("models imports no evaluation, benchmarks, experiments or Beam job", "models",
         ("evaluation", "benchmarks", "experiments", "beam_pipelines")),
    Rule("evaluation imports no benchmarks or experiments", "evaluation", ("benchmarks", "experiments")),
    # The Beam jobs take from tfdata its schema and the audio front end (log-mel, VGGish) and nothing else.
    Rule("beam_pipelines takes from tfdata only schema and the audio front end", "beam_pipelines", ("tfdata",),
         ("tfdata.schema", "tfdata.audio", "tfdata.vggish")),
    Rule("beam_pipelines imports no models", "beam_pipelines", ("models",)),
)


@dataclasses.dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module (or module.name for `from module import name`)
    line: int


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of PACKAGES and the entry points under root."""
    files = [p for package in PACKAGES for p in sorted((root / package).rglob("*.py"))]
    files += [root / name for name in ENTRY_POINTS if (root / name).exists()]
    return {_module_name(root, p): p for p in files}


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of `from <level dots><name> import ...` inside `module`."""
    if not level:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports(root: Path) -> tuple[list[Import], list[str]]:
    """Every import of every module under root, and the uses of another package's _private names."""
    found, private = [], []
    for module, path in _sources(root).items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        own = module.split(".")[0]
        modules_by_alias = {}  # local name -> imported module, to see `alias._name` attribute uses
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.append(Import(module, alias.name, node.lineno))
                    modules_by_alias[alias.asname or alias.name.split(".")[0]] = alias.asname and alias.name or \
                        alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, is_package, node.level, node.module)
                for alias in node.names:
                    found.append(Import(module, f"{source}.{alias.name}", node.lineno))
                    modules_by_alias[alias.asname or alias.name] = f"{source}.{alias.name}"
                    if _is_private(alias.name) and source.split(".")[0] != own:
                        private.append(f"{path.relative_to(root)}:{node.lineno}: imports {source}.{alias.name}")
                    if any(_is_private(part) for part in source.split(".")) and source.split(".")[0] != own:
                        private.append(f"{path.relative_to(root)}:{node.lineno}: imports from {source}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and _is_private(node.attr) and isinstance(node.value, ast.Name)
                    and node.value.id in modules_by_alias
                    and modules_by_alias[node.value.id].split(".")[0] != own):
                private.append(f"{path.relative_to(root)}:{node.lineno}: uses "
                               f"{modules_by_alias[node.value.id]}.{node.attr}")
    return found, private


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _matches(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def violations(root: Path, rule: Rule) -> list[str]:
    found, _ = imports(root)
    return [f"{i.module}:{i.line} imports {i.target}" for i in found
            if _matches(i.module, rule.package)
            and any(_matches(i.target, f) for f in rule.forbidden)
            and not any(_matches(i.target, a) for a in rule.allowed)
            and not _names_an_allowed_package(i.target, rule)]


def _names_an_allowed_package(target: str, rule: Rule) -> bool:
    """`from tfdata import schema` reads as tfdata.schema; a bare `import tfdata` is the package itself."""
    return any(allowed.startswith(target + ".") for allowed in rule.allowed)


def private_uses(root: Path) -> list[str]:
    return sorted(imports(root)[1])


# --- This repository ------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_dependencies_point_one_way(rule):
    assert violations(REPO_ROOT, rule) == []


def test_no_module_uses_another_packages_private_names():
    assert private_uses(REPO_ROOT) == []


def test_every_package_is_checked():
    names = _sources(REPO_ROOT)
    assert {n.split(".")[0] for n in names} == set(PACKAGES) | {"train", "evaluate", "predict"}
    assert "evaluation.scoring" in names and "benchmarks.__main__" in names


# --- The check itself ---------------------------------------------------------------------------------

def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").touch()
    return tmp_path


def _rule(name: str) -> Rule:
    return next(r for r in RULES if r.name == name)


def test_a_clean_tree_passes(tmp_path):
    root = _tree(tmp_path, {
        "tfdata/readers.py": "from tfdata import schema\n",
        "models/zoo.py": "from tfdata import schema\nimport tfdata.readers\n",
        "evaluation/scoring.py": "from models import metrics\nfrom tfdata import readers\n",
        "beam_pipelines/job.py": "from tfdata import schema, audio\nfrom tfdata.schema import OK\n"
                                 "def f():\n    from tfdata import vggish\n",
        "benchmarks/x.py": "from evaluation import scoring\nfrom beam_pipelines import job\n",
    })
    assert all(violations(root, rule) == [] for rule in RULES)
    assert private_uses(root) == []


@pytest.mark.parametrize("files, rule, expected", [
    ({"tfdata/readers.py": "from models import zoo\n"}, "tfdata imports nothing above it",
     "tfdata.readers:1 imports models.zoo"),
    ({"tfdata/x.py": "def f():\n    import beam_pipelines.core\n"}, "tfdata imports nothing above it",
     "tfdata.x:2 imports beam_pipelines.core"),  # a lazy import counts
    ({"models/trainer.py": "from evaluation.scoring import score\n"},
     "models imports no evaluation, benchmarks, experiments or Beam job", "models.trainer:1 imports evaluation.scoring.score"),
    ({"evaluation/report.py": "import benchmarks.common as c\n"}, "evaluation imports no benchmarks or experiments",
     "evaluation.report:1 imports benchmarks.common"),
    ({"beam_pipelines/core.py": "from tfdata import schema, readers\n"},
     "beam_pipelines takes from tfdata only schema and the audio front end", "beam_pipelines.core:1 imports tfdata.readers"),
    ({"beam_pipelines/core.py": "def f():\n    from models import vggish\n"}, "beam_pipelines imports no models",
     "beam_pipelines.core:2 imports models.vggish"),
    ({"beam_pipelines/sub/deep.py": "from ...tfdata import datasets\n"},
     "beam_pipelines takes from tfdata only schema and the audio front end", "beam_pipelines.sub.deep:1 imports tfdata.datasets"),
])
def test_a_bad_import_is_named(tmp_path, files, rule, expected):
    root = _tree(tmp_path, files)
    assert violations(root, _rule(rule)) == [expected]


def test_a_private_name_of_another_package_is_named(tmp_path):
    root = _tree(tmp_path, {
        "beam_pipelines/core.py": "from apache_beam.io.tfrecordio import _TFRecordUtil\n",
        "evaluation/scoring.py": "from tfdata import readers\nx = readers._CONTEXT_SPEC\n",
        "benchmarks/x.py": "import tfdata.readers as r\ny = r._ZERO_FRAME\n",
        "models/zoo.py": "from models.config import _flag\nfrom models import config\nz = config._flag\n",  # own package
    })
    assert private_uses(root) == [
        "beam_pipelines/core.py:1: imports apache_beam.io.tfrecordio._TFRecordUtil",
        "benchmarks/x.py:2: uses tfdata.readers._ZERO_FRAME",
        "evaluation/scoring.py:2: uses tfdata.readers._CONTEXT_SPEC",
    ]
