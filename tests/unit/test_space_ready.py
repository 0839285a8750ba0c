"""Ready for a Hugging Face Space with the Docker SDK, read from the files a Space reads: the YAML front
matter at the top of README.md (the Space's settings) and the Dockerfile it builds. A Space builds the
image, runs it as uid 1000 and sends its traffic to `app_port`; the image must listen there on all
interfaces. `make test-docker` checks the same in a running container (tests/docker/).
"""

from __future__ import annotations

import json
import re
import textwrap

import yaml

from tests.conftest import ROOT

COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}  # what a Space's card accepts


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert m, "README.md must open with YAML front matter between two '---' lines (a Space reads its settings there)"
    return yaml.safe_load(m.group(1))


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    lines = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [(w[0].upper(), w[1] if len(w) > 1 else "") for w in (line.split(None, 1) for line in joined.splitlines()
                                                             if line.strip())]


def only(kind: str) -> list[str]:
    return [args for ins, args in instructions() if ins == kind]


def test_readme_front_matter_is_a_docker_space_on_port_7860():
    fm = front_matter()
    assert fm["sdk"] == "docker" and fm["app_port"] == 7860
    assert fm["title"] and fm["colorFrom"] in COLORS and fm["colorTo"] in COLORS and isinstance(fm["pinned"], bool)
    assert len(fm["emoji"]) == 1 and len(fm["short_description"]) <= 60
    assert (ROOT / "README.md").read_text(encoding="utf-8").split("\n---\n", 1)[1].lstrip().startswith(
        "# Prefix Playground")


def test_the_deploy_guide_quotes_the_front_matter_as_it_is():
    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n\s*---\n(.*?)\n\s*---\n\s*```", guide, re.S)
    assert block and yaml.safe_load(textwrap.dedent(block.group(1))) == front_matter()


def test_the_image_listens_where_the_space_sends_traffic():
    port = front_matter()["app_port"]
    assert only("EXPOSE") == [str(port)]
    shell, flag, script = json.loads(only("CMD")[-1])  # exec form: sh is PID 1 only until it execs python
    assert (shell, flag) == ("sh", "-c") and f"exec python app.py --host 0.0.0.0 --port {port} " in script
    assert f"http://127.0.0.1:{port}/" in only("HEALTHCHECK")[-1]


def test_the_image_runs_as_uid_1000_and_its_code_is_not_its_own():
    runs = " ".join(only("RUN"))
    assert re.search(r"useradd [^&]*--uid 1000 user\b", runs)
    assert only("USER") == ["user"]  # one USER, the last word on who runs it
    user_at = [i for i, (ins, _) in enumerate(instructions()) if ins == "USER"][0]
    # the app's folder is made before USER, so root owns it; nothing is copied in as the user's own
    assert ("WORKDIR", "/home/user/app") in instructions()[:user_at]
    assert not any("--chown" in args for args in only("COPY"))


def test_the_defaults_build_from_python_slim_with_cpu_torch_and_stop_and_check_health_quickly():
    assert only("FROM") == ["python:3.11-slim"]
    args = dict(a.split("=", 1) if "=" in a else (a, None) for a in only("ARG"))
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert args["PIP_INDEX_URL"] is None  # unset: PyPI, unless a build gives a local index
    assert only("STOPSIGNAL") == ["SIGINT"]
    hc = only("HEALTHCHECK")[-1]
    assert "--start-interval=1s" in hc and "--interval=30s" in hc


def test_the_build_context_leaves_out_what_the_image_does_not_run():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "tests", ".ci", "bench", "artifacts", "docs/screenshots"} <= ignored
