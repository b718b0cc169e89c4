"""evaluate(): what the student kept of the teacher, and what it saves — measured, with intervals.

On one test file, in one run on one machine, this measures the teacher and every
student stored in an artifact (the chosen one leads):

* quality — agreement with the teacher; with gold labels also accuracy, macro-F1,
  per-class F1, the confusion matrix and retention (student accuracy ÷ teacher
  accuracy).  Without gold labels retention *is* agreement, and the JSON says so.
  Every headline figure gets a 95% percentile-bootstrap interval (seeded,
  vectorised; the teacher and the student are resampled together);
* calibration — expected calibration error (15 equal-width confidence bins) and the
  reliability-diagram data;
* cost — wall ms per prediction at batch 1 (median of single calls), throughput at
  batch 256, CPU core-seconds per prediction, peak memory, model size and dollars per
  1M predictions (tokens × price for hosted teachers, CPU time × $/core-hour for
  everything run locally), and the speedup;
* the cascade curve — for each confidence threshold, the share the student answers
  alone and the combined system's agreement and accuracy (the teacher answers the rest).

The teacher's answers come through the journal (:func:`distil.label.label`): a test
text already answered is never asked again.  The result is a plain dict (see
``docs/metrics.md``) written to ``out/metrics.json`` with the HTML report beside it.

The package, by step:

* :mod:`~distil.evaluate.core` — :func:`evaluate` itself, a list of named steps;
* :mod:`~distil.evaluate.testset` — reading the test file;
* :mod:`~distil.evaluate.resolve` — the task, the label order, the training overlap;
* :mod:`~distil.evaluate.teacher` — the teacher's answers and cost;
* :mod:`~distil.evaluate.members` — every ladder member answered and timed;
* :mod:`~distil.evaluate.metrics`, :mod:`~distil.evaluate.scoring` — the quality figures;
* :mod:`~distil.evaluate.intervals` — the bootstrap intervals;
* :mod:`~distil.evaluate.timing` — latency, throughput and memory;
* :mod:`~distil.evaluate.curve` — the cascade curve and the served system;
* :mod:`~distil.evaluate.decision` — the target decision and the verdict's wording;
* :mod:`~distil.evaluate.schema` — the metrics.json records and the one function that writes them out.
"""

from __future__ import annotations

from distil.data import gold_text as gold_text
from distil.evaluate.core import MIN_PER_CLASS as MIN_PER_CLASS
from distil.evaluate.core import evaluate
from distil.evaluate.curve import cascade_curve
from distil.evaluate.decision import _target_decision as _target_decision
from distil.evaluate.decision import served_line as served_line
from distil.evaluate.decision import verdict
from distil.evaluate.intervals import StatFn as StatFn
from distil.evaluate.intervals import bootstrap
from distil.evaluate.intervals import resampled_accuracy as resampled_accuracy
from distil.evaluate.intervals import resampled_ece as resampled_ece
from distil.evaluate.intervals import resampled_macro_f1 as resampled_macro_f1
from distil.evaluate.metrics import N_BINS as N_BINS
from distil.evaluate.metrics import (
    accuracy,
    confusion_matrix,
    expected_calibration_error,
    macro_f1,
    per_class_scores,
    reliability_bins,
)
from distil.evaluate.schema import SCHEMA_VERSION, write_metrics
from distil.evaluate.testset import _read_test as _read_test
from distil.evaluate.testset import _TestSet as _TestSet
from distil.evaluate.timing import Timing, time_predictor

__all__ = [
    "SCHEMA_VERSION",
    "Timing",
    "accuracy",
    "bootstrap",
    "cascade_curve",
    "confusion_matrix",
    "evaluate",
    "expected_calibration_error",
    "macro_f1",
    "per_class_scores",
    "reliability_bins",
    "time_predictor",
    "verdict",
    "write_metrics",
]
