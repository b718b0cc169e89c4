"""The HTML report: one self-contained page from metrics.json (plots inline, no network).

The page leads with the verdict in one sentence, then the headline numbers with their
95% intervals, the ladder (cost vs agreement, a Pareto plot), the cascade curve, the
reliability diagram, the confusion matrix (top confused pairs and a heatmap), the
per-class table and the student's worst disagreements with the teacher.  Plots are
drawn with matplotlib's Agg canvas (no pyplot, no display) and embedded as base64 PNG;
every text from the data is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distil.errors import require

__all__ = ["render_report", "write_report"]

_CSS = """
:root { --ink:#1d2330; --muted:#5d6678; --line:#e3e6ec; --accent:#2f6fdd; --good:#1f8a4c; --bad:#c0392b;
        --warn-bg:#fff7e0; --warn-line:#f0c24b; --card:#f6f8fb; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--ink);
       font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 28px 32px 60px; }
header .task { color: var(--muted); font-size: 13px; letter-spacing: .04em; text-transform: uppercase; }
h1 { font-size: 25px; line-height: 1.3; margin: 6px 0 18px; font-weight: 650; }
h2 { font-size: 18px; margin: 34px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
p.note { color: var(--muted); font-size: 13px; margin: 4px 0 10px; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 10px; }
.tile { background: var(--card); border-radius: 8px; padding: 10px 12px; }
.tile .k { color: var(--muted); font-size: 12px; }
.tile .v { font-size: 22px; font-weight: 650; font-variant-numeric: tabular-nums; }
.tile .ci { color: var(--muted); font-size: 12px; font-variant-numeric: tabular-nums; }
.warn { background: var(--warn-bg); border-left: 4px solid var(--warn-line); padding: 8px 12px;
        margin: 16px 0; font-size: 14px; border-radius: 4px; }
.warn ul { margin: 4px 0 0 18px; padding: 0; }
.met { color: var(--good); font-weight: 600; } .missed { color: var(--bad); font-weight: 600; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 10px; border-bottom: 1px solid var(--line); text-align: right; vertical-align: top; }
th { font-weight: 600; color: var(--muted); background: #fafbfc; }
td.l, th.l { text-align: left; }
tr.chosen td { background: #eef4ff; font-weight: 600; }
td.text { text-align: left; max-width: 520px; white-space: pre-wrap; word-break: break-word; }
.row2 { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; align-items: start; }
figure { margin: 6px 0; } figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 12px; }
.scroll { max-height: 520px; overflow: auto; border: 1px solid var(--line); border-radius: 6px; }
.scroll table { margin: 0; width: 100%; } .scroll th { position: sticky; top: 0; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
.c { color: var(--muted); font-size: 12px; white-space: nowrap; }
code { font-size: 12px; background: var(--card); padding: 1px 4px; border-radius: 3px; }
"""


# ---------------------------------------------------------------------------------------------
# Formatting helpers.


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _pct(x: Any, digits: int = 1) -> str:
    return "—" if x is None else f"{100 * float(x):.{digits}f}%"


def _num(x: Any, digits: int = 2) -> str:
    if x is None:
        return "—"
    x = float(x)
    if x != 0 and abs(x) < 10 ** (-digits):
        return f"{x:.2g}"
    return f"{x:,.{digits}f}"


def _money(x: Any) -> str:
    if x is None:
        return "—"
    x = float(x)
    if x >= 100:
        return f"${x:,.0f}"
    if x >= 1:
        return f"${x:,.2f}"
    return f"${x:.3g}"


def _ci(metrics: Mapping[str, Any], key: str, pct: bool = True) -> str:
    iv = (metrics.get("ci") or {}).get(key)
    if not iv or iv[0] is None or iv[1] is None:
        return ""
    lo, hi = iv
    return f"95% CI {_pct(lo)} – {_pct(hi)}" if pct else f"95% CI {_num(lo, 3)} – {_num(hi, 3)}"


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib Agg canvas, no pyplot).


def _figure(w: float, h: float) -> Any:
    require("matplotlib", "report")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _style(ax: Any) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(True, color="#e8ebf0", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=9)


def _png(fig: Any, alt: str) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _pareto_plot(metrics: Mapping[str, Any]) -> str | None:
    ladder = [m for m in metrics.get("ladder") or [] if m.get("agreement") is not None]
    teacher = metrics.get("teacher") or {}
    use_cost = all(m.get("cost_per_1m") for m in ladder)
    xkey = "cost_per_1m" if use_cost else "ms_per_pred"
    if not ladder or not all(m.get(xkey) for m in ladder):
        return None
    fig = _figure(5.2, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    _style(ax)
    xs = [float(m[xkey]) for m in ladder]
    ys = [float(m["agreement"]) for m in ladder]
    colors = ["#2f6fdd" if m.get("chosen") else "#8a94a6" for m in ladder]
    ax.scatter(xs, ys, c=colors, s=60, zorder=3)
    for m, x, y in zip(ladder, xs, ys, strict=True):
        ax.annotate(m["name"] + (" (chosen)" if m.get("chosen") else ""), (x, y), textcoords="offset points",
                    xytext=(6, 4), fontsize=9, color="#1d2330")
    # Pareto front: cheapest member at each agreement level.
    order = np.argsort(xs)
    front_x, front_y, best = [], [], -1.0
    for i in order:
        if ys[i] > best:
            best = ys[i]
            front_x.append(xs[i])
            front_y.append(ys[i])
    ax.step(front_x, front_y, where="post", color="#2f6fdd", alpha=0.35, linewidth=1.5)
    tx = teacher.get(xkey)
    if tx:
        ax.scatter([float(tx)], [1.0], marker="*", s=160, c="#c0392b", zorder=3)
        ax.annotate("teacher", (float(tx), 1.0), textcoords="offset points", xytext=(6, -12), fontsize=9,
                    color="#c0392b")
    ax.set_xscale("log")
    ax.set_xlabel("$ per 1M predictions (log)" if use_cost else "ms per prediction (log)", fontsize=10)
    ax.set_ylabel("agreement with teacher", fontsize=10)
    lo = min([*ys, 1.0])
    ax.set_ylim(max(0.0, lo - 0.05), 1.02)
    xs_all = xs + ([float(tx)] if tx else [])
    ax.set_xlim(min(xs_all) / 2.5, max(xs_all) * 4)
    return _png(fig, "ladder: cost versus agreement")


def _cascade_plot(metrics: Mapping[str, Any]) -> str | None:
    pts = metrics.get("cascade") or []
    if len(pts) < 2:
        return None
    fig = _figure(5.2, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    _style(ax)
    cov = [p["coverage"] for p in pts]
    if all(p.get("accuracy") is not None for p in pts):
        ax.plot(cov, [p["accuracy"] for p in pts], color="#1f8a4c", linewidth=2.2, label="accuracy (gold)")
    ax.plot(cov, [p["agreement"] for p in pts], color="#2f6fdd", linewidth=1.6, linestyle=(0, (4, 2)),
            label="agreement with teacher")
    ax.set_xlabel("share answered by the student alone (coverage)", fontsize=10)
    ax.set_ylabel("combined system", fontsize=10)
    ax.set_xlim(-0.02, 1.02)
    ax.legend(fontsize=9, frameon=False, loc="lower left")
    return _png(fig, "cascade curve")


def _reliability_plot(metrics: Mapping[str, Any]) -> str | None:
    rel = metrics.get("reliability") or {}
    bins = rel.get("student") or []
    if not bins:
        return None
    fig = _figure(5.2, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    _style(ax)
    width = 1.0 / max(len(bins), 1)
    los = [b["lo"] for b in bins if b["count"]]
    accs = [b["accuracy"] for b in bins if b["count"]]
    confs = [b["confidence"] for b in bins if b["count"]]
    ax.bar(los, accs, width=width, align="edge", color="#2f6fdd", alpha=0.75, edgecolor="white",
           label="student: accuracy in bin")
    ax.plot([0, 1], [0, 1], linestyle="--", color="#8a94a6", linewidth=1, label="perfect calibration")
    ax.scatter([c for c in confs], accs, s=14, color="#1d2330", zorder=3, label="mean confidence")
    tbins = rel.get("teacher") or []
    if tbins:
        tx = [b["confidence"] for b in tbins if b["count"]]
        ty = [b["accuracy"] for b in tbins if b["count"]]
        ax.plot(tx, ty, marker="o", markersize=3, color="#c0392b", linewidth=1, label="teacher")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ref = "gold" if rel.get("reference") == "gold" else "teacher's label"
    ax.set_xlabel("confidence (probability of the predicted label)", fontsize=10)
    ax.set_ylabel(f"share matching the {ref}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", framealpha=0.95, edgecolor="#e3e6ec")
    return _png(fig, "reliability diagram")


def _confusion_plot(metrics: Mapping[str, Any], max_classes: int = 30) -> tuple[str | None, str]:
    conf = metrics.get("confusion") or {}
    matrix = np.asarray(conf.get("matrix") or [], dtype=np.float64)
    labels = list(conf.get("labels") or [])
    if matrix.size == 0:
        return None, ""
    note = ""
    idx = np.arange(len(labels))
    if len(labels) > max_classes:
        off = matrix.copy()
        np.fill_diagonal(off, 0)
        mass = off.sum(axis=0) + off.sum(axis=1)
        idx = np.sort(np.argsort(-mass, kind="stable")[:max_classes])
        note = f"The {max_classes} classes most involved in confusions, of {len(labels)}."
    sub = matrix[np.ix_(idx, idx)]
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(sub.sum(axis=1, keepdims=True) > 0, sub / sub.sum(axis=1, keepdims=True), 0.0)
    size = min(9.0, 3.2 + 0.2 * len(idx))
    fig = _figure(size, size * 0.9)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    names = [labels[i] if len(labels[i]) <= 22 else labels[i][:21] + "…" for i in idx]
    fs = 8 if len(idx) <= 15 else 7
    ax.set_xticks(range(len(idx)), names, rotation=90, fontsize=fs)
    ax.set_yticks(range(len(idx)), names, fontsize=fs)
    ax.set_xlabel("student", fontsize=10)
    ax.set_ylabel(conf.get("rows", "reference"), fontsize=10)
    if len(idx) <= 12:
        for i in range(len(idx)):
            for j in range(len(idx)):
                if sub[i, j]:
                    ax.text(j, i, f"{int(sub[i, j])}", ha="center", va="center", fontsize=8,
                            color="white" if norm[i, j] > 0.5 else "#1d2330")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02).ax.tick_params(labelsize=8)
    return _png(fig, "confusion matrix"), note


# ---------------------------------------------------------------------------------------------
# Sections.


def _tiles(metrics: Mapping[str, Any]) -> str:
    s, t = metrics.get("student") or {}, metrics.get("teacher") or {}
    gold = metrics.get("reference") == "gold"
    tiles: list[tuple[str, str, str]] = [
        ("agreement with teacher", _pct(metrics.get("agreement")), _ci(metrics, "agreement")),
        ("retention" + ("" if gold else " (= agreement)"), _pct(metrics.get("retention")),
         _ci(metrics, "retention")),
    ]
    if gold:
        tiles.append(("student accuracy", _pct(s.get("accuracy")), _ci(metrics, "student.accuracy")))
        tiles.append(("teacher accuracy", _pct(t.get("accuracy")), _ci(metrics, "teacher.accuracy")))
        tiles.append(("student macro-F1", _pct(s.get("macro_f1")), _ci(metrics, "student.macro_f1")))
    speed = metrics.get("speedup")
    if speed is None:
        speed_text = "—"
    elif speed >= 100:
        speed_text = f"{speed:,.0f}× faster"
    elif speed >= 1:
        speed_text = f"{speed:,.1f}× faster"
    else:
        speed_text = f"{1 / speed:,.1f}× slower"
    tiles.append(("speed vs teacher (batch 1)", speed_text,
                  f"{_num(t.get('ms_per_pred'))} → {_num(s.get('ms_per_pred'), 3)} ms"))
    tiles.append(("cost per 1M predictions", _money(s.get("cost_per_1m")),
                  f"teacher {_money(t.get('cost_per_1m'))}"))
    tiles.append(("ECE (15 bins)", _num(metrics.get("ece"), 3), _ci(metrics, "ece", pct=False)))
    tiles.append(("test examples", f"{metrics.get('n_test', 0):,}", f"reference: {metrics.get('reference')}"))
    out = ['<div class="tiles">']
    for k, v, ci in tiles:
        out.append(f'<div class="tile"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div>'
                   f'<div class="ci">{_e(ci)}</div></div>')
    out.append("</div>")
    return "".join(out)


def _ladder_table(metrics: Mapping[str, Any]) -> str:
    gold = metrics.get("reference") == "gold"
    head = ["student", "soft labels", "agreement"] + (["accuracy", "macro-F1"] if gold else []) + [
        "ECE", "ms / pred", "preds / s", "size MB", "$ / 1M"]
    rows = []
    t = metrics.get("teacher") or {}
    def cells(m: Mapping[str, Any], first: list[str], size_digits: int) -> str:
        out = list(first)
        if gold:
            out += [f"<td>{_pct(m.get('accuracy'))}</td>", f"<td>{_pct(m.get('macro_f1'))}</td>"]
        out += [
            f"<td>{_num(m.get('ece'), 3)}</td>", f"<td>{_num(m.get('ms_per_pred'), 3)}</td>",
            f"<td>{_num(m.get('preds_per_s'), 0)}</td>", f"<td>{_num(m.get('size_mb'), size_digits)}</td>",
            f"<td>{_money(m.get('cost_per_1m'))}</td>",
        ]
        return "".join(out)

    for m in metrics.get("ladder") or []:
        first = [
            f'<td class="l">{_e(m.get("name"))}{" ★" if m.get("chosen") else ""}</td>',
            f"<td>{'—' if m.get('soft') is None else ('yes' if m.get('soft') else 'no')}</td>",
            f"<td>{_pct(m.get('agreement'))}</td>",
        ]
        rows.append(f'<tr class="{"chosen" if m.get("chosen") else ""}">{cells(m, first, 2)}</tr>')
    first = [f'<td class="l">teacher ({_e(t.get("kind"))})</td>', "<td>—</td>", "<td>100.0%</td>"]
    rows.append(f"<tr>{cells(t, first, 1)}</tr>")
    ths = "".join(f'<th class="{"l" if i == 0 else ""}">{_e(h)}</th>' for i, h in enumerate(head))
    return f"<table><tr>{ths}</tr>{''.join(rows)}</table>"


def _cascade_table(metrics: Mapping[str, Any]) -> str:
    pts = metrics.get("cascade") or []
    if not pts:
        return ""
    picks: list[dict[str, Any]] = []
    for target in (0.999, 0.995, 0.99, 0.98, 0.95):
        ok = [p for p in pts if p["agreement"] >= target]
        if ok:
            best = max(ok, key=lambda p: p["coverage"])
            if best not in picks:
                picks.append({**best, "_target": target})
    if not picks:
        return ""
    gold = any(p.get("accuracy") is not None for p in pts)
    head = "<tr><th>agreement ≥</th><th>threshold</th><th>student answers</th><th>agreement</th>" + (
        "<th>accuracy</th>" if gold else "") + "<th>$ / 1M</th></tr>"
    body = "".join(
        f"<tr><td>{_pct(p['_target'])}</td><td>{_num(p['threshold'], 3)}</td><td>{_pct(p['coverage'])}</td>"
        f"<td>{_pct(p['agreement'])}</td>" + (f"<td>{_pct(p.get('accuracy'))}</td>" if gold else "")
        + f"<td>{_money(p.get('cost_per_1m'))}</td></tr>"
        for p in picks
    )
    return f"<table>{head}{body}</table>"


def _served_rows(s: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(what, value) rows of the served block: who answered, how well, at what cost."""
    ci = s.get("local_agreement_ci")
    local = _pct(s.get("local_agreement")) + (f" (95% CI {_pct(ci[0])}–{_pct(ci[1])})" if ci else "")
    rungs = s.get("rungs") or []
    score = "acceptor score" if s.get("score") == "acceptor" else "confidence"
    rows = [
        (f"stored threshold on the {score} (target)",
         f"{_num(s.get('threshold'), 3) if s.get('threshold') is not None else 'none'}"
         f" (agreement ≥ {_pct(s.get('target_agreement'))})"),
        ("answered by the student alone", _pct(s.get("coverage"))),
        *[(f"… by the {r['member']} rung (it ran on {_pct(r['reached'])})", _pct(r["answered"]))
          for r in rungs if len(rungs) > 1 and not r.get("companion")],
        *[(f"{r['member']} run beside it for the acceptor (on {_pct(r['reached'])})", "answers none alone")
          for r in rungs if r.get("companion")],
        ("sent to the teacher", _pct(None if s.get("coverage") is None else 1 - s["coverage"])),
        ("flagged off-distribution by the guard", _pct(s.get("ood_share")) if s.get("ood_guard") else "no guard"),
        ("agreement with the teacher on what the student answered", local),
        ("agreement of all served answers", _pct(s.get("agreement"))),
    ]
    if s.get("accuracy") is not None:
        rows.append(("accuracy of all served answers (gold)", _pct(s.get("accuracy"))))
    off = s.get("off_topic")
    if off:
        rows.append((f"off-topic texts answered by the student alone ({off['n']} from {Path(off['source']).name})",
                     _pct(off["answered_locally"])))
    rows.append(("$ per 1M requests: cascade / teacher alone",
                 f"{_money(s.get('cost_per_1m'))} / {_money(s.get('teacher_cost_per_1m'))}"))
    return rows


def _served_table(metrics: Mapping[str, Any]) -> str:
    """What the served system (router.json's threshold and guard) did on the test texts."""
    s = metrics.get("served")
    if not s or s.get("coverage") is None:
        return '<p class="note">The served system was not measured (the artifact has no router).</p>'
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in _served_rows(s))
    return f"<table>{body}</table>"


def _per_class_table(metrics: Mapping[str, Any]) -> str:
    rows = list(metrics.get("per_class") or [])
    if not rows:
        return ""
    rows.sort(key=lambda r: (r["f1"], -r["support"]))
    has_t = any(r.get("teacher_f1") is not None for r in rows)
    head = ('<tr><th class="l">label</th><th>support</th><th>precision</th><th>recall</th><th>F1</th>'
            + ("<th>teacher F1</th>" if has_t else "") + "</tr>")
    body = "".join(
        f'<tr><td class="l">{_e(r["label"])}</td><td>{r["support"]}</td><td>{_pct(r["precision"])}</td>'
        f"<td>{_pct(r['recall'])}</td><td>{_pct(r['f1'])}</td>"
        + (f"<td>{_pct(r.get('teacher_f1'))}</td>" if has_t else "") + "</tr>"
        for r in rows
    )
    return f'<div class="scroll"><table>{head}{body}</table></div>'


def _top_confused_table(metrics: Mapping[str, Any]) -> str:
    pairs = (metrics.get("confusion") or {}).get("top_confused") or []
    if not pairs:
        return '<p class="note">No confusions on the test set.</p>'
    ref = _e((metrics.get("confusion") or {}).get("rows", "reference"))
    body = "".join(
        f'<tr><td class="l">{_e(p["reference"])}</td><td class="l">{_e(p["predicted"])}</td>'
        f"<td>{p['count']}</td></tr>"
        for p in pairs[:15]
    )
    return (f'<table><tr><th class="l">{ref}</th><th class="l">student said</th><th>count</th></tr>'
            f"{body}</table>")


def _disagreement_table(disagreements: Sequence[Mapping[str, Any]], limit: int = 25) -> str:
    if not disagreements:
        return '<p class="note">The student agrees with the teacher on every test text.</p>'
    gold = any(d.get("gold") is not None for d in disagreements)
    head = ('<tr><th>row</th><th class="l">text</th><th class="l">teacher</th><th class="l">student</th>'
            + ('<th class="l">gold</th>' if gold else "") + "</tr>")
    body = "".join(
        f'<tr><td>{_e(d.get("row"))}</td><td class="text">{_e(d.get("text"))}</td>'
        f'<td class="l">{_e(d.get("teacher"))} <span class="c">{_pct(d.get("teacher_conf"), 0)}</span></td>'
        f'<td class="l">{_e(d.get("student"))} <span class="c">{_pct(d.get("student_conf"), 0)}</span></td>'
        + (f'<td class="l">{_e(d.get("gold"))}</td>' if gold else "") + "</tr>"
        for d in list(disagreements)[:limit]
    )
    return f"<table>{head}{body}</table>"


def _fig(img: str | None, caption: str) -> str:
    if img is None:
        return f'<p class="note">{_e(caption)} — not enough data to draw.</p>'
    return f"<figure>{img}<figcaption>{_e(caption)}</figcaption></figure>"


def render_report(metrics: Mapping[str, Any], *, disagreements: Sequence[Mapping[str, Any]] = ()) -> str:
    """The report as one HTML string (every image inline, every data text escaped)."""
    s = metrics.get("student") or {}
    t = metrics.get("teacher") or {}
    target = metrics.get("target") or {}
    target_html = ""
    if target.get("met") is not None:
        cls, word = ("met", "met") if target["met"] else ("missed", "missed")
        target_html = (f'<p>Target: retention ≥ {_pct(target.get("min_retention"), 0)} — '
                       f'<span class="{cls}">{word}</span>. Retention is '
                       f'{_e(metrics.get("retention_definition"))}.</p>')
    warnings = metrics.get("warnings") or []
    warn_html = ""
    if warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in warnings)
        warn_html = f'<div class="warn"><strong>Read with care</strong><ul>{items}</ul></div>'
    conf_img, conf_note = _confusion_plot(metrics)
    n_classes = len((metrics.get("confusion") or {}).get("labels") or [])
    ref = "gold labels" if metrics.get("reference") == "gold" else "the teacher's labels"
    price = t.get("price") or {}
    price_note = ""
    if price:
        price_note = (f" Teacher price: ${_num(price.get('in_per_1m'))} / ${_num(price.get('out_per_1m'))} "
                      f"per 1M tokens in / out ({_e(price.get('source'))}"
                      + (f", read {_e(price.get('read_on'))}" if price.get("read_on") else "") + ").")
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>distil report — {_e(metrics.get('task'))}</title>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<style>{_CSS}</style></head><body><main>",
        f'<header><div class="task">distil · {_e(metrics.get("task"))} · {_e(s.get("name"))} student vs '
        f'{_e(t.get("describe") or t.get("kind"))}</div>',
        f'<h1 id="verdict">{_e(metrics.get("verdict"))}</h1></header>',
        _tiles(metrics),
        target_html,
        warn_html,
        "<h2>The ladder</h2>",
        '<p class="note">Every student trained, on the same test set and CPU. '
        "★ = chosen at training time: the cheapest whose lower confidence bound on held-out agreement with the "
        "teacher (or on retention) met the target, or the best one when none did. "
        "Costs: CPU core-seconds × $/core-hour for local models"
        + (", tokens × price for the teacher" if t.get("kind") == "openai" else "") + ".</p>",
        '<div class="row2">',
        _fig(_pareto_plot(metrics), "Cost versus agreement; the line is the Pareto front."),
        f"<div>{_ladder_table(metrics)}</div>",
        "</div>",
        "<h2>Cascade: student first, teacher for the rest</h2>",
        '<p class="note">The student answers when its confidence is at least the threshold; '
        "the teacher answers the rest. The student runs on every input, so the combined cost is "
        "the student's plus the teacher's share.</p>",
        '<div class="row2">',
        _fig(_cascade_plot(metrics), "Coverage versus quality of the combined system."),
        f"<div>{_cascade_table(metrics)}</div>",
        "</div>",
        "<h3>The served system: the stored threshold and guard on these test texts</h3>",
        '<p class="note">What <code>distil serve</code> does with this artifact: the curve above is every '
        "threshold in hindsight; this is the one the router certified at training time.</p>",
        _served_table(metrics),
        "<h2>Calibration</h2>",
        f'<p class="note">Expected calibration error over 15 equal-width bins, against {ref}: '
        f"student {_num(metrics.get('ece'), 3)}"
        + (f", teacher {_num(t.get('ece'), 3)}" if t.get("ece") is not None else "") + ".</p>",
        '<div class="row2">',
        _fig(_reliability_plot(metrics), "Reliability diagram: bars below the diagonal are over-confident."),
        "<div></div></div>",
        "<h2>Confusions</h2>",
        f'<p class="note">Rows: {ref}; columns: the student. {_e(conf_note)}</p>',
        '<div class="row2">',
        f"<div>{_top_confused_table(metrics)}</div>",
        _fig(conf_img, "Row-normalised confusion matrix.") if n_classes <= 12 else "",
        "</div>",
        _fig(conf_img, "Row-normalised confusion matrix (share of each row).")
        if n_classes > 12 else "",
        "<h2>Per class</h2>",
        f'<p class="note">Against {ref}, worst F1 first.</p>',
        _per_class_table(metrics),
        "<h2>Worst disagreements</h2>",
        '<p class="note">Texts where the student most confidently differs from the teacher.</p>',
        _disagreement_table(disagreements),
        "<footer>",
        f"schema {_e(metrics.get('schema_version'))} · test file {_e(metrics.get('test_file'))} · "
        f"dataset fingerprint <code>{_e(metrics.get('dataset_fingerprint'))}</code> · "
        f"intervals: {_e((metrics.get('ci_method') or {}).get('kind'))}, "
        f"{_e((metrics.get('ci_method') or {}).get('resamples'))} resamples, "
        f"seed {_e((metrics.get('ci_method') or {}).get('seed'))}.{price_note}",
        "</footer></main></body></html>",
    ]
    return "\n".join(parts)


def write_report(
    metrics: Mapping[str, Any], out_html: Path, *, disagreements: Sequence[Mapping[str, Any]] = ()
) -> Path:
    """Write the self-contained HTML report for ``metrics`` (see :func:`render_report`).

    Atomic (a temporary sibling renamed over ``out_html``); credentials inside URLs are redacted.
    """
    from distil.data import atomic_write_text
    from distil.errors import redact_url

    html = redact_url(render_report(metrics, disagreements=disagreements))
    return atomic_write_text(Path(out_html), html, what="report")
