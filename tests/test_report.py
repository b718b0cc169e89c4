"""The HTML report: self-contained, escaped, and it renders in a real browser with its images loaded."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from distil.evaluate import cascade_curve, confusion_matrix, per_class_scores, reliability_bins

pytest.importorskip("matplotlib")

from distil.report import render_report, write_report

LABELS = [f"intent_{i:02d}" for i in range(40)]
NASTY = "<script>alert('x')</script> & \"quotes\" <b>bold</b>"


def _metrics(gold: bool = True) -> dict[str, Any]:
    """A metrics dict built from the real metric functions on synthetic predictions (40 classes)."""
    rng = np.random.default_rng(0)
    n, k = 600, len(LABELS)
    teacher = rng.integers(0, k, n)
    student = np.where(rng.random(n) < 0.9, teacher, rng.integers(0, k, n))
    conf = np.clip(rng.beta(5, 1.5, n), 0.05, 1.0)
    ref = teacher
    pcs = per_class_scores(ref, student, k)
    cm = confusion_matrix(ref, student, k)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    top = [
        {"reference": LABELS[i // k], "predicted": LABELS[i % k], "count": int(off.flat[i])}
        for i in np.argsort(-off, axis=None)[:10]
    ]
    agreement = float((student == teacher).mean())
    ladder = [
        {"name": "ngram", "chosen": True, "soft": True, "agreement": agreement,
         "accuracy": 0.85 if gold else None,
         "macro_f1": 0.84 if gold else None, "ece": 0.04, "ms_per_pred": 0.08, "preds_per_s": 40000,
         "size_mb": 2.1, "cost_per_1m": 0.0009},
        {"name": "static", "chosen": False, "soft": True, "agreement": agreement + 0.02,
         "accuracy": 0.87 if gold else None, "macro_f1": 0.86 if gold else None, "ece": 0.03,
         "ms_per_pred": 0.3,
         "preds_per_s": 9000, "size_mb": 15.0, "cost_per_1m": 0.004},
    ]
    return {
        "schema_version": 1,
        "task": "bank <40>",
        "n_test": n,
        "dataset_fingerprint": "abc123",
        "test_file": "test.csv",
        "reference": "gold" if gold else "teacher",
        "teacher": {"kind": "openai", "describe": "openai:gpt-4o-mini", "accuracy": 0.88 if gold else None,
                    "macro_f1": 0.87 if gold else None, "ms_per_pred": 420.0, "preds_per_s": None,
                    "size_mb": None, "cost_per_1m": 31.8, "ece": 0.05 if gold else None,
                    "price": {"in_per_1m": 0.15, "out_per_1m": 0.6, "source": "https://openai.com/api/pricing",
                              "read_on": "2025-06-01"}},
        "student": dict(ladder[0]),
        "ladder": ladder,
        "agreement": agreement,
        "retention": 0.85 / 0.88 if gold else agreement,
        "retention_definition": "student accuracy / teacher accuracy (gold labels)" if gold else "agreement",
        "speedup": 420.0 / 0.08,
        "cost_ratio": 31.8 / 0.0009,
        "ece": 0.04,
        "reliability": {"n_bins": 15, "reference": "gold" if gold else "teacher",
                        "student": reliability_bins(conf, student == teacher), "teacher": None},
        "cascade": cascade_curve(conf, student, teacher, teacher if gold else None,
                                 student_cost_per_1m=0.0009, teacher_cost_per_1m=31.8),
        "per_class": [
            {"label": LABELS[j], "support": int(pcs["support"][j]), "precision": float(pcs["precision"][j]),
             "recall": float(pcs["recall"][j]), "f1": float(pcs["f1"][j]), "teacher_f1": None}
            for j in range(k)
        ],
        "confusion": {"rows": "gold" if gold else "teacher", "columns": "student", "labels": LABELS,
                      "matrix": cm.tolist(), "top_confused": top},
        "ci": {"agreement": [agreement - 0.02, agreement + 0.02], "retention": [0.93, 0.99]},
        "ci_method": {"kind": "percentile bootstrap", "resamples": 1000, "seed": 0},
        "target": {"min_retention": 0.95, "met": True},
        "verdict": f"The ngram student keeps 96.6% of the teacher's accuracy at 1/35,000 of its cost {NASTY}",
        "warnings": ["3 classes have fewer than 5 test examples: per-class F1 is noisy", NASTY],
    }


DISAGREEMENTS = [
    {"row": 7, "text": NASTY, "teacher": "intent_01", "teacher_conf": 0.9, "student": "intent_02",
     "student_conf": 0.8, "gold": "intent_01"},
    {"row": 9, "text": "my card was eaten by the ATM", "teacher": "intent_03", "teacher_conf": 0.7,
     "student": "intent_04", "student_conf": 0.6, "gold": None},
]


def test_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    out = write_report(_metrics(), tmp_path / "r" / "report.html", disagreements=DISAGREEMENTS)
    page = out.read_text(encoding="utf-8")
    # No script, stylesheet or image is fetched from anywhere: every src is an inline data: URI.
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "@import" not in page and "url(" not in page
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    # Every text from the data is escaped (verdict, warnings, task name, disagreement texts).
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert "bank &lt;40&gt;" in page and "<b>bold</b>" not in page
    # The verdict leads the page.
    assert page.index('id="verdict"') < page.index("<h2")
    # Many classes: the heatmap is cut to the most confused 30 and says so; the pairs table is there.
    assert "The 30 classes most involved in confusions, of 40." in page
    assert "student said" in page


def test_report_without_gold_or_costs_still_renders() -> None:
    m = _metrics(gold=False)
    for member in m["ladder"]:
        member["cost_per_1m"] = None
    m["teacher"]["cost_per_1m"] = None
    m["cascade"] = []
    m["cost_ratio"] = None
    page = render_report(m, disagreements=[])
    assert "student accuracy" not in page  # no gold: no gold tiles
    assert "not enough data to draw" in page  # the cascade plot is replaced by a note
    assert "agrees with the teacher on every test text" in page
    assert page.count("<img") == 3  # ladder plot falls back to ms/prediction; reliability; confusion


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

_CHECK = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var m = document.createElement('div');
  m.id = 'distil-check';
  m.textContent = 'IMAGES ' + ok + '/' + imgs.length + ' WIDTH ' + document.body.scrollWidth;
  document.body.appendChild(m);
});
</script>
"""


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (CI installs it: apt-get install -y chromium)")
    report = write_report(_metrics(), tmp_path / "report.html", disagreements=DISAGREEMENTS)
    # The check script goes into a copy: the report itself carries no script.
    probe = tmp_path / "probe.html"
    page = report.read_text(encoding="utf-8")
    probe.write_text(page.replace("</body>", _CHECK + "</body>"), encoding="utf-8")
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [browser, *_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom",
         probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    found = re.search(r"IMAGES (\d+)/(\d+) WIDTH (\d+)", dom.stdout)
    assert found, f"no marker in the DOM; chromium said: {dom.stderr[-2000:]}"
    ok, total, width = (int(x) for x in found.groups())
    assert total == 4 and ok == total
    assert width <= 1200  # nothing overflows the window horizontally
    shot = tmp_path / "report.png"
    subprocess.run(
        [browser, *_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,2000",
         report.as_uri()],
        capture_output=True, timeout=120,
    )
    import matplotlib.image as mpimg

    pixels = mpimg.imread(str(shot))
    assert pixels.shape[0] == 2000 and pixels.shape[1] == 1200
    # Not blank: many distinct colours and a real spread of brightness.
    assert float(pixels[..., :3].std()) > 0.05
    assert len(np.unique(pixels[::7, ::7, :3].reshape(-1, 3), axis=0)) > 50


def test_the_report_shows_the_served_system_next_to_the_curve() -> None:
    m = _metrics()
    m["served"] = {"threshold": 0.62, "target_agreement": 0.95, "ood_guard": True, "n": 400, "coverage": 0.731,
                   "ood_share": 0.012, "agreement": 0.981, "local_agreement": 0.968,
                   "local_agreement_ci": [0.948, 0.982], "accuracy": 0.9, "cost_per_1m": 6.9,
                   "teacher_cost_per_1m": 25.5}
    page = render_report(m, disagreements=[])
    served = page[page.index("The served system"):]
    assert served.index("The served system") < served.index("Calibration")
    assert "73.1%" in served and "26.9%" in served and "1.2%" in served  # student, teacher, flagged
    assert "96.8% (95% CI 94.8%–98.2%)" in served and "$6.90 / $25.50" in served
    m["served"]["rungs"] = [{"member": "ngram", "answered": 0.52, "reached": 1.0},
                            {"member": "static", "answered": 0.211, "reached": 0.48}]
    served = render_report(m, disagreements=[])
    assert "… by the ngram rung (it ran on 100.0%)" in served and "… by the static rung (it ran on 48.0%)" in served
    assert "21.1%" in served
    m["served"]["off_topic"] = {"source": "/data/off.csv", "n": 153, "answered_locally": 0.634,
                                "answered_locally_ci": [0.55, 0.71], "flagged": 0.32}
    assert "off-topic texts answered by the student alone (153 from off.csv)" in render_report(m, disagreements=[])
    m.pop("served")
    assert "The served system was not measured" in render_report(m, disagreements=[])
