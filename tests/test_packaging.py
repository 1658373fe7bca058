"""The two install routes (pip with pyproject.toml, conda with environment.yml) must not drift."""

import re
import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # the dev extra installs tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}


def _split(requirement: str) -> tuple[str, str]:
    requirement = requirement.strip().strip("\"'")
    requirement, _, marker = requirement.partition(";")
    m = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", requirement.strip())
    name, spec = m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")
    return CONDA_TO_PIP.get(name, name), spec


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return dict(_split(r) for r in reqs)


def environment_requirements() -> dict[str, str]:
    entries = re.findall(r"^\s*-\s+(.+?)\s*$", (ROOT / "environment.yml").read_text(), flags=re.M)
    skip = {"conda-forge", "pip", "pip:", "-e ."}
    reqs = [e for e in entries if e not in skip and not e.startswith("python")]
    return dict(_split(r) for r in reqs)


def test_environment_yml_lists_the_same_packages_as_pyproject():
    assert environment_requirements() == pyproject_requirements()


def test_required_packages_are_declared():
    reqs = pyproject_requirements()
    for name in ("numpy", "torch", "matplotlib", "ipywidgets", "jupyterlab", "nbval", "nbformat", "nbclient"):
        assert name in reqs, name


def test_env_check_reports_every_package():
    out = subprocess.run([sys.executable, "-m", "course_lib.env_check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("python", "torch", "numpy", "matplotlib", "ipywidgets", "jupyterlab", "nbval", "triton", "device"):
        assert re.search(rf"^\[(OK|FAIL|--)\] {name}", out.stdout, flags=re.M), (name, out.stdout)
    assert re.search(r"^\[(OK|--)\] Triton kernels", out.stdout, flags=re.M)
