"""The project's top-level packages are the ones a script imports, whatever else the venv holds."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_a_script_imports_the_projects_own_kernels_package(tmp_path):
    # Hugging Face's `kernels` (a transformers dependency) has the same top-level name; scripts run with their own
    # folder first on sys.path, where site-packages would win over the editable install.
    script = tmp_path / "probe.py"
    script.write_text("import kernels\nprint(kernels.__file__)\nfrom kernels import BatchRenderer\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == str(REPO_ROOT / "kernels" / "__init__.py")
