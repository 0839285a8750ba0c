"""The 31st student: one hostile learner who floods the server and sends the inputs that once hurt it.

Used by ``bench/load_test.py --hostile``. While the honest class trains, this student (through the
same public API a browser uses, and by raw HTTP where a browser would not go) does each of these a
bounded number of times:

- ``flood``        50 Switch requests at once from one session (a browser never has more than one or
                   two pending: Switch keeps only the last);
- ``direct_run``   8 Switch calls straight to ``POST /gradio_api/run/switch``, past the queue;
- ``long_prompt``  4 sessions click "Show attention" on 2,000 random digits (one token each) at once;
- ``wide_csv``     uploads a CSV whose input and target fields are 1,990 digits long, and trains on it
                   at batch 8;
- ``many_files``   one upload request carrying more files than the server allows;
- ``library``      imports crafted prefixes: a 1 MB card, 512 virtual tokens, a look-alike of a
                   shipped name (``SENTIMENT``) with Overwrite, a Windows reserved name (``CON``).

Each attempt ends "served" (the server did the work, within its limits), "refused" (one readable
message) or "broken" (anything else: a 5xx, a dropped connection, a traceback). The load test counts
only the honest students' calls in its figures, and checks that nothing here was "broken", that the
server stayed under its memory budget, and that the honest students' p95 latencies moved little.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import threading
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "prefixes"
NO_PREFIX, NONE = "(no prefix)", "(none)"
FLOOD, DIRECT, LONG_SESSIONS = 50, 8, 4


@dataclass
class Attempt:
    """What the server did with one hostile request."""

    action: str
    outcome: str  # "served", "refused" or "broken"
    detail: str = ""


@dataclass
class HostileReport:
    attempts: list[Attempt] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, action: str, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.attempts.append(Attempt(action, outcome, " ".join(str(detail).split())[:300]))

    def summary(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for a in self.attempts:
            row = out.setdefault(a.action, {"served": 0, "refused": 0, "broken": 0, "examples": []})
            row[a.outcome] += 1
            if len(row["examples"]) < 3 and a.detail and a.detail not in row["examples"]:
                row["examples"].append(a.detail)
        return out

    @property
    def broken(self) -> list[str]:
        return [f"{a.action}: {a.detail}" for a in self.attempts if a.outcome == "broken"]


TRAIN_STEPS = 3  # the hostile student's own run on its upload (the teacher's view sees it as one more learner)

def classify(exc: BaseException | None) -> tuple[str, str]:
    """A gradio_client outcome: an AppError (a gr.Error) or a queue refusal is "refused", anything else "broken"."""
    if exc is None:
        return "served", ""
    text = f"{type(exc).__name__}: {exc}"
    polite = type(exc).__name__ in ("AppError",) or any(w in str(exc).lower() for w in (
        "waiting", "queue", "limit", "too many", "budget", "memory", "refused", "not allowed"))
    return ("refused" if polite else "broken"), text


def _client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False, analytics_enabled=False)


def _call(client, api_name: str, *args, timeout: float = 300):
    job = client.submit(*args, api_name=api_name)
    return job.result(timeout=timeout)


def _endpoint(client, elem_id: str) -> str | None:
    """The API name of the picker refresh that updates the component with this elem_id."""
    elem = {c["id"]: c.get("props", {}).get("elem_id") for c in client.config["components"]}
    for d in client.config["dependencies"]:
        if d.get("outputs") and elem.get(d["outputs"][0]) == elem_id and isinstance(d.get("api_name"), str) \
                and d["api_name"].startswith("refresh"):
            return "/" + d["api_name"]
    return None


# ---- the attacks ---------------------------------------------------------------------------------
def flood(url: str, rep: HostileReport, prompt: str, deadline: float) -> None:
    client = _client(url)
    jobs = []
    for _ in range(FLOOD):
        try:
            jobs.append(client.submit([NO_PREFIX], prompt, api_name="/switch"))
        except Exception as exc:  # noqa: BLE001 - a refusal at submit time is an outcome
            rep.add("flood", *classify(exc))
    for job in jobs:
        try:
            job.result(timeout=max(1.0, deadline - _now()))
            rep.add("flood", "served")
        except TimeoutError:
            job.cancel()
            rep.add("flood", "refused", "still waiting at the deadline (cancelled)")
        except Exception as exc:  # noqa: BLE001
            rep.add("flood", *classify(exc))
    client.close()


def refused_http(rep: HostileReport, action: str, req: urllib.request.Request, if_accepted: str,
                 timeout: float) -> None:
    """Send a raw request that the server must refuse with a 4xx; a 2xx is ``if_accepted``, a 5xx is broken."""
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            rep.add(action, "broken", f"HTTP {r.status}: {if_accepted}")
    except urllib.error.HTTPError as exc:
        outcome = "refused" if exc.code < 500 else "broken"
        rep.add(action, outcome, f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}")
    except OSError as exc:
        rep.add(action, "broken", repr(exc))


def direct_run(url: str, rep: HostileReport, prompt: str) -> None:
    def one():
        body = json.dumps({"data": [[NO_PREFIX], prompt]}).encode()
        req = urllib.request.Request(url + "gradio_api/run/switch", body, {"Content-Type": "application/json"})
        refused_http(rep, "direct_run", req, "ran outside the queue", 120)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(DIRECT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)


def long_prompt(url: str, rep: HostileReport, seed: int) -> None:
    rng = random.Random(seed)
    digits = "".join(rng.choice("0123456789") for _ in range(2000))

    def one():
        try:
            client = _client(url)
        except Exception as exc:  # noqa: BLE001
            rep.add("long_prompt", "broken", f"connect: {exc!r}")
            return
        try:
            picker = _endpoint(client, "att-prefix")
            names = _call(client, picker, None)[0].get("choices") if picker else []
            names = [c[1] if isinstance(c, (list, tuple)) else c for c in names or []]
            if not names:
                rep.add("long_prompt", "broken", "no prefix to look at")
                return
            _call(client, "/attention", digits, names[0], NONE)
            rep.add("long_prompt", "served")
        except Exception as exc:  # noqa: BLE001
            rep.add("long_prompt", *classify(exc))
        finally:
            client.close()

    threads = [threading.Thread(target=one, daemon=True) for _ in range(LONG_SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)


def wide_csv(url: str, rep: HostileReport, workdir: Path, seed: int) -> None:
    from gradio_client import handle_file

    from playground.prefix import DEMO_SHOTS

    rng = random.Random(seed)
    path = workdir / "wide.csv"
    rows = ["input,target"] + [",".join("".join(rng.choice("0123456789") for _ in range(1990)) for _ in range(2))
                               for _ in range(40)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")  # 40 rows, 159 KB
    client = _client(url)
    try:
        _call(client, "/on_file", handle_file(str(path)))
        status = _call(client, "/on_use", handle_file(str(path)), "input", "target", "Copy the digits.",
                       "exact_match")[2]  # the outputs: task, preview, status, then the cleared run's
        rep.add("wide_csv_upload", "served", status)
        for batch in (8, 2):  # batch 8 as the tester did, then the batch the server's budget allows
            try:
                out = _call(client, "/train", "upload", 20, "task text", "", False, 256, 1e-2, TRAIN_STEPS, batch, 7, 0, 4,
                            "auto", DEMO_SHOTS, False, timeout=600)  # DEMO_SHOTS, and no fork
                rep.add(f"wide_csv_train_batch_{batch}", "served", str(out[0])[:200])
            except Exception as exc:  # noqa: BLE001
                rep.add(f"wide_csv_train_batch_{batch}", *classify(exc))
    except Exception as exc:  # noqa: BLE001
        rep.add("wide_csv", *classify(exc))
    finally:
        client.close()


def many_files(url: str, rep: HostileReport, n: int = 6, size: int = 1 << 20) -> None:
    """One multipart request to Gradio's upload route with ``n`` files of ``size`` bytes."""
    boundary = "hostile-boundary-7d1f"
    parts = []
    for i in range(n):
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"f{i}.json\"\r\n"
                     f"Content-Type: application/json\r\n\r\n".encode() + b"0" * size + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "gradio_api/upload", body,
                                 {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    refused_http(rep, "many_files", req, f"{n} files accepted in one request", 60)


def crafted_zips(workdir: Path) -> dict[str, Path]:
    """Valid-looking prefix zips that the library must refuse, built from the shipped sentiment prefix."""
    import torch
    from safetensors.torch import load_file, save_file

    src = SHIPPED / "sentiment"
    config = json.loads((src / "adapter_config.json").read_text(encoding="utf-8"))
    weights = (src / "adapter_model.safetensors").read_bytes()
    out = {}

    def pack(name: str, files: dict[str, bytes]) -> Path:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for f, data in files.items():
                zf.writestr(f"{name}/{f}", data)
        path = workdir / f"{name}.zip"
        path.write_bytes(buf.getvalue())
        return path

    plain = {"adapter_config.json": json.dumps(config).encode(), "adapter_model.safetensors": weights}
    rng = random.Random(0)  # random letters: a 1 MB card that deflate cannot shrink into a "zip bomb"
    card = {"task": "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=1_000_000)), "note": "a 1 MB card"}
    out["giant_card"] = pack("giant-card", {**plain, "card.json": json.dumps(card).encode()})
    emb = load_file(str(src / "adapter_model.safetensors"))["prompt_embeddings"]  # [P, layer*2*token_dim]
    wide = emb.repeat(512 // emb.shape[0] + 1, 1)[:512].contiguous()  # [512, layer*2*token_dim]
    tmp = workdir / "wide.safetensors"
    save_file({"prompt_embeddings": wide.to(torch.float32)}, str(tmp), metadata={"format": "pt"})
    out["512_tokens"] = pack("wide-prefix", {"adapter_config.json": json.dumps({**config, "num_virtual_tokens": 512})
                                             .encode(), "adapter_model.safetensors": tmp.read_bytes()})
    out["lookalike"] = pack("SENTIMENT", plain)
    out["reserved"] = pack("CON", plain)
    return out


def library(url: str, rep: HostileReport, workdir: Path) -> None:
    from gradio_client import handle_file

    zips = crafted_zips(workdir)
    client = _client(url)
    try:
        for what, path, name, over in (("giant_card", zips["giant_card"], "", False),
                                       ("512_tokens", zips["512_tokens"], "", False),
                                       ("lookalike", zips["lookalike"], "SENTIMENT", True),
                                       ("reserved", zips["reserved"], "CON", False)):
            try:
                _call(client, "/on_import", [handle_file(str(path))], name, over)
                rep.add(f"import_{what}", "broken", f"{path.name} was accepted into the library")
            except Exception as exc:  # noqa: BLE001
                rep.add(f"import_{what}", *classify(exc))
    finally:
        client.close()


# ---- the student -------------------------------------------------------------------------------------
def _now() -> float:
    return time.monotonic()


def hostile_student(url: str, workdir: Path, until: threading.Event, deadline: float, prompt: str,
                     rounds: int = 20, pause: float = 2.0) -> HostileReport:
    """Attack for as long as the class runs: every attack at once, round after round (``rounds`` at most,
    ``pause`` seconds apart), until ``until`` is set or the deadline."""
    rep = HostileReport()
    workdir.mkdir(parents=True, exist_ok=True)
    for r in range(rounds):
        attacks = [lambda: flood(url, rep, prompt, deadline), lambda: direct_run(url, rep, prompt),
                   lambda: long_prompt(url, rep, seed=r), lambda: wide_csv(url, rep, workdir, seed=r),
                   lambda: many_files(url, rep), lambda: library(url, rep, workdir)]
        threads = [threading.Thread(target=a, daemon=True) for a in attacks]
        for t in threads:  # all at once: the worst moment for the class
            t.start()
        for t in threads:
            t.join(max(1.0, deadline - _now()))
        if until.wait(pause) or _now() >= deadline:
            break
    shutil.rmtree(workdir, ignore_errors=True)
    return rep
