"""perception/ builds on kernels/ only: it imports nothing from sim/, real/ or policies/ (DESIGN.md section 2)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

FORBIDDEN = ("sim", "real", "policies", "scripts")


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_perception_imports_nothing_from_sim_real_or_policies():
    files = sorted((Path(REPO_ROOT) / "perception").rglob("*.py"))
    assert len(files) >= 5  # frames, object points, tracker, protocol, package
    offenders = {str(f.relative_to(REPO_ROOT)): sorted(_imported_packages(f) & set(FORBIDDEN)) for f in files}
    assert not {f: names for f, names in offenders.items() if names}


def test_the_import_check_sees_a_forbidden_import(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("import numpy as np\nfrom sim.twin import DigitalTwin\nimport real.robot\n")
    assert _imported_packages(module) & set(FORBIDDEN) == {"sim", "real"}
