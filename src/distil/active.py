"""Active labeling: reach the same student with a fraction of the teacher calls.

Rounds, each one journaled::

    held-out  a small random sample the teacher labels once, to measure agreement honestly
    seed      typical inputs: k-means on embeddings, the input nearest each centre
              (static embeddings when available, else hashed n-grams randomly projected)
    repeat    train a cheap student on what the teacher answered
              → score the unlabeled pool by the student's margin (top-1 − top-2 probability)
              → take the least sure inputs, every predicted class in turn (optionally kept
                diverse by k-center within a larger candidate pool)
              → ask the teacher (through label(), so the journal dedupes and resumes)
    until     the call budget is spent, or held-out agreement stopped improving

Rounds are small (5% of the budget by default): the student re-ranks the pool after every
round, so each round's picks reflect what the teacher already taught it.

Every selection is a deterministic function of the seed and of what the journal already holds,
so a killed run, started again, recomputes the same rounds, finds their answers in the journal
(zero calls) and carries on where it stopped.  The pool's other inputs get no labels at all:
nothing is self-trained on the student's own guesses.  ``strategy="random"`` runs the same
loop with random picks (the baseline).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distil.data import LabeledSet
from distil.errors import ConfigError, DataError
from distil.journal import Journal
from distil.label import LabelResult, LabelStats, label
from distil.task import Task
from distil.teachers.base import Teacher
from distil.workspace import Workspace

log = logging.getLogger(__name__)

STRATEGIES = ("random", "active")


@dataclass
class Round:
    """What one round did: how many inputs it sent, and the student's held-out agreement after it."""

    round: int
    kind: str  # heldout | seed | uncertain | random
    asked: int
    labeled_total: int
    calls_total: int
    agreement: float | None = None
    stability: float | None = None  # share of a fixed pool sample whose predicted label did not change

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dict(self.__dict__)


@dataclass
class ActiveResult(LabelResult):
    """A :class:`LabelResult` plus the rounds, the strategy and the held-out texts."""

    rounds: list[Round] = field(default_factory=list)
    strategy: str = "active"
    heldout: list[str] = field(default_factory=list)


def cheap_embed(texts: Sequence[str], *, dim: int = 64, bits: int = 16, seed: int = 0) -> np.ndarray:
    """Unit vectors from hashed word and character n-grams through a fixed random projection.

    A random Gaussian table keeps cosine similarity of the n-gram bags (Johnson-Lindenstrauss), costs
    no training and no model download, and runs in numpy alone.
    """
    from distil.students.ngram import _mean_rows, hash_features

    buckets, indptr = hash_features(texts, bits=bits)
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((1 << bits, dim), dtype=np.float32)
    emb = _mean_rows(table, buckets, indptr)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return np.asarray(emb / np.maximum(norms, 1e-8), dtype=np.float32)


def k_center(emb: np.ndarray, k: int, *, exclude: np.ndarray | None = None, seed: int = 0) -> list[int]:
    """Greedy k-center (farthest-first traversal) on unit vectors: ``k`` diverse row indices.

    Starts from the rows in ``exclude`` (already labeled) when given, else from a seeded random row.
    """
    n = len(emb)
    k = min(k, n)
    if k <= 0:
        return []
    dist = np.full(n, np.inf, dtype=np.float32)
    chosen: list[int] = []
    if exclude is not None and len(exclude):
        for start in range(0, len(exclude), 2048):
            sims = emb @ emb[exclude[start : start + 2048]].T
            dist = np.minimum(dist, (1.0 - sims).min(axis=1))
    else:
        first = int(np.random.default_rng(seed).integers(n))
        chosen.append(first)
        dist = np.minimum(dist, 1.0 - emb @ emb[first])
    while len(chosen) < k:
        nxt = int(np.argmax(dist))
        if not np.isfinite(dist[nxt]) or dist[nxt] <= -1.0:
            break
        chosen.append(nxt)
        dist = np.minimum(dist, 1.0 - emb @ emb[nxt])
        dist[nxt] = -2.0
    for c in chosen:
        dist[c] = -2.0
    return chosen


def typical_seed(emb: np.ndarray, k: int, *, seed: int = 0) -> list[int]:
    """``k`` typical, spread-out rows: k-means on the unit vectors, then the row nearest each centre.

    Unlike farthest-first traversal, which starts from outliers, the rows nearest the k-means
    centres stand for dense regions of the pool: the better start when the first answers must
    teach the student the common cases.  Duplicate picks are topped up by k-center.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    n = len(emb)
    k = min(k, n)
    if k <= 0:
        return []
    if k == n:
        return list(range(n))
    x = np.asarray(emb, dtype=np.float32)
    if n * k > 20_000_000:
        km: Any = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=1, batch_size=4096)
    else:
        km = KMeans(n_clusters=k, random_state=seed, n_init=1, max_iter=50)
    centres = km.fit(x).cluster_centers_.astype(np.float32)
    chosen: list[int] = []
    seen: set[int] = set()
    for start in range(0, k, 1024):
        c = centres[start : start + 1024]
        # nearest row to each centre, by squared Euclidean distance
        d = (x * x).sum(axis=1)[None, :] - 2.0 * (c @ x.T)
        for i in np.argmin(d, axis=1).tolist():
            if i not in seen:
                seen.add(i)
                chosen.append(int(i))
    if len(chosen) < k:
        unit = _unit(x)
        more = k_center(unit, k, exclude=np.array(chosen, dtype=np.int64), seed=seed)
        chosen.extend(i for i in more if i not in seen)
    return chosen[:k]


def margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row (small = unsure)."""
    part = np.sort(probs, axis=1)
    return np.asarray(part[:, -1] - part[:, -2], dtype=np.float32)


def balanced_order(probs: np.ndarray) -> np.ndarray:
    """Row order for asking: least sure first, taken in turn from every predicted class.

    Rows are grouped by the student's predicted class and sorted by margin inside each group;
    the order takes the least-sure row of every class, then the second of every class, and so
    on (classes whose least-sure row is less sure come first in each turn).  Pure margin spends
    whole rounds on the two or three classes the student confuses most; taking turns keeps
    every class's boundary in each round, which reached the whole-pool student with fewer
    calls in benchmarks/bench_active.py.
    """
    m = margin(probs)
    pred = np.asarray(probs).argmax(axis=1)
    by_class = np.lexsort((m, pred))  # grouped by class, least sure first within a class
    rank = np.empty(len(m), dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, pred[by_class][1:] != pred[by_class][:-1]])
    sizes = np.diff(np.r_[starts, len(m)])
    rank[by_class] = np.arange(len(m)) - np.repeat(starts, sizes)
    class_first = np.full(probs.shape[1], np.inf, dtype=np.float64)
    np.minimum.at(class_first, pred, m.astype(np.float64))
    return np.asarray(np.lexsort((m, class_first[pred], rank)), dtype=np.int64)


SELECTIONS = ("balanced", "margin")


class QuickStudent:
    """The round-to-round student: TF-IDF word + char n-grams and a logistic regression.

    It trains in about a second, so every round can retrain it; it only ranks inputs by
    uncertainty and measures held-out agreement.  The students worth shipping come from
    ``distil train`` on the final labeled set.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, texts: Sequence[str], probs: np.ndarray, *, labels: Sequence[str]) -> QuickStudent:
        """Fit on the teacher's argmax (soft labels matter less for ranking)."""
        from scipy.sparse import hstack
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.k_ = len(labels)
        self.word_ = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
        self.char_ = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=1, sublinear_tf=True)
        x = hstack([self.word_.fit_transform(texts), self.char_.fit_transform(texts)]).tocsr()
        y = np.asarray(probs).argmax(axis=1)
        self.classes_ = np.unique(y)
        if len(self.classes_) == 1:
            self.clf_ = None
            return self
        self.clf_ = LogisticRegression(C=10.0, max_iter=300, random_state=self.seed).fit(x, y)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities over all k labels (classes never seen get 0)."""
        from scipy.sparse import hstack

        out = np.zeros((len(texts), self.k_), dtype=np.float32)
        if self.clf_ is None:
            out[:, self.classes_[0]] = 1.0
            return out
        x = hstack([self.word_.transform(texts), self.char_.transform(texts)]).tocsr()
        out[:, self.classes_] = self.clf_.predict_proba(x)
        return out


class LinearProbe:
    """Soft-label softmax regression on fixed features (e.g. static embeddings), trained with L-BFGS.

    ``featurize(texts) -> (n, d)`` supplies the features (standardise them once, outside).  It fits
    the teacher's full probability vectors (cross-entropy to soft targets, L2 penalty ``lam``), so
    every teacher answer carries its whole distribution, not just its argmax; an embedding student
    trained this way reaches its whole-pool agreement with far fewer answers than an n-gram one.
    """

    def __init__(self, featurize: Callable[[Sequence[str]], np.ndarray], *, lam: float = 1e-3,
                 max_iter: int = 200, seed: int = 0) -> None:
        self.featurize = featurize
        self.lam = lam
        self.max_iter = max_iter
        self.seed = seed

    def fit(self, texts: Sequence[str], probs: np.ndarray, *, labels: Sequence[str]) -> LinearProbe:
        """Minimise mean cross-entropy to ``probs`` plus ``lam/2·|W|²`` (bias unpenalised)."""
        from scipy.optimize import minimize

        x = np.asarray(self.featurize(texts), dtype=np.float64)
        p = np.asarray(probs, dtype=np.float64)
        n, d = x.shape
        k = len(labels)
        if p.shape != (n, k):
            raise DataError(f"LinearProbe.fit: probs shape {p.shape}, expected {(n, k)}")
        x1 = np.hstack([x, np.ones((n, 1))])
        lam = self.lam

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            wm = w.reshape(d + 1, k)
            z = x1 @ wm
            z -= z.max(axis=1, keepdims=True)
            lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
            logq = z - lse
            g = x1.T @ (np.exp(logq) - p) / n
            g[:-1] += lam * wm[:-1]
            val = -float((p * logq).sum()) / n + 0.5 * lam * float((wm[:-1] ** 2).sum())
            return val, g.ravel()

        res = minimize(loss, np.zeros((d + 1) * k), jac=True, method="L-BFGS-B",
                       options={"maxiter": self.max_iter})
        self.w_ = res.x.reshape(d + 1, k).astype(np.float32)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Softmax of the linear logits, (n, k)."""
        x = np.asarray(self.featurize(texts), dtype=np.float32)
        z = x @ self.w_[:-1] + self.w_[-1]
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float32)


class StaticFeatures:
    """Static (model2vec) text vectors for a fixed set of texts, computed once, looked up by text.

    ``unit`` gives the normalised vectors (k-means, k-center); ``standardised`` gives them centred
    and scaled per dimension over the whole set (the input of :class:`LinearProbe`).  The base is
    the static student's own (distilled once from all-MiniLM-L6-v2 and cached), so the round
    student ranks inputs in the same space the shipped static student will see.
    """

    def __init__(self, texts: Sequence[str], base: str = "all-MiniLM-L6-v2", pca_dims: int = 256) -> None:
        from distil.students.static import StaticStudent, static_base_path

        st = StaticStudent(base=base, pca_dims=pca_dims)
        st._load_base(static_base_path(base, pca_dims))
        uniq = list(dict.fromkeys(texts))
        self.raw: np.ndarray = st.features(uniq)
        self.row = {t: i for i, t in enumerate(uniq)}
        self.mu = self.raw.mean(axis=0)
        self.sd = self.raw.std(axis=0) + 1e-6
        self.std: np.ndarray = (self.raw - self.mu) / self.sd

    def unit(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, (n, d)."""
        return self.raw[[self.row[t] for t in texts]]

    def standardised(self, texts: Sequence[str]) -> np.ndarray:
        """Standardised vectors, (n, d)."""
        return self.std[[self.row[t] for t in texts]]


ROUND_STUDENTS = ("auto", "static", "ngram")


def round_student(
    kind: str, pool: Sequence[str]
) -> tuple[str, Callable[[int], Any], Callable[[Sequence[str]], np.ndarray] | None]:
    """``(name, make_student, embed)`` for the round-to-round student.

    ``static``: static embeddings + :class:`LinearProbe` on the teacher's soft labels, with the
    same embeddings for the seed and diversity (needs the static base: cached, or the ``train``
    extra to distil it once).  ``ngram``: :class:`QuickStudent` with hashed n-gram embeddings.
    ``auto``: static when its base can be had, else ngram.
    """
    from distil.errors import MissingExtra

    if kind not in ROUND_STUDENTS:
        raise ConfigError(f"unknown round student {kind!r}", hint=f"choose one of {', '.join(ROUND_STUDENTS)}")
    if kind in ("auto", "static"):
        try:
            feats = StaticFeatures(pool)
        except (MissingExtra, ImportError):
            if kind == "static":
                raise
            log.info("static embeddings unavailable; the round student is TF-IDF n-grams")
        else:
            return "static", lambda seed: LinearProbe(feats.standardised, seed=seed), feats.unit
    return "ngram", _default_student, None


def _default_student(seed: int) -> Any:
    return QuickStudent(seed)


@dataclass(frozen=True)
class ActiveSettings:
    """How :func:`label_active` plans its rounds (its keyword arguments of the same names).

    Sizes left at ``None`` (or 0) follow the pool, the budget and the number of labels (:meth:`sizes`).
    """

    strategy: str = "active"
    seed: int = 0
    heldout_size: int | None = None
    seed_size: int | None = None
    round_size: int | None = None
    patience: int = 3
    min_gain: float = 0.002
    stable_at: float = 0.99
    candidates: float = 1.0
    seed_method: str = "kmeans"
    select: str = "balanced"

    def check(self) -> None:
        """Raise :class:`ConfigError` for an unknown seed method, selection or strategy."""
        if self.seed_method not in ("kmeans", "kcenter"):
            raise ConfigError(f"unknown seed method {self.seed_method!r}", hint="choose kmeans or kcenter")
        if self.select not in SELECTIONS:
            raise ConfigError(f"unknown selection {self.select!r}", hint=f"choose one of {', '.join(SELECTIONS)}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}",
                              hint=f"choose one of {', '.join(STRATEGIES)}, or all")

    def sizes(self, n: int, budget: int, k: int) -> tuple[int, int, int]:
        """``(held-out, seed round, later rounds)`` sizes for a pool of ``n``, ``budget`` calls, ``k`` labels."""
        return (
            self.heldout_size or int(min(max(0.1 * budget, 2 * k), 500, n // 5)),
            self.seed_size or int(min(max(2 * k, 0.1 * budget), budget)),
            self.round_size or int(max(10, 0.05 * budget)),
        )


def label_active(
    task: Task,
    texts: Sequence[str],
    *,
    strategy: str = "active",
    teacher: Teacher | None = None,
    journal: Journal | None = None,
    max_calls: int | None = None,
    max_cost: float | None = None,
    progress: Callable[[LabelStats], None] | None = None,
    confirm: Callable[[LabelStats], bool] | None = None,
    seed: int = 0,
    heldout_size: int | None = None,
    seed_size: int | None = None,
    round_size: int | None = None,
    patience: int = 3,
    min_gain: float = 0.002,
    stable_at: float = 0.99,
    make_student: Callable[[int], Any] | None = None,
    round_model: str = "ngram",
    on_round: Callable[[Round, dict[str, np.ndarray]], None] | None = None,
    embed: Callable[[Sequence[str]], np.ndarray] | None = None,
    candidates: float = 1.0,
    seed_method: str = "kmeans",
    select: str = "balanced",
) -> ActiveResult:
    """Label a pool in rounds (``active``: least-sure and diverse first; ``random``: the baseline).

    Stops when ``max_calls`` is spent, or when held-out agreement has not improved by ``min_gain``
    for ``patience`` rounds *and* the round student's predictions have settled: at least
    ``stable_at`` of a fixed sample of the pool (up to 2,000 inputs) kept their predicted label
    since the previous round.  The second condition costs no teacher calls and keeps a small,
    noisy held-out sample from stopping the run while the student is still changing.
    Returns the teacher's answers only (held-out included, marked in ``heldout``); the labeled set's
    ``info`` holds the strategy, every round's numbers and the round student's name.
    The round student is ``make_student(seed)`` when given, else :func:`round_student`
    (``round_model``: ``auto``, ``static`` or ``ngram``), built only once the plan is confirmed.
    ``on_round(round, answers)`` is called after every round with all teacher answers so far.
    ``embed(texts) -> unit vectors`` gives the space the seed and the within-round diversity are
    measured in (default :func:`cheap_embed`).  ``select`` orders the unlabeled inputs each round:
    ``balanced`` (default; least sure first, classes taking turns, :func:`balanced_order`) or
    ``margin`` (least sure first); ``candidates > 1`` then keeps ``size`` inputs out of the first
    ``candidates × size`` by k-center diversity (``1``, the default, takes them in order, which did
    best in benchmarks/bench_active.py).  ``seed_method``: ``kmeans`` (typical inputs,
    :func:`typical_seed`) or ``kcenter`` (farthest-first, :func:`k_center`).  The round settings are
    checked and kept together as :class:`ActiveSettings`.
    """
    settings = ActiveSettings(
        strategy=strategy, seed=seed, heldout_size=heldout_size, seed_size=seed_size, round_size=round_size,
        patience=patience, min_gain=min_gain, stable_at=stable_at, candidates=candidates,
        seed_method=seed_method, select=select,
    )
    settings.check()
    pool = list(dict.fromkeys(texts))
    if len(pool) < 20:
        raise DataError(f"active labeling needs a pool of at least 20 unique texts, found {len(pool)}",
                        hint="use --strategy all for small pools")
    budget = len(pool) if max_calls is None else min(max_calls, len(pool))
    with Workspace(task, teacher=teacher, journal=journal) as ws:  # closes only what it built
        run = _ActiveRun(task, pool, settings, teacher=ws.teacher, journal=ws.journal, budget=budget,
                         max_cost=max_cost, progress=progress)
        if confirm is not None:
            run.confirm(confirm)
        run.choose_student(make_student, round_model, embed)
        run.ask_heldout()
        run.ask_rounds(on_round)
        return run.result()


class _ActiveRun:
    """One :func:`label_active` call: the pool, what was asked, what the teacher answered, the rounds.

    Every random draw comes from one generator seeded by ``settings.seed``, in a fixed order
    (held-out sample, stopping sample, then random picks), so a rerun repeats the same rounds.
    """

    def __init__(
        self, task: Task, pool: list[str], settings: ActiveSettings, *, teacher: Teacher, journal: Journal,
        budget: int, max_cost: float | None, progress: Callable[[LabelStats], None] | None,
    ) -> None:
        self.task, self.pool, self.settings = task, pool, settings
        self.teacher, self.journal = teacher, journal
        self.budget, self.max_cost, self.progress = budget, max_cost, progress
        self.k = len(task.label_names)
        self.heldout_size, self.seed_size, self.round_size = settings.sizes(len(pool), budget, self.k)
        self.index = {t: i for i, t in enumerate(pool)}
        self.rng = np.random.default_rng(settings.seed)
        self.total = LabelStats(total=len(pool))
        self.rounds: list[Round] = []
        self.answered: dict[str, np.ndarray] = {}
        self.asked: set[str] = set()
        self.declined = False
        self.round_name = "custom"
        self.make: Callable[[int], Any] = _default_student
        self.emb = np.zeros((len(pool), 1), dtype=np.float32)
        self.heldout: set[str] = set()
        self.ho_texts: list[str] = []
        self.ho_probs = np.zeros((0, self.k), dtype=np.float32)
        self.best, self.stale = -1.0, 0  # best held-out agreement so far; rounds since it improved
        self.last_pred: np.ndarray | None = None  # the stopping sample's predictions after last round
        self.fitted: tuple[int, Any] | None = None  # (size of the training set, student) from last round

    @property
    def used(self) -> int:
        """Teacher answers so far, paid for or from the journal: what the budget counts."""
        return self.total.calls + self.total.from_journal

    def train_texts(self) -> list[str]:
        """The answered texts the round student learns from (the held-out sample kept out)."""
        return [t for t in self.answered if t not in self.heldout]

    def confirm(self, confirm: Callable[[LabelStats], bool]) -> None:
        """Show the plan and its estimated cost; a refusal declines the whole run."""
        n = len(self.pool)
        plan = LabelStats(total=n, to_ask=self.budget)
        sample = self.pool[: min(n, 200)]
        plan.estimate = self.teacher.estimate_cost(sample) * self.budget / len(sample)
        if not confirm(plan):
            self.declined = True

    def choose_student(
        self, make_student: Callable[[int], Any] | None, round_model: str,
        embed: Callable[[Sequence[str]], np.ndarray] | None,
    ) -> None:
        """The round student and the space the seed and diversity are measured in (none once declined)."""
        if make_student is None and not self.declined:
            self.round_name, make_student, own_embed = round_student(round_model, self.pool)
            embed = embed or own_embed
        self.make = make_student or _default_student
        if not self.declined:
            self.emb = cheap_embed(self.pool, seed=self.settings.seed) if embed is None else _unit(embed(self.pool))

    def ask(self, batch: list[str], kind: str) -> None:
        """Send the inputs of ``batch`` not asked yet, as many as the budget leaves room for."""
        batch = [t for t in batch if t not in self.asked][: max(self.budget - self.used, 0)]
        if not batch:
            return
        max_cost = None if self.max_cost is None else max(self.max_cost - self.total.spent, 0.0)
        res = label(self.task, batch, teacher=self.teacher, journal=self.journal, max_cost=max_cost,
                    progress=None, source=f"active:{kind}")
        self.asked.update(batch)
        if res.stats.stopped == "declined":
            self.declined = True
        _add_stats(self.total, res.stats)
        for t, p in zip(res.labeled.texts, res.labeled.probs, strict=True):
            self.answered[t] = p
        if self.progress is not None:
            self.progress(self.total)

    def ask_heldout(self) -> None:
        """Round 0: a random sample the teacher labels once, to measure the round student on."""
        heldout = [self.pool[i] for i in self.rng.choice(len(self.pool), size=self.heldout_size, replace=False)]
        if not self.declined:
            self.ask(heldout, "heldout")
        self.rounds.append(Round(0, "heldout", len(heldout), len(self.answered), self.used))
        self.ho_texts = [t for t in heldout if t in self.answered]
        self.ho_probs = np.array([self.answered[t] for t in self.ho_texts], dtype=np.float32).reshape(-1, self.k)
        self.heldout = set(heldout)

    def ask_rounds(self, on_round: Callable[[Round, dict[str, np.ndarray]], None] | None) -> None:
        """Rounds 1, 2, …: pick, ask, measure; until the budget is spent or agreement has settled."""
        n = len(self.pool)
        stop_texts = [self.pool[i] for i in sorted(self.rng.choice(n, size=min(n, 2000), replace=False).tolist())]
        r = 1
        while not self.declined and self.total.stopped is None and self.used < self.budget:
            remaining = np.array([self.index[t] for t in self.pool if t not in self.asked], dtype=np.int64)
            if not len(remaining):
                break
            pick, kind = self.pick(r, remaining)
            self.ask([self.pool[i] for i in pick], kind)
            agreement, stability = self.measure(stop_texts)
            self.rounds.append(Round(r, kind, len(pick), len(self.answered), self.used, agreement, stability))
            if on_round is not None:
                on_round(self.rounds[-1], self.answered)
            log.info("round %d (%s): %d asked, agreement %s", r, kind, len(pick), agreement)
            if self.settled(agreement, stability):
                break
            r += 1

    def pick(self, r: int, remaining: np.ndarray) -> tuple[np.ndarray, str]:
        """Round ``r``'s picks among the ``remaining`` pool rows, and the kind of round it is."""
        s, train_texts = self.settings, self.train_texts()
        size = self.seed_size if r == 1 else self.round_size
        if s.strategy == "random":
            return self.rng.choice(remaining, size=min(size, len(remaining)), replace=False), "random"
        if r == 1 or len(train_texts) < 2 * self.k:
            sub = (typical_seed(self.emb[remaining], size, seed=s.seed) if s.seed_method == "kmeans"
                   else k_center(self.emb[remaining], size, seed=s.seed))
            return remaining[sub], "seed"
        return self.pick_uncertain(remaining, train_texts, size), "uncertain"

    def pick_uncertain(self, remaining: np.ndarray, train_texts: list[str], size: int) -> np.ndarray:
        """The ``size`` rows the round student is least sure of; kept diverse when ``candidates > 1``."""
        s = self.settings
        if self.fitted is not None and self.fitted[0] == len(train_texts):
            student = self.fitted[1]  # trained on exactly these answers at the end of last round
        else:
            student = _fit(self.make, s.seed, train_texts, self.answered, self.task)
        q = student.predict_proba([self.pool[i] for i in remaining])
        order = balanced_order(q) if s.select == "balanced" else np.argsort(margin(q), kind="stable")
        cand = remaining[order[: max(int(s.candidates * size), size)]]
        if len(cand) <= size:
            return cand
        labeled_idx = np.array([self.index[t] for t in train_texts], dtype=np.int64)
        # diversity inside the candidates, measured against everything already labeled
        sub = k_center(np.concatenate([self.emb[cand], self.emb[labeled_idx]]), size + len(labeled_idx),
                       exclude=np.arange(len(cand), len(cand) + len(labeled_idx)), seed=s.seed)
        return cand[[i for i in sub if i < len(cand)][:size]]

    def measure(self, stop_texts: list[str]) -> tuple[float | None, float | None]:
        """Held-out agreement of a student fitted on the answers so far, and the share of unchanged predictions.

        ``(None, None)`` while there is no held-out answer or the answers hold fewer than two classes.
        """
        train_texts = self.train_texts()
        if not len(self.ho_texts) or len({int(np.argmax(self.answered[t])) for t in train_texts}) < 2:
            return None, None
        student = _fit(self.make, self.settings.seed, train_texts, self.answered, self.task)
        self.fitted = (len(train_texts), student)
        agreement = float(np.mean(student.predict_proba(self.ho_texts).argmax(1) == self.ho_probs.argmax(1)))
        pred = student.predict_proba(stop_texts).argmax(1)
        stability = None if self.last_pred is None else float(np.mean(pred == self.last_pred))
        self.last_pred = pred
        return agreement, stability

    def settled(self, agreement: float | None, stability: float | None) -> bool:
        """Whether agreement has not gained ``min_gain`` for ``patience`` rounds and predictions settled."""
        s = self.settings
        if agreement is None:
            return False
        if agreement > self.best + s.min_gain:
            self.best, self.stale = agreement, 0
            return False
        self.stale += 1
        return self.stale >= s.patience and stability is not None and stability >= s.stable_at

    def result(self) -> ActiveResult:
        """Why the run stopped, the labeled set (teacher answers only), and the journal's run record."""
        total, n, strategy = self.total, len(self.pool), self.settings.strategy
        if self.declined:
            total.stopped = "declined"
        elif total.stopped is None and self.used >= self.budget and self.budget < n:
            total.stopped = "max_calls"
        total.to_ask = len(self.asked)
        total.skipped = n - len(self.asked)
        texts_done = list(self.answered)
        probs = np.array([self.answered[t] for t in texts_done], dtype=np.float32).reshape(-1, self.k)
        fingerprint = self.teacher.fingerprint()
        labeled = LabeledSet(texts_done, probs, self.task.label_names, teacher=fingerprint)
        labeled.info = {"strategy": strategy, "rounds": [x.as_dict() for x in self.rounds],
                        "round_student": self.round_name}
        run_id = self.journal.start_run(fingerprint, f"active:{strategy}", {"seed": self.settings.seed})
        self.journal.finish_run(run_id, {**labeled.info, **total.as_dict()})
        held = set(self.ho_texts)  # the random sample: train() measures and calibrates on it
        labeled.info["random_heldout"] = [i for i, t in enumerate(texts_done) if t in held]
        return ActiveResult(stats=total, labeled=labeled, teacher=fingerprint, rounds=self.rounds,
                            strategy=strategy, heldout=self.ho_texts)


def _add_stats(total: LabelStats, stats: LabelStats) -> None:
    """Add one label() call's counts to the run's; a ``max_cost`` stop stops the run."""
    for attr in ("from_journal", "done", "failed", "invalid", "calls", "attempts"):
        setattr(total, attr, getattr(total, attr) + getattr(stats, attr))
    total.spent += stats.spent
    total.estimate += stats.estimate
    if stats.stopped == "max_cost":
        total.stopped = stats.stopped


def _unit(emb: np.ndarray) -> np.ndarray:
    e = np.asarray(emb, dtype=np.float32)
    return np.asarray(e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-8), dtype=np.float32)


def _fit(make_student: Callable[[int], Any], seed: int, texts: list[str], answered: dict[str, np.ndarray],
         task: Task) -> Any:
    probs = np.array([answered[t] for t in texts], dtype=np.float32)
    return make_student(seed).fit(texts, probs, labels=task.label_names)
