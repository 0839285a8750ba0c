"""Toy tasks: the built-in ones shipped as JSONL in ``playground/data/``, and user data.

Every task is a list of ``{input, target}`` examples plus an instruction (used both to
initialize the prefix and as the instruction-prompt baseline) and a metric. Example::

    {"input": "A tender, funny film that earns every tear.", "target": "positive"}

Files are read with Python's json and csv modules (see ``read_table``); errors name the file, line and fix.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PlaygroundError
from .metrics import METRICS

DATA_DIR = Path(__file__).parent / "data"
SPLITS = ("train", "validation", "test", "fresh")  # fresh: written by another author, for cards only


@dataclass(frozen=True)
class Example:
    input: str
    target: str


@dataclass
class Task:
    """A toy task: how to prompt it, how to score it, and its examples by split."""

    name: str  # short id, e.g. "sentiment"
    title: str  # shown to learners
    instruction: str  # the instruction-prompt baseline and the default prefix init text
    metric: str = "exact_match"  # a key of metrics.METRICS
    max_new_tokens: int = 8  # generation budget for one answer
    description: str = ""
    splits: dict[str, list[Example]] = field(default_factory=dict, repr=False)
    truncated: int = 0  # examples cut to the server's token limit when the task was read (see fit_examples)
    formats: tuple[str, ...] = ()  # candidate output-format sentences for the "instruction + format" baseline

    @property
    def format_candidates(self) -> tuple[str, ...]:
        return self.formats or GENERIC_FORMATS

    def split(self, name: str) -> list[Example]:
        if name not in self.splits or not self.splits[name]:
            raise PlaygroundError(f"Task '{self.name}' has no '{name}' split (it has: {', '.join(self.splits)}).")
        return self.splits[name]


# Output-format sentences for a task that names none (an uploaded one): the baseline then says only "be brief".
GENERIC_FORMATS = ("Answer with the answer only, no other words.",
                   "Reply in as few words as possible, with no explanation.")
MAX_LABELS = 8  # a task whose training targets take at most this many values is a classification task


def labels_of(train: list[Example]) -> tuple[str, ...]:
    """The label set of a classification task (each target value seen at least twice, at most MAX_LABELS
    values), else () : label scoring only applies where the answer is one of a few fixed labels."""
    counts = Counter(e.target for e in train)
    if not 2 <= len(counts) <= MAX_LABELS or min(counts.values()) < 2:
        return ()
    return tuple(sorted(counts))


# Instructions are short on purpose: a text-initialized prefix takes the key/values of the
# first num_virtual_tokens tokens of the (chat-formatted) instruction, so a 16-20 token
# prefix should hold all of it.
BUILTIN: dict[str, Task] = {
    t.name: t
    for t in [
        Task("sentiment", "Sentiment: movie review → positive/negative",
             "Classify the movie review as positive or negative.", max_new_tokens=4,
             description="A short movie review; answer positive or negative.",
             formats=("Answer with one word: positive or negative.",
                      "Reply with the label only, positive or negative, and no other words.")),
        Task("topic", "Topic: news headline → world/sports/business/science",
             "Classify the headline topic: world, sports, business or science.", max_new_tokens=4,
             description="A news headline; answer one of world, sports, business, science.",
             formats=("Answer with one word: world, sports, business or science.",
                      "Reply with the topic word only, and no other words.")),
        Task("fr_en", "Translate: French phrase → English",
             "Translate the French phrase into English.", max_new_tokens=16,
             description="A short French phrase; answer its English translation.",
             formats=("Answer with the English translation only, no other words.",
                      "Reply with only the English phrase, without quotes or explanation.")),
        Task("headline", "Headline: news paragraph → short headline",
             "Write a short headline for the news paragraph.", metric="rouge_l", max_new_tokens=20,
             description="A 2–3 sentence news paragraph; answer a short headline (scored by ROUGE-L).",
             formats=("Answer with the headline only: under 10 words, no quotes.",
                      "Reply with one short headline and nothing else.")),
        Task("shout", "Shout: rewrite in UPPERCASE with '!'",
             "Repeat the sentence in capital letters, ending with an exclamation mark.",
             metric="exact_match_cased", max_new_tokens=40,
             description="An ordinary sentence; answer the same sentence in UPPERCASE ending with '!'.",
             formats=("Answer with the rewritten sentence only, in capital letters, ending with '!'.",
                      "Reply with nothing but the sentence in UPPERCASE followed by an exclamation mark.")),
        Task("capitals", "Capitals: country or state → capital city",
             "Name the capital city. Answer with the city only.", max_new_tokens=8,
             description="A country (or U.S. state, Canadian province, Australian state); answer its capital.",
             formats=("Reply with the name of the city alone, not a sentence.",
                      "Answer in one or two words: the capital's name.")),
    ]
}


def get_task(name: str) -> Task:
    """A built-in task with its train/validation/test splits loaded."""
    if name not in BUILTIN:
        raise PlaygroundError(f"Unknown task '{name}'. Built-in tasks: {', '.join(BUILTIN)}.")
    task = BUILTIN[name]
    if not task.splits:
        folder = DATA_DIR / name
        task.splits = {s: read_examples(folder / f"{s}.jsonl") for s in SPLITS if (folder / f"{s}.jsonl").exists()}
    return task


MAX_DATA_BYTES = 5 * 1024 * 1024  # a toy task fits in far less; bigger files are most likely a mistake
MAX_TEXT_CHARS = 2000  # per input, target and instruction: as long as a prompt in Attention and Switch
MAX_COLUMNS = 256  # a task needs two; thousands of columns are a mistake (or an attack on the parser)


# Files are parsed once, by Python's json and csv modules, not by datasets' loaders: those
# loaders re-type CSV values through pandas ("NA" or "" become missing, "007" becomes 7),
# rename a second column 'x' to 'x.1', keep the last of two equal JSON keys, and report
# errors without their line, so a faithful reading needed a full hand pass first anyway.
def read_table(path: str | Path, hint_cols: tuple[str, str] = ("input", "target")) -> list[dict]:
    """Read a JSONL or CSV file into rows: one dict per example, every row with the same keys in file order.

    CSV values stay the text they are. Raises PlaygroundError for a missing, too large, empty,
    non-UTF-8 or malformed file, naming its line and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise PlaygroundError(f"Data file '{path}' does not exist.")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise PlaygroundError(f"'{path.name}' is not a .jsonl or .csv file. Give JSON lines or a CSV with a header row.")
    size = path.stat().st_size
    if size > MAX_DATA_BYTES:
        raise PlaygroundError(f"'{path.name}' is {size / 2**20:.1f} MB; the limit for a task file is "
                              f"{MAX_DATA_BYTES // 2**20} MB. A few hundred examples are plenty: trim the file.")
    text = _decode(path.name, path.read_bytes())
    if not text.strip():
        raise PlaygroundError(f"'{path.name}' is empty. It needs one example per line with columns "
                              f"'{hint_cols[0]}' and '{hint_cols[1]}'.")
    return _csv_rows(path.name, text) if suffix == ".csv" else _jsonl_rows(path.name, text, hint_cols)


def _decode(name: str, data: bytes) -> str:
    """The file as text; bytes that aren't UTF-8 get a message with their line and the fix."""
    try:
        return data.decode("utf-8-sig")  # a byte-order mark (Excel's 'CSV UTF-8') is fine
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        utf16 = " It looks like UTF-16." if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise PlaygroundError(f"'{name}' is not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} is not "
                              f"valid UTF-8.{utf16} Save the file as UTF-8 (in a spreadsheet: 'CSV UTF-8').") from None


def _unique_keys(pairs: list) -> dict:
    row = dict(pairs)
    if len(row) < len(pairs):  # a plain dict would silently keep the last value
        raise KeyError(next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1))
    return row


def _jsonl_rows(name: str, text: str, hint_cols: tuple[str, str]) -> list[dict]:
    def bad(problem: str) -> PlaygroundError:
        return PlaygroundError(f"'{name}' is not valid JSON lines: {problem}. Each line must be an object like "
                               f"{{\"{hint_cols[0]}\": ..., \"{hint_cols[1]}\": ...}}.")

    if text.lstrip().startswith("["):
        raise bad("the file is one JSON array, not an object per line (convert it with `jq -c '.[]'`)")
    rows, columns = [], {}  # columns: a dict as an ordered set
    for i, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_unique_keys)
        except KeyError as exc:
            raise bad(f"line {i} is ambiguous: the key {exc.args[0]!r} appears twice") from None
        except RecursionError:
            raise bad(f"line {i} is nested too deeply") from None
        except ValueError as exc:  # a JSONDecodeError, or an integer of over 4,300 digits
            raise bad(f"line {i} is not valid JSON ({getattr(exc, 'msg', exc)})") from None
        if not isinstance(row, dict):
            raise bad(f"line {i} is a JSON {type(row).__name__}, not an object")
        columns.update(dict.fromkeys(row))
        if len(columns) > MAX_COLUMNS:
            raise bad(f"line {i} brings the number of different keys past {MAX_COLUMNS}")
        rows.append(row)
    if not columns:
        raise bad("its objects have no keys")
    return [{c: row.get(c) for c in columns} for row in rows]  # a missing key reads as None


def _csv_rows(name: str, text: str) -> list[dict]:
    csv.field_size_limit(2**31 - 1)  # the file cap bounds a field; the default 128 KB would hide the per-field message
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)  # strict: an unclosed quote is an error
    header, rows = None, []
    try:
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue  # a blank line
            if header is None:
                header = fields
                if len(header) > MAX_COLUMNS:
                    raise PlaygroundError(f"'{name}' has {len(header):,} columns in its header row; a task needs an "
                                          "input and a target column. Check that the first line is the header.")
                if dup := next((c for c, n in Counter(header).items() if n > 1), None):
                    raise PlaygroundError(f"'{name}' has the column {dup!r} {header.count(dup)} times in its header "
                                          "row. Give every column its own name.")
                header = [c or f"Unnamed: {i}" for i, c in enumerate(header)]  # as pandas names a blank one
            elif len(fields) > len(header):
                raise csv.Error(f"{len(fields)} fields but the header has {len(header)}")
            else:  # a short row: spreadsheets may leave off trailing empty cells
                rows.append(dict(zip(header, fields + [""] * (len(header) - len(fields)))))
    except csv.Error as exc:
        raise PlaygroundError(f"Could not read '{name}' as CSV: line {reader.line_num}: {exc}. It needs a header row, "
                              "the same number of fields on every line and a closing quote for every opening "
                              "one.") from None
    if not rows:
        raise PlaygroundError(f"'{name}' has a header row but no examples below it. Add one example per line.")
    return rows


def read_examples(path: str | Path, input_col: str = "input", target_col: str = "target") -> list[Example]:
    """Read a JSONL or CSV file and return its examples.

    Raises PlaygroundError for a missing, empty or malformed file, or missing columns.
    """
    return _examples(read_table(path, (input_col, target_col)), input_col, target_col, source=Path(path).name)


def _examples(rows, input_col: str, target_col: str, source: str) -> list[Example]:
    """Examples from rows (dicts, or a ``datasets.Dataset``), refusing missing columns, empty or huge fields."""
    if not rows:
        raise PlaygroundError(f"'{source}' has no examples.")
    cols = list(rows[0])
    missing = [c for c in (input_col, target_col) if c not in cols]
    if missing:
        raise PlaygroundError(f"'{source}' has no column {', '.join(repr(c) for c in missing)}; its columns are "
                              f"{', '.join(repr(c) for c in cols)}. Choose the input and target columns.")
    out = []
    for i, row in enumerate(rows):
        x, y = row[input_col], row[target_col]
        if x is None or y is None or not str(x).strip() or not str(y).strip():
            raise PlaygroundError(f"'{source}' row {i + 1} has an empty '{input_col}' or '{target_col}'. "
                                  "Every example needs both.")
        for col, v in ((input_col, x), (target_col, y)):
            if len(str(v)) > MAX_TEXT_CHARS:  # training would run the model on all of it, at once
                raise PlaygroundError(f"'{source}' row {i + 1} has a {len(str(v)):,}-character '{col}'; the limit "
                                      f"is {MAX_TEXT_CHARS:,}. Shorten that example or drop it.")
        out.append(Example(str(x).strip(), str(y).strip()))
    return out


def fit_examples(examples: list[Example], tokenizer, max_tokens: int) -> tuple[list[Example], int]:
    """Cut every example to at most ``max_tokens`` tokens of input and target text together.

    The input is cut first (from its end), so the answer the prefix learns survives whole; a
    target that alone is too long is cut too, leaving one input token. Returns (examples, how
    many were cut). Example at max_tokens=4: input "1 2 3 4 5", target "6" -> "1 2 3", "6".
    """
    def ids(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    xs, ys = ids([e.input for e in examples]), ids([e.target for e in examples])
    out, cut = [], 0
    for e, x, y in zip(examples, xs, ys):
        if len(x) + len(y) <= max_tokens:
            out.append(e)
            continue
        cut += 1
        keep_y = min(len(y), max(1, max_tokens - 1))
        keep_x = max(1, max_tokens - keep_y)
        x_text = tokenizer.decode(x[:keep_x]).strip() or e.input[:1]
        y_text = tokenizer.decode(y[:keep_y]).strip() or e.target[:1]
        out.append(Example(x_text, y_text))
    return out, cut


def split_examples(examples: list[Example], test_fraction: float = 0.2, seed: int = 0) -> dict[str, list[Example]]:
    """Split into train and test (through datasets' train_test_split) when the data gives no split."""
    import datasets

    if len(examples) < 4:
        raise PlaygroundError(f"Only {len(examples)} examples: at least 4 are needed to split into train and test.")
    ds = datasets.Dataset.from_list([{"input": e.input, "target": e.target} for e in examples])
    parts = ds.train_test_split(test_size=test_fraction, seed=seed)
    return {s: [Example(r["input"], r["target"]) for r in parts[s]] for s in ("train", "test")}


def user_task(
    source: str | Path,
    input_col: str = "input",
    target_col: str = "target",
    instruction: str = "Answer with the target for this input.",
    metric: str = "exact_match",
    test_source: str | Path | None = None,
    name: str = "custom",
    max_new_tokens: int = 24,
    tokenizer=None,
    max_example_tokens: int | None = None,
) -> Task:
    """A task from a user's JSONL/CSV file (or, online, a Hub dataset name). Splits 80/20 when no test is given.

    With a ``tokenizer`` and ``max_example_tokens``, longer examples are cut to fit (``fit_examples``);
    the task's ``truncated`` counts them.
    """
    if not isinstance(metric, str) or metric not in METRICS:
        raise PlaygroundError(f"Unknown metric '{metric}'. Choose one of: {', '.join(METRICS)}.")
    if len(instruction) > MAX_TEXT_CHARS:  # it is the baseline's system prompt and the prefix's init text
        raise PlaygroundError(f"The instruction has {len(instruction):,} characters; the limit is "
                              f"{MAX_TEXT_CHARS:,}. A sentence or two is enough: shorten it.")
    if Path(source).suffix.lower() in (".jsonl", ".json", ".csv") or Path(source).exists():
        examples = read_examples(source, input_col, target_col)
        if test_source:
            splits = {"train": examples, "test": read_examples(test_source, input_col, target_col)}
        else:
            splits = split_examples(examples)
    else:
        splits = _hub_splits(str(source), input_col, target_col)
    truncated = 0
    if tokenizer is not None and max_example_tokens:
        for s, examples in splits.items():
            splits[s], n = fit_examples(examples, tokenizer, max_example_tokens)
            truncated += n
    return Task(name=name, title=f"Your data: {Path(str(source)).name}", instruction=instruction, metric=metric,
                max_new_tokens=max_new_tokens, splits=splits, truncated=truncated)


def _hub_splits(name: str, input_col: str, target_col: str) -> dict[str, list[Example]]:
    import datasets

    from .models import hub_reachable

    if not hub_reachable():
        raise PlaygroundError(f"'{name}' is not a local file, and the Hugging Face Hub can't be reached to load it "
                              "as a dataset (offline). Give a .jsonl or .csv file instead.")
    try:
        dd = datasets.load_dataset(name)
    except Exception as exc:
        raise PlaygroundError(f"Could not load the Hub dataset '{name}': {str(exc).splitlines()[0]}") from None
    splits = {s: _examples(dd[s], input_col, target_col, f"{name}[{s}]") for s in dd}
    if "train" not in splits:
        raise PlaygroundError(f"The Hub dataset '{name}' has no 'train' split (it has {', '.join(splits)}).")
    if "test" not in splits:
        splits.update(split_examples(splits["train"]))
    return splits

