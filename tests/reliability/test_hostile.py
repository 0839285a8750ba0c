"""Hostile and broken input: property tests and a corpus of bad files for every upload and text field.

Fields covered: the task-data upload (``file_columns``, ``load_upload``, ``read_table``), the prefix import
(zip or loose files: ``stage_upload`` + ``load_prefix``), prefix names (save, rename, delete, export, import)
and the text fields (Attention and Switch prompts, the instruction and the init text of training).

Every case ends in a correct parse or in one ``PlaygroundError`` whose message names the problem and the fix.
Around each case, ``Box.guard`` checks that nothing was written outside the library folder (the engine's
temporary files are redirected under ``tmp_path`` and must be gone afterwards), that datasets' global
cache got nothing, and that the library still lists exactly its complete prefixes. The number of cases
tried is printed and written to ``artifacts/hostile_cases.json`` when the module finishes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import pickle
import random
import re
import shutil
import stat
import struct
import tempfile
import urllib.error
import urllib.request
import uuid
import warnings
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playground.archive import stage_upload
from playground.errors import PlaygroundError
from playground.library import Library
from playground.names import check_name
from playground.peft_folder import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, load_prefix
from playground.prefix import PrefixSettings, create_prefix
from playground.service import NO_PREFIX, Limits, Playground
from playground.tasks import MAX_TEXT_CHARS, Example, read_examples
from playground.training import TrainSettings
from tests.conftest import ROOT, make_tiny

CASES: Counter = Counter()  # hostile inputs tried, by field
LIMITS = dict(max_steps=4, max_batch_size=4, max_virtual_tokens=8, max_eval_examples=4, max_new_tokens=3)
HYP = settings(max_examples=60, deadline=None, database=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                      HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def _report_cases():
    yield
    total = sum(CASES.values())
    out = ROOT / "artifacts" / "hostile_cases.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"total": total, "by_field": dict(sorted(CASES.items()))}, indent=2) + "\n")
    print(f"\nhostile cases tried: {total} ({', '.join(f'{k} {v}' for k, v in sorted(CASES.items()))})")


@pytest.fixture(autouse=True)
def _one_thread(_threads):
    torch.set_num_threads(1)  # the tiny models are fastest on one thread


def files_under(root: Path, skip: str = "inputs") -> dict[str, tuple]:
    """Every file and folder under root (except the test's own inputs), with size and mtime."""
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if rel.parts[0] != skip:
            st_ = p.lstat()
            out[str(rel)] = (st_.st_size, st_.st_mtime_ns) if p.is_file() else ()
    return out


class Box:
    """A Playground on a library in tmp_path/lib holding one prefix, 'keep'; inputs go to tmp_path/inputs."""

    def __init__(self, pg: Playground, root: Path):
        self.pg, self.root = pg, root
        self.lib = pg.library.root
        self.inputs = root / "inputs"
        self.inputs.mkdir()
        self.expected = ["keep"]  # the complete prefixes the library must list

    def file(self, name: str, data: bytes | str) -> Path:
        """A fresh input file (its own folder, so the name is exactly ``name``)."""
        d = self.inputs / uuid.uuid4().hex
        d.mkdir()
        p = d / name
        p.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return p

    @contextlib.contextmanager
    def guard(self, may_add: str | None = None):
        """Nothing written outside the library (and at most ``may_add`` inside); temp files cleaned up."""
        before, siblings = files_under(self.root), set(os.listdir(self.root.parent))
        yield
        after = files_under(self.root)
        changed = {k for k in after if before.get(k) != after[k]} | (before.keys() - after.keys())
        allowed = f"lib{os.sep}{may_add}" if may_add else None
        stray = {c for c in changed if not (allowed and (c == allowed or c.startswith(allowed + os.sep)))}
        assert not stray, f"written outside the library (or into it): {sorted(stray)[:5]}"
        assert os.listdir(self.root / "systmp") == [], "temporary files were left behind"
        assert os.listdir(self.root / "hf-cache") == [], "datasets wrote to its global cache"
        assert set(os.listdir(self.root.parent)) == siblings
        if may_add and may_add not in self.expected:
            self.expected = sorted(self.expected + [may_add])
        assert sorted(os.listdir(self.lib)) == self.expected  # no hidden leftovers either
        assert self.pg.library.names() == self.expected

    def refused(self, field: str, fn, problem: str, fix: str) -> str:
        """One hostile case: a PlaygroundError naming the problem and the fix, and nothing written."""
        CASES[field] += 1
        with self.guard(), pytest.raises(PlaygroundError) as err:
            fn()
        msg = str(err.value)
        assert re.search(problem, msg, re.S), f"problem /{problem}/ not in: {msg}"
        assert re.search(fix, msg, re.S), f"fix /{fix}/ not in: {msg}"
        assert len(msg) < 600, msg  # one readable line, not a dump of the input
        return msg


def random_prefix(pg: Playground, seed: int = 1):
    return create_prefix(pg.base, PrefixSettings(num_virtual_tokens=3, init="random"), seed=seed)


@pytest.fixture
def box(tiny_llama, tmp_path, monkeypatch) -> Box:
    import datasets

    (tmp_path / "systmp").mkdir()
    (tmp_path / "hf-cache").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "systmp"))  # staging and data caches land here
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    pg = Playground(tiny_llama, Library(tmp_path / "lib"), Limits(**LIMITS))
    pg._downloads = tmp_path / "systmp" / "downloads"
    pg.library.save("keep", random_prefix(pg), {"task": "sentiment", "base_model": tiny_llama.name,
                                                 "base_fingerprint": tiny_llama.fingerprint})
    return Box(pg, tmp_path)


# =============================================================================================
# Task data: the Train tab's upload (file_columns, load_upload -> read_table, read_examples)
# =============================================================================================
def csv_text(rows, header=("input", "target"), newline="\n", quoting=csv.QUOTE_MINIMAL) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=newline, quoting=quoting)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


ROWS = [("A tender, \"funny\" film,\nthat earns every tear.", "positive"), ("Dull.\r\nVery dull", "negative"),
        ("NA", "null"), ("007", "None"), ("nan", "True"), ("  spaced  ", "1.50")]
MB = "x" * 1_000_000

BAD_DATA = {  # name: (file name, bytes, problem, fix)
    "utf16": ("d.csv", csv_text(ROWS).encode("utf-16"), r"not UTF-8.*UTF-16", r"Save the file as UTF-8"),
    "latin1": ("d.csv", "input,target\ncafé,crème\n".encode("latin-1"), r"not UTF-8 text: byte 0xe9 on line 2",
               r"Save the file as UTF-8"),
    "mixed_encodings": ("d.jsonl", b'{"input": "caf\xc3\xa9", "target": "a"}\n{"input": "caf\xe9", "target": "b"}\n',
                        r"not UTF-8 text: .* line 2", r"Save the file as UTF-8"),
    "binary": ("d.csv", bytes(range(256)) * 4, r"not UTF-8", r"Save the file as UTF-8"),
    "empty": ("d.csv", b"", r"'d.csv' is empty", r"needs one example per line"),
    "blank_lines": ("d.jsonl", b"\n \n\t\n", r"is empty", r"needs one example per line"),
    "bom_only": ("d.jsonl", b"\xef\xbb\xbf", r"is empty", r"needs one example per line"),
    "json_array": ("d.json", json.dumps([{"input": "a", "target": "b"}] * 3, indent=2).encode(),
                   r"one JSON array", r"an object per line"),
    "json_array_one_line": ("d.jsonl", json.dumps([{"input": "a", "target": "b"}]).encode(), r"one JSON array",
                            r"jq -c"),
    "jsonl_bad_line": ("d.jsonl", b'{"input": "a", "target": "b"}\n{"input": "c", "target": "d"}\n{"input": oops}\n',
                       r"line 3 is not valid JSON", r"Each line must be an object"),
    "jsonl_scalar_line": ("d.jsonl", b'{"input": "a", "target": "b"}\n42\n', r"line 2 is a JSON int",
                          r"Each line must be an object"),
    "jsonl_deep": ("d.jsonl", b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b', "target": "t"}\n',
                   r"line 1 is nested too deeply", r"Each line must be an object"),
    "jsonl_duplicate_key": ("d.jsonl", b'{"input": "a", "input": "b", "target": "c"}\n',
                            r"line 1 is ambiguous: the key 'input' appears twice", r"Each line must be an object"),
    "jsonl_too_many_keys": ("d.jsonl", "".join(json.dumps({f"k{i}": i}) + "\n" for i in range(300)).encode(),
                            r"past 256", r"Each line must be an object"),
    "csv_duplicate_column": ("d.csv", b"input,target,input\na,b,c\n", r"column 'input' 2 times",
                             r"its own name"),
    "csv_too_many_columns": ("d.csv", (",".join(f"c{i}" for i in range(5000)) + "\n").encode(), r"5,000 columns",
                             r"first line is the header"),
    "csv_ragged": ("d.csv", b"input,target\na,b\nc,d,e,f,g\n", r"Could not read 'd.csv' as CSV",
                   r"same number of fields"),
    "csv_unclosed_quote": ("d.csv", b'input,target\n"a,b\n', r"Could not read 'd.csv' as CSV|no examples",
                           r"same number of fields|no examples"),
    "too_big": ("d.jsonl", b'{"input": "a", "target": "b"}\n' * 200_000, r"MB; the limit for a task file",
                r"trim the file"),
    "not_a_table": ("notes.txt", b"input,target\na,b\n", r"not a \.jsonl or \.csv file", r"Give JSON lines or a CSV"),
    "pickle_as_csv": ("d.csv", pickle.dumps({"input": "a"}), r"not UTF-8", r"Save the file as UTF-8"),
    "empty_objects": ("d.jsonl", b"{}\n{}\n", r"its objects have no keys", r"Each line must be an object"),
}

BAD_EXAMPLES = {  # the file reads, but its examples can't train: (file name, text, problem, fix)
    "wrong_columns": ("d.csv", "text,label\na,b\n", r"no column 'input', 'target'; its columns are 'text', 'label'",
                      r"Choose the input and target columns"),
    "header_only": ("d.csv", "input,target\n", r"header row but no examples", r"Add one example per line"),
    "empty_cell": ("d.csv", "input,target\na,\n", r"row 1 has an empty 'input' or 'target'", r"needs both"),
    "one_mb_cell": ("d.csv", f"input,target\n{MB},y\n", r"row 1 has a 1,000,000-character 'input'",
                    r"Shorten that example or drop it"),
    "one_mb_line": ("d.jsonl", json.dumps({"input": "a", "target": MB}), r"1,000,000-character 'target'",
                    r"Shorten that example"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_files_get_one_clear_message(box, case):
    name, data, problem, fix = BAD_DATA[case]
    path = box.file(name, data)
    box.refused("task data", lambda: box.pg.file_columns(path), problem, fix)
    box.refused("task data", lambda: box.pg.load_upload("k", path, "input", "target", "Say it.", "exact_match"),
                problem, fix)
    assert box.pg.sessions.get("k").upload is None  # a refused upload leaves no task behind


@pytest.mark.parametrize("case", list(BAD_EXAMPLES))
def test_data_that_reads_but_cannot_train_gets_one_clear_message(box, case):
    name, text, problem, fix = BAD_EXAMPLES[case]
    path = box.file(name, text)
    box.refused("task data", lambda: box.pg.load_upload("k", path, "input", "target", "Say it.", "exact_match"),
                problem, fix)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("bom", [False, True])
def test_csv_with_quotes_newlines_and_na_like_values_reads_exactly(box, newline, bom):
    text = csv_text(ROWS * 2, newline=newline)
    path = box.file("d.csv", ("\ufeff" if bom else "") + text)
    CASES["task data"] += 1
    with box.guard():
        cols, preview = box.pg.file_columns(path)
        task = box.pg.load_upload("k", path, "input", "target", "Say it.", "exact_match")
    assert cols == ["input", "target"]  # no BOM glued to the first name
    assert preview[:6] == [{"input": x, "target": y} for x, y in ROWS]  # "NA" stays "NA", "007" stays "007"
    got = sorted((e.input, e.target) for s in ("train", "test") for e in task.split(s))
    assert got == sorted([(x.strip(), y.strip()) for x, y in ROWS] * 2)


def test_a_blank_header_cell_and_a_utf8_jsonl_with_every_script_read(box):
    CASES["task data"] += 2
    with box.guard():
        cols, rows = box.pg.file_columns(box.file("d.csv", ",input,target\n0,a,b\n1,c,d\n"))
        assert cols == ["Unnamed: 0", "input", "target"] and rows[1] == {"Unnamed: 0": "1", "input": "c", "target": "d"}
        text = "".join(json.dumps({"input": s, "target": s[::-1]}, ensure_ascii=False) + "\n"
                       for s in ["ünïcödé", "日本語の文", "emoji 😀🎉", "עברית", "line\u2028sep",
                                 "tab\there"])
        assert [(e.input, e.target) for e in read_examples(box.file("d.jsonl", text))] == \
               [(r["input"], r["target"]) for r in map(json.loads, text.split("\n")[:-1])]


def digit_string(n: int, seed: int) -> str:
    """n random digits: one token each, so a field within the character caps is thousands of tokens."""
    rng = random.Random(seed)
    return "".join(rng.choice("0123456789") for _ in range(n))


@pytest.mark.parametrize("rows, width", [(8, 1990), (40, 1990), (40, 600)])
def test_a_wide_csv_of_digit_strings_is_cut_to_the_example_limit_and_counted(box, rows, width):
    """A 159 KB CSV of 1,990-digit fields once asked for 2.3 GB in the first layer at batch 8."""
    data = [(digit_string(width, i), digit_string(width, 1000 + i)) for i in range(rows)]
    path = box.file("wide.csv", csv_text(data))
    CASES["task data"] += 1
    with box.guard():
        task = box.pg.load_upload("k", path, "input", "target", "Copy the digits.", "exact_match")
    cap = box.pg.limits.max_example_tokens
    n = lambda t: len(box.pg.base.tokenizer(t, add_special_tokens=False)["input_ids"])  # noqa: E731
    examples = task.split("train") + task.split("test")
    assert len(examples) == rows and task.truncated == sum(1 for x, y in data if n(x) + n(y) > cap)
    assert all(n(e.input) + n(e.target) <= cap + 1 for e in examples)  # re-encoding a cut may merge one token
    assert all(any(x.startswith(e.input) for x, _ in data) for e in examples)  # cut, never rewritten


@settings(max_examples=20, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(n=st.integers(1, 2000), seed=st.integers(0, 10**6))
def test_a_long_digit_string_prompt_answers_or_is_refused_by_its_token_count(box, n, seed):
    """Digits pass a character cap one token each: the prompt is sized in tokens before any model work."""
    text = digit_string(n, seed)
    CASES["text fields"] += 2
    with box.guard():
        for call in (lambda: box.pg.switch("k", [NO_PREFIX, "keep"], text),
                     lambda: box.pg.attention("k", text, ["keep"])):
            try:
                call()
            except PlaygroundError as exc:
                assert re.search(r"tokens.*limit|memory", str(exc)), str(exc)
                assert len(str(exc)) < 600


def test_many_loose_files_in_one_import_are_refused_before_any_is_read(box):
    """The web layer caps files per upload request; the engine refuses what is not one prefix folder."""
    files = [box.file(CONFIG_FILE, "{}"), box.file(WEIGHTS_FILE, b"x"), box.file(CARD_FILE, "{}"),
             box.file("README.md", "hi"), box.file(CONFIG_FILE, "{}"), box.file(WEIGHTS_FILE, b"y")]
    box.refused("prefix import", lambda: box.pg.import_upload([str(f) for f in files], "many"),
                r"uploaded twice", r"once each")


def test_a_huge_instruction_is_refused_before_any_work(box):
    path = box.file("d.csv", csv_text(ROWS))
    box.refused("text fields", lambda: box.pg.load_upload("k", path, "input", "target", "y" * 100_000, "exact_match"),
                rf"instruction has 100,000 characters; the limit is {MAX_TEXT_CHARS:,}", r"shorten it")
    box.refused("text fields", lambda: box.pg.load_upload("k", path, "input", "target", "ok", ["exact_match"]),
                r"Unknown metric", r"Choose one of")


# --- properties ------------------------------------------------------------------------------
@HYP
@given(data=st.binary(max_size=3000), suffix=st.sampled_from([".jsonl", ".json", ".csv"]))
def test_any_bytes_either_read_as_a_table_or_raise_a_playground_error(box, data, suffix):
    CASES["task data"] += 1
    path = box.file("up" + suffix, data)
    with box.guard():
        try:
            cols, rows = box.pg.file_columns(path)
        except PlaygroundError as exc:
            assert str(exc) and "up" + suffix in str(exc)
        else:
            assert cols and all(isinstance(c, str) for c in cols) and len(rows) <= 8
            with contextlib.suppress(PlaygroundError):  # a table can still lack the columns or the examples
                assert all(isinstance(e, Example) and e.input and e.target for e in read_examples(path, *cols[:1] * 2))


cell = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(lambda s: s.strip())


@HYP
@given(rows=st.lists(st.tuples(cell, cell), min_size=1, max_size=6), excel=st.booleans())
def test_any_well_formed_csv_reads_back_exactly(box, rows, excel):
    CASES["task data"] += 1
    # Python's writer quotes a bare '\r' only when '\r' is part of its line ending (as Excel's is)
    path = box.file("d.csv", csv_text(rows, newline="\r\n") if excel else csv_text(rows, quoting=csv.QUOTE_ALL))
    with box.guard():
        got = read_examples(path)
    assert [(e.input, e.target) for e in got] == [(x.strip(), y.strip()) for x, y in rows]


@HYP
@given(rows=st.lists(st.tuples(cell, cell), min_size=1, max_size=6), ascii_only=st.booleans())
def test_any_well_formed_jsonl_reads_back_exactly(box, rows, ascii_only):
    CASES["task data"] += 1
    text = "".join(json.dumps({"input": x, "target": y}, ensure_ascii=ascii_only) + "\n" for x, y in rows)
    with box.guard():
        got = read_examples(box.file("d.jsonl", text))
    assert [(e.input, e.target) for e in got] == [(x.strip(), y.strip()) for x, y in rows]


@HYP
@given(text=st.text(max_size=400), suffix=st.sampled_from([".jsonl", ".csv"]))
def test_any_text_file_either_gives_examples_or_a_playground_error(box, text, suffix):
    CASES["task data"] += 1
    path = box.file("t" + suffix, "input,target\n" + text if suffix == ".csv" else text)
    with box.guard():
        try:
            task = box.pg.load_upload("k", path, "input", "target", "Say it.", "exact_match")
        except PlaygroundError as exc:
            assert str(exc)
        else:
            assert all(e.input and e.target for s in task.splits.values() for e in s)


# =============================================================================================
# Prefix import: the Library tab's upload (stage_upload + load_prefix + save)
# =============================================================================================
class Evil:
    """Unpickling this creates ``marker``: proof that a file was never unpickled if the marker is absent."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def make_zip(path: Path, members: list, compression=zipfile.ZIP_DEFLATED) -> Path:
    """members: (name or ZipInfo, bytes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate names, on purpose
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return path


def good_files(pg: Playground, tmp: Path) -> dict[str, bytes]:
    """The three files of a valid prefix for pg's model."""
    d = Library(tmp).save(f"src-{uuid.uuid4().hex[:8]}", random_prefix(pg, seed=7),
                          {"task": "sentiment", "base_model": pg.base.name, "base_fingerprint": pg.base.fingerprint})
    return {f: (d / f).read_bytes() for f in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)}


def st_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors)


@pytest.fixture
def good(box) -> dict[str, bytes]:
    return good_files(box.pg, box.inputs / "src")


def config_with(good: dict, **changes) -> bytes:
    cfg = json.loads(good[CONFIG_FILE])
    cfg.update(changes)
    return json.dumps(cfg).encode()


def import_cases(good: dict, marker: Path) -> dict:
    """name: (upload, problem, fix); an upload is loose files {name: bytes}, zip members, or (twist, members)."""
    cfg = json.loads(good[CONFIG_FILE])
    P, width = cfg["num_virtual_tokens"], cfg["num_layers"] * 2 * cfg["token_dim"]
    other = make_tiny("llama", seed=99)  # same shapes, other weights
    z = lambda **over: [(f"p/{k}", v) for k, v in {**good, **over}.items()]  # noqa: E731
    w = lambda t: {CONFIG_FILE: good[CONFIG_FILE], WEIGHTS_FILE: st_bytes({"prompt_embeddings": t})}  # noqa: E731
    evil_pickle = pickle.dumps(Evil(marker))
    torch_pickle = io.BytesIO()
    torch.save({"prompt_embeddings": torch.zeros(P, width)}, torch_pickle)
    return {
        "zip_bomb": ([("p/" + CONFIG_FILE, good[CONFIG_FILE]), ("p/" + WEIGHTS_FILE, bytes(20 * 2**20))],
                     r"compressed \d+:1, which looks like a zip bomb", r"Re-zip the real prefix files"),
        "zip_dotdot": ([("p/../../evil/" + CONFIG_FILE, good[CONFIG_FILE]), ("p/" + WEIGHTS_FILE, good[WEIGHTS_FILE])],
                       r"unsafe path 'p/\.\./\.\./evil", r"plain relative names"),
        "zip_dotdot_first": ([("../" + CONFIG_FILE, good[CONFIG_FILE])], r"unsafe path", r"plain relative names"),
        "zip_absolute": ([("/etc/" + CONFIG_FILE, good[CONFIG_FILE])], r"unsafe path", r"plain relative names"),
        "zip_symlink": ([(symlink_info("p/" + CONFIG_FILE), b"/etc/passwd"), ("p/" + WEIGHTS_FILE, good[WEIGHTS_FILE])],
                        r"is a symbolic link", r"links are not accepted"),
        "zip_nested_zip": (z(**{"inner.zip": b"PK\x05\x06" + bytes(18)}), r"Unexpected file 'inner.zip'",
                           r"holds only adapter_config.json"),
        "zip_pickle_bin": ([("p/" + CONFIG_FILE, good[CONFIG_FILE]), ("p/adapter_model.bin", evil_pickle)],
                           r"is a pickle file", r"safe_serialization=True"),
        "zip_empty": ([], r"has no adapter_config.json or adapter_model.safetensors", r"needs both"),
        "zip_two_prefixes": ([("a/" + CONFIG_FILE, good[CONFIG_FILE]), ("b/" + WEIGHTS_FILE, good[WEIGHTS_FILE])],
                             r"several folders", r"one prefix at a time"),
        "zip_control_char_folder": ([(f"bad\nname/{k}", v) for k, v in good.items()], r"not a valid prefix name",
                                    r"Use 1-64 letters"),
        "zip_encrypted": (("encrypt", z()), r"is encrypted", r"without a password"),
        "zip_bzip2": (("bzip2", z()), r"compression method 12", r"re-zip"),
        "zip_bad_crc": (("flip", z()), r"not a valid zip file \(Bad CRC", r"Zip the prefix folder again"),
        "zip_truncated": (("truncate", z()), r"not a valid zip file", r"Zip the prefix folder again"),
        "pickle_renamed_safetensors": ({CONFIG_FILE: good[CONFIG_FILE], WEIGHTS_FILE: evil_pickle},
                                       r"not a valid safetensors file", r"Re-export the prefix"),
        "torch_save_renamed_safetensors": ({CONFIG_FILE: good[CONFIG_FILE], WEIGHTS_FILE: torch_pickle.getvalue()},
                                           r"not a valid safetensors file", r"Re-export the prefix"),
        "safetensors_huge_header": ({CONFIG_FILE: good[CONFIG_FILE], WEIGHTS_FILE: struct.pack("<Q", 2**62) + b"{}"},
                                    r"not a valid safetensors file", r"Re-export"),
        "safetensors_truncated": ({CONFIG_FILE: good[CONFIG_FILE], WEIGHTS_FILE: good[WEIGHTS_FILE][:-8]},
                                  r"not a valid safetensors file", r"Re-export"),
        "wrong_shape": (w(torch.zeros(P, 7)),
                        rf"holds a \({P}, 7\) tensor, but its config says \({P}, {width}\)", r"re-export the prefix"),
        "wrong_rank": (w(torch.zeros(P, width, 1)),
                       r"holds a .* tensor, but its config says", r"re-export"),
        "nan": (w(torch.full((P, width), float("nan"))),
                r"holds NaN or infinite values", r"Train it again"),
        "inf_one_value": (w(torch.zeros(P, width).index_fill_(1, torch.tensor([3]), float("inf"))),
                          r"NaN or infinite", r"Train it again"),
        "int_dtype": (w(torch.zeros(P, width, dtype=torch.int64)),
                      r"holds int64 values; a prefix is floats", r"Re-export"),
        "bool_dtype": (w(torch.zeros(P, width, dtype=torch.bool)),
                       r"holds bool values", r"Re-export"),
        "no_embeddings_tensor": ({CONFIG_FILE: good[CONFIG_FILE],
                                  WEIGHTS_FILE: st_bytes({f"w{i}": torch.zeros(1) for i in range(50)})},
                                 r"has no .prompt_embeddings. tensor \(it has \[.w", r"Re-export"),
        "config_other_model": ({CONFIG_FILE: config_with(good, num_layers=30, token_dim=192, num_attention_heads=3),
                                WEIGHTS_FILE: st_bytes({"prompt_embeddings": torch.zeros(P, 30 * 2 * 192)})},
                               r"made for another model: it has 30 layers",
                               r"Load it with the model it was trained on"),
        "card_other_model": ({**good, CARD_FILE: json.dumps({"base_fingerprint": other.fingerprint}).encode()},
                             r"trained on a different model", r"Load the model it was trained on"),
        "config_string_tokens": ({**good, CONFIG_FILE: config_with(good, num_virtual_tokens="3")},
                                 r"bad values: num_virtual_tokens must be a positive whole number, got '3'",
                                 r"Re-export"),
        "config_bool_layers": ({**good, CONFIG_FILE: config_with(good, num_layers=True)},
                               r"num_layers must be a positive whole number, got True", r"Re-export"),
        "config_float_heads": ({**good, CONFIG_FILE: config_with(good, num_attention_heads=2.0)},
                               r"num_attention_heads must be a positive whole number", r"Re-export"),
        "config_too_many_tokens": ({**good, CONFIG_FILE: config_with(good, num_virtual_tokens=10**9)},
                                   r"1000000000 virtual tokens; the limit is 512", r"limit"),
        "config_lora": ({**good, CONFIG_FILE: config_with(good, peft_type="LORA")}, r"not a prefix-tuning adapter",
                        r"expected 'PREFIX_TUNING'"),
        "config_seq_cls": ({**good, CONFIG_FILE: config_with(good, task_type="SEQ_CLS")}, r"is a 'SEQ_CLS' prefix",
                           r"only CAUSAL_LM prefixes load here"),
        "config_bad_task_type": ({**good, CONFIG_FILE: config_with(good, task_type=["x" * 10_000])},
                                 r"prefix; only CAUSAL_LM", r"only CAUSAL_LM prefixes load here"),
        "config_array": ({**good, CONFIG_FILE: b"[1, 2, 3]"}, r"peft_type is 'list'", r"expected 'PREFIX_TUNING'"),
        "config_deep": ({**good, CONFIG_FILE: b"[" * 30_000 + b"]" * 30_000}, r"nested too deeply",
                        r"Re-export"),
        "config_utf16": ({**good, CONFIG_FILE: good[CONFIG_FILE].decode().encode("utf-16")}, r"is not valid JSON",
                         r"Re-export"),
        "config_missing": ({WEIGHTS_FILE: good[WEIGHTS_FILE]}, r"has no adapter_config.json", r"needs both"),
        "card_metrics_list": ({**good, CARD_FILE: b'{"metrics": [0.5, 0.7]}'},
                              r"card.json in '.*' has 'metrics' = \[0.5, 0.7\], but it must be an object",
                              r"leave card.json out"),
        "card_task_object": ({**good, CARD_FILE: b'{"task": {"name": "sentiment"}}'}, r"'task' = .*must be a string",
                             r"leave card.json out"),
        "card_fingerprint_number": ({**good, CARD_FILE: b'{"base_fingerprint": 12345}'},
                                    r"'base_fingerprint' = 12345, but it must be a string", r"Fix it"),
        "card_array": ({**good, CARD_FILE: b"[]"}, r"must hold a JSON object", r"JSON object"),
        "card_deep": ({**good, CARD_FILE: b'{"a": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"}, r"nested too deeply",
                      r"Re-export"),
        # Cards are bounded: every listing sends them to every browser.
        "card_giant": ({**good, CARD_FILE: json.dumps({"task": "sentiment", "notes": "x" * 3_000_000}).encode()},
                       r"card.json in '.*' is 2,930 KB; the limit is 64 KB", r"Shorten it, or leave card.json out"),
        "card_long_task": ({**good, CARD_FILE: json.dumps({"task": "t" * 5000}).encode()},
                           r"has a 'task' of 5,000 characters; the limit is 200", r"Shorten it"),
        "card_long_name": ({**good, CARD_FILE: json.dumps({"name": "n" * 201}).encode()},
                           r"has a 'name' of 201 characters", r"leave card.json out"),
        "config_giant": ({**good, CONFIG_FILE: config_with(good, base_model_name_or_path="m" * 100_000)},
                         r"adapter_config.json in '.*' is \d+ KB; the limit is 64 KB", r"Re-export"),
        "config_512_tokens": ({CONFIG_FILE: config_with(good, num_virtual_tokens=512),
                               WEIGHTS_FILE: st_bytes({"prompt_embeddings": torch.zeros(512, width)})},
                              r"has 512 virtual tokens; this server's limit is 8 \(--max-virtual-tokens\)",
                              r"Train it with at most 8 tokens"),
        "card_not_utf8": ({**good, CARD_FILE: b'{"task": "caf\xe9"}'}, r"card.json .* is not valid JSON", r"Re-export"),
        "loose_pickle": ({CONFIG_FILE: good[CONFIG_FILE], "adapter_model.bin": evil_pickle}, r"is a pickle file",
                         r"safe_serialization=True"),
        "loose_unexpected": ({**good, "run_me.py": b"import os"}, r"Unexpected file 'run_me.py'",
                             r"holds only adapter_config.json"),
    }


def build_upload(box: Box, spec) -> list[str]:
    """Write one import case: a dict is loose files, a list a zip's members, (twist, members) a damaged zip."""
    if isinstance(spec, dict):
        d = box.inputs / uuid.uuid4().hex
        d.mkdir()
        for name, data in spec.items():
            (d / name).write_bytes(data)
        return [str(d / n) for n in spec]
    twist, members = spec if isinstance(spec, tuple) else (None, spec)
    path = box.inputs / f"{uuid.uuid4().hex}.zip"
    make_zip(path, members, {"bzip2": zipfile.ZIP_BZIP2, "flip": zipfile.ZIP_STORED}.get(twist, zipfile.ZIP_DEFLATED))
    raw = bytearray(path.read_bytes())
    if twist == "flip":  # one byte of the stored weights: the CRC check fails while copying
        raw[raw.find(b"prompt_embeddings") + 200] ^= 0xFF
    elif twist == "truncate":
        raw = raw[: len(raw) // 2]
    elif twist == "encrypt":  # zipfile can't write encrypted members: set the flag in both headers
        raw[raw.find(b"PK\x03\x04") + 6] |= 0x1
        raw[raw.find(b"PK\x01\x02") + 8] |= 0x1
    path.write_bytes(bytes(raw))
    return [str(path)]


def test_the_import_corpus_gets_one_clear_message_each_and_never_unpickles(box, good):
    marker = box.inputs / "unpickled"
    cases = import_cases(good, marker)
    failures = []
    for name, (spec, problem, fix) in cases.items():
        paths = build_upload(box, spec)
        try:
            box.refused("prefix import", lambda: box.pg.import_upload(paths, "", False), problem, fix)
        except (Exception, pytest.fail.Exception) as exc:  # collect every failing case, one line each
            failures.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
    assert not failures, "\n".join(failures)
    assert not marker.exists(), "a pickle was unpickled"
    assert len(cases) >= 40
    # ... and the library still works: 'keep' loads, a good upload imports.
    assert box.pg.get_prefix("k", "keep").num_virtual_tokens == 3
    with box.guard(may_add="fine"):
        assert box.pg.import_upload(build_upload(box, dict(good)), "fine") == "fine"


def test_valid_odd_uploads_import_correctly(box, good):
    """float16 weights and a card with extra fields are fine: imported, and equal to what was uploaded."""
    cfg = json.loads(good[CONFIG_FILE])
    P, width = cfg["num_virtual_tokens"], cfg["num_layers"] * 2 * cfg["token_dim"]
    w = torch.randn(P, width, generator=torch.Generator().manual_seed(0)).half()
    files = {CONFIG_FILE: good[CONFIG_FILE], WEIGHTS_FILE: st_bytes({"base_model.prompt_embeddings": w}),
             CARD_FILE: json.dumps({"task": "mine", "notes": ["any", {"json": None}], "metrics": {}}).encode()}
    CASES["prefix import"] += 1
    with box.guard(may_add="half"):
        assert box.pg.import_upload(build_upload(box, files), " half ") == "half"
    assert torch.equal(box.pg.get_prefix("k", "half").embeddings(), w.float())
    assert box.pg.library_card("half")["notes"] == ["any", {"json": None}]


# --- properties ------------------------------------------------------------------------------
zip_part = st.sampled_from(["..", ".", "p", CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, "README.md", "x.bin", "", "C:",
                            "__MACOSX", ".DS_Store", "a\nb", "\\..", "é", "con"])
zip_name = st.tuples(st.booleans(), st.lists(zip_part, min_size=1, max_size=4)).map(
    lambda t: ("/" if t[0] else "") + "/".join(t[1]))


@HYP
@given(members=st.lists(st.tuples(zip_name, st.binary(max_size=64), st.booleans()), max_size=5))
def test_any_zip_is_staged_inside_its_folder_or_refused(box, members):
    CASES["prefix import"] += 1
    path = make_zip(box.inputs / f"{uuid.uuid4().hex}.zip",
                    [(symlink_info(n) if link else n, data) for n, data, link in members])
    work = box.root / "systmp" / "work"
    with box.guard():
        try:
            folder, suggested = stage_upload([path], work)
        except PlaygroundError as exc:
            assert str(exc)
        else:
            assert folder == work / "prefix" and {p.name for p in folder.iterdir()} >= {CONFIG_FILE, WEIGHTS_FILE}
            assert suggested is None or "/" not in suggested
        staged = [p for p in work.rglob("*")]
        assert all(p.is_relative_to(work / "prefix") or p == work / "prefix" for p in staged), staged
        assert not any(p.is_symlink() for p in staged)
        shutil.rmtree(work, ignore_errors=True)


json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                    max_size=3), max_leaves=8)
config_keys = st.sampled_from(["num_virtual_tokens", "num_layers", "token_dim", "num_attention_heads", "task_type",
                               "peft_type", "inference_mode", "prefix_projection", "encoder_hidden_size",
                               "num_transformer_submodules", "base_model_name_or_path", "revision",
                               "modules_to_save", "peft_version", "auto_mapping", "unknown"])


@HYP
@given(changes=st.dictionaries(config_keys, json_value, max_size=3), card=json_value)
def test_any_config_and_card_either_load_or_raise_a_playground_error(box, good, changes, card):
    CASES["prefix import"] += 1
    d = box.inputs / uuid.uuid4().hex
    d.mkdir()
    cfg = json.loads(good[CONFIG_FILE])
    cfg.update(changes)
    (d / CONFIG_FILE).write_text(json.dumps(cfg))
    (d / WEIGHTS_FILE).write_bytes(good[WEIGHTS_FILE])
    (d / CARD_FILE).write_text(json.dumps(card))
    with box.guard():
        try:
            prefix = load_prefix(d, box.pg.base)
        except PlaygroundError as exc:
            assert str(exc) and len(str(exc)) < 600
        else:
            assert prefix.num_virtual_tokens == json.loads(good[CONFIG_FILE])["num_virtual_tokens"]


@HYP
@given(data=st.binary(max_size=512), header=st.dictionaries(
    st.sampled_from(["prompt_embeddings", "__metadata__", "x"]),
    st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "F64",
                                                     "C64", "XX"]),
                           "shape": st.lists(st.integers(-2, 200), max_size=3),
                           "data_offsets": st.lists(st.integers(-2, 600), min_size=2, max_size=2)}), max_size=2))
def test_any_weights_file_either_loads_or_raises_a_playground_error(box, good, data, header):
    CASES["prefix import"] += 1
    d = box.inputs / uuid.uuid4().hex
    d.mkdir()
    (d / CONFIG_FILE).write_bytes(good[CONFIG_FILE])
    h = json.dumps(header).encode()
    (d / WEIGHTS_FILE).write_bytes(struct.pack("<Q", len(h)) + h + data if data[:1] != b"!" else data)
    with box.guard():
        try:
            prefix = load_prefix(d, box.pg.base)
        except PlaygroundError as exc:
            assert str(exc)
        else:
            assert torch.isfinite(prefix.embeddings()).all()


# =============================================================================================
# Names: save, rename, delete, export, import, inspect
# =============================================================================================
HOSTILE_NAMES = ["../escape", "..", ".", "a/b", "a\\b", "/etc/passwd", "name\n", "na\x00me", "tab\there", "bell\a",
                 ".hidden", "", " ", "a" * 65, "x..y", "~", "-dash", "名前", "a b", "C:", "a:b", "nul\x00",
                 "\u202eexe.txt", "line\u2028sep", "%2e%2e", "keep/../keep",
                 # the same folder as another name on Windows or macOS, or a Windows device
                 "keep.", "keep. ", "CON", "nul", "Com1", "lpt9", "con.txt", "aux.tar.gz", "ＣＯＮ", "keep\u00a0"]


def test_hostile_names_are_refused_by_every_action(box, good):
    pg = box.pg
    upload = build_upload(box, dict(good))
    run = pg.start_run("k", pg.task("k", "sentiment"), PrefixSettings(3, "random"),
                       TrainSettings(steps=1, batch_size=2, eval_every=0, eval_examples=4))
    list(pg.run_steps(run))  # something to save
    failures = []
    for name in HOSTILE_NAMES:
        actions = {"save": lambda: pg.save_trained("k", name), "rename to": lambda: pg.rename("keep", name),
                   "rename from": lambda: pg.rename(name, "other"), "delete": lambda: pg.delete(name),
                   "export": lambda: pg.export(name), "import": lambda: pg.import_upload(upload, name),
                   "inspect": lambda: pg.inspect(name), "load": lambda: pg.get_prefix("k", name)}
        for what, fn in actions.items():
            if check_name_ok(name.strip()) and what in ("save", "rename to", "import"):
                continue  # these trim the name first ("name\n" -> "name"), and a valid name is not hostile
            if what == "import" and not name.strip():
                continue  # no name: the upload's own folder name is used
            try:
                box.refused("names", fn, r"not a valid prefix name|No prefix named",
                            r"Use 1-64 letters|Use another name|Refresh|No prefix")
            except (Exception, pytest.fail.Exception) as exc:
                failures.append(f"{what} {name!r}: {type(exc).__name__}: {str(exc)[:200]}")
    assert not failures, "\n".join(failures)


def test_case_variants_of_a_name_are_that_name(box, good):
    """'KEEP' beside 'keep' would be one folder on macOS and Windows, and a confusing twin on Linux: refused."""
    pg = box.pg
    upload = build_upload(box, dict(good))
    run = pg.start_run("k", pg.task("k", "sentiment"), PrefixSettings(3, "random"),
                       TrainSettings(steps=1, batch_size=2, eval_every=0, eval_examples=4))
    list(pg.run_steps(run))
    for name in ("KEEP", "Keep", "kEEp"):
        for over in (False, True):
            for what, fn in (("save", lambda: pg.save_trained("k", name, over, owner="student")),
                             ("import", lambda: pg.import_upload(upload, name, over, owner="student"))):
                box.refused("names", fn, rf"'{name}' is the same name as 'keep' here", r"use 'keep' itself")
    pg.library.save("other", random_prefix(pg), owner="student")
    box.expected = ["keep", "other"]
    box.refused("names", lambda: pg.rename("other", "KEEP", owner="student"), r"'KEEP' is the same name as 'keep'",
                r"choose a different name")
    pg.delete("other", owner="student")


def check_name_ok(name: str) -> bool:
    try:
        check_name(name)
        return True
    except PlaygroundError:
        return False


@HYP
@given(name=st.text(max_size=80) | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,70}\n?", fullmatch=True))
def test_check_name_accepts_only_safe_names_inside_the_root(tmp_path, name):
    CASES["names"] += 1
    lib = Library(tmp_path / "names-lib")
    try:
        path = lib.path(name)
    except PlaygroundError as exc:
        assert "not a valid prefix name" in str(exc)
        return
    assert path.parent == lib.root and path.resolve().parent == lib.root.resolve()
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", name) and ".." not in name
    assert all(c.isprintable() and c not in "/\\\x00" for c in name)


# =============================================================================================
# Text fields: Attention and Switch prompts, instruction and init text of training
# =============================================================================================
def test_a_100k_character_prompt_is_refused_by_attention_and_switch(box):
    for text in ("p" * 100_000, "日本" * 50_000, "\x00" * 100_000):
        box.refused("text fields", lambda: box.pg.switch("k", [NO_PREFIX, "keep"], text),
                    r"prompt has 100,000 characters; the limit is 2,000", r"Shorten it")
        box.refused("text fields", lambda: box.pg.attention("k", text, ["keep"]),
                    r"prompt has 100,000 characters; the limit is 2,000", r"Shorten it")
    for text in ("", "   ", "\n\t\r "):
        box.refused("text fields", lambda: box.pg.switch("k", ["keep"], text), r"prompt is empty",
                    r"Type a sentence")


def test_a_prompt_within_the_character_limit_but_past_the_models_positions_is_refused(tmp_path):
    """2,000 four-byte characters are thousands of tokens: more than a 512-position model holds."""
    pg = Playground(make_tiny("gpt2"), Library(tmp_path / "lib"), Limits(**LIMITS))
    text = "𝕏😀" * 1000
    assert len(text) <= pg.limits.max_prompt_chars
    CASES["text fields"] += 1
    with pytest.raises(PlaygroundError, match=r"tokens.*limit.*Shorten it"):
        pg.switch("k", [NO_PREFIX], text)
    assert len(pg.switch("k", [NO_PREFIX], "a short one").outputs) == 1  # still serving


def test_a_huge_init_text_is_refused_before_the_model_runs_on_it(box):
    task = box.pg.task("k", "sentiment")
    box.refused("text fields", lambda: box.pg.start_run("k", task, PrefixSettings(3, "text", "w " * 50_000),
                                                        TrainSettings(steps=1, batch_size=2, eval_examples=4)),
                r"init text has 100,000 characters; the limit is 2,000", r"Shorten it")
    assert box.pg.sessions.get("k").run is None


@HYP
@given(text=st.text(max_size=300))
def test_any_prompt_either_answers_or_raises_a_playground_error(box, text):
    CASES["text fields"] += 1
    with box.guard():
        try:
            res = box.pg.switch("k", [NO_PREFIX, "keep"], text)
        except PlaygroundError as exc:
            assert "prompt is empty" in str(exc) or "limit" in str(exc)
        else:
            assert [o.name for o in res.outputs] == [NO_PREFIX, "keep"]
            assert all(isinstance(o.text, str) for o in res.outputs)


@settings(max_examples=25, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=st.text(min_size=1, max_size=200))
def test_any_prompt_through_attention_either_answers_or_raises_a_playground_error(box, text):
    CASES["text fields"] += 1
    with box.guard():
        try:
            out = box.pg.attention("k", text, ["keep"])
        except PlaygroundError as exc:
            assert "prompt is empty" in str(exc) or "limit" in str(exc)
        else:
            assert torch.isfinite(out["keep"].weights).all()


# =============================================================================================
# The running server keeps serving (real app, real model)
# =============================================================================================
@pytest.mark.real_model
def test_the_running_app_refuses_hostile_input_and_keeps_serving(tmp_path):
    from gradio_client import Client, handle_file

    from bench.driver import start_app, stop_app

    lib = tmp_path / "library"
    lib.mkdir()
    proc, url, _ = start_app(["--library", str(lib)], tmp_path / "server.log")
    try:
        client = Client(url, verbose=False)
        api = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])

        def endpoint(*names: str) -> str:  # the UI's api_name, or gradio's default (the function's name)
            found = [n for n in names if n in api]
            assert found, f"none of {names} in {sorted(api)}"
            return found[0]

        file_ep, use_ep = endpoint("/on_file"), endpoint("/on_use")
        import_ep, switch_ep = endpoint("/on_import"), endpoint("/switch", "/on_submit")
        attention_ep = endpoint("/attention", "/on_run")
        before = files_under(lib)
        bad = tmp_path / "inputs"
        bad.mkdir()
        (bad / "d.csv").write_bytes("input,target\ncafé,crème\n".encode("latin-1"))
        (bad / "d.jsonl").write_text(json.dumps([{"input": "a", "target": "b"}]))
        make_zip(bad / "evil.zip", [("../" + CONFIG_FILE, b"{}")])
        make_zip(bad / "bomb.zip", [("p/" + CONFIG_FILE, b"{}"), ("p/" + WEIGHTS_FILE, bytes(20 * 2**20))])
        (bad / WEIGHTS_FILE).write_bytes(pickle.dumps(Evil(tmp_path / "unpickled")))
        (bad / CONFIG_FILE).write_text("{}")
        calls = [
            (file_ep, (handle_file(str(bad / "d.csv")),), r"not UTF-8"),
            (file_ep, (handle_file(str(bad / "d.jsonl")),), r"one JSON array"),
            (use_ep, (handle_file(str(bad / "d.csv")), None, None, "Say it.", "exact_match"), r"not UTF-8"),
            (import_ep, ([handle_file(str(bad / "evil.zip"))], "", False), r"unsafe path"),
            (import_ep, ([handle_file(str(bad / "bomb.zip"))], "", False), r"zip bomb"),
            (import_ep, ([handle_file(str(bad / CONFIG_FILE)), handle_file(str(bad / WEIGHTS_FILE))], "x", False),
             r"not a prefix-tuning adapter|not a valid safetensors"),
            (switch_ep, ([NO_PREFIX], "p" * 100_000), r"100,000 characters"),
            (switch_ep, ([NO_PREFIX], "𝕏" * 2000), r"tokens|characters"),
            (attention_ep, ("p" * 100_000, None, None), r"100,000 characters"),
        ]
        for ep, args, match in calls:
            CASES["server"] += 1
            with pytest.raises(Exception, match=match):
                client.predict(*args, api_name=ep)
            assert proc.poll() is None, f"the server died on {ep}"
        digits = digit_string(2000, 7)  # 2,000 tokens: within the character cap, sized in tokens and memory
        client.predict(None, api_name="/refresh")  # what opening the Attention tab does: fills its prefix picker
        for ep, args in ((switch_ep, ([NO_PREFIX], digits)), (attention_ep, (digits, "sentiment", None))):
            CASES["server"] += 1
            try:
                client.predict(*args, api_name=ep)
            except Exception as exc:  # noqa: BLE001 - a refusal must be a readable one
                assert re.search(r"tokens|memory", str(exc)), str(exc)
            assert proc.poll() is None, f"the server died on 2,000 digits through {ep}"
        CASES["server"] += 1  # more files in one upload request than the server takes
        boundary = "b0undary"
        body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"f{i}.json\"\r\n"
                        f"Content-Type: application/json\r\n\r\n{{}}\r\n".encode() for i in range(12))
        req = urllib.request.Request(url + "gradio_api/upload", body + f"--{boundary}--\r\n".encode(),
                                     {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 413 and b"files" in err.value.read()
        html = client.predict([NO_PREFIX], "The capital of France is", api_name=switch_ep)
        assert "pp-card" in html and NO_PREFIX in html  # a normal request still succeeds
        assert files_under(lib) == before and os.listdir(lib) == []
        assert not (tmp_path / "unpickled").exists()
        assert proc.poll() is None
    finally:
        stop_app(proc)
