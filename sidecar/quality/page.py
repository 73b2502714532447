"""The review as one self-contained HTML page: the summary table, plots embedded as
data URIs (matplotlib), the suggestions, and every pair side by side."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

from sidecar.errors import SidecarError
from sidecar.quality.review import Group, agreement

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f3f3f3}.pair{display:grid;grid-template-columns:1fr 1fr;gap:1em;
border-top:2px solid #999;padding:1em 0}.prompt{grid-column:1/3;color:#555}
pre{white-space:pre-wrap;margin:0;background:#fafafa;padding:.5em}
.suggest{background:#fff7d6;padding:.5em 1em}
"""


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _plots(groups: Sequence[Group]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError as exc:
        raise SidecarError(
            "the report's plots need matplotlib: pip install 'llm-sidecar[plot]'"
        ) from exc

    labels = [f"{g.model_group}/{g.task or '-'}" for g in groups]
    images = []
    for title, key, unit in (("Latency", "latency_ms", "ms"), ("Cost per call", "cost_usd", "USD")):
        figure, axes = pyplot.subplots(figsize=(7, 3))
        positions = range(len(groups))
        local = [g.mean("local", key) or 0.0 for g in groups]
        shadow = [g.mean("shadow", key) or 0.0 for g in groups]
        axes.bar([p - 0.2 for p in positions], local, width=0.4, label="local")
        axes.bar([p + 0.2 for p in positions], shadow, width=0.4, label="comparison")
        axes.set_xticks(list(positions), labels, rotation=20, ha="right")
        axes.set_ylabel(unit)
        axes.set_title(title)
        axes.legend()
        images.append(_png(figure))
        pyplot.close(figure)
    figure, axes = pyplot.subplots(figsize=(7, 3))
    scores = [
        agreement(p["local"]["answer"], p["shadow"]["answer"]) for g in groups for p in g.pairs
    ]
    axes.hist(scores, bins=10, range=(0, 1))
    axes.set_xlabel("agreement (word overlap)")
    axes.set_ylabel("pairs")
    axes.set_title("Agreement")
    images.append(_png(figure))
    pyplot.close(figure)
    return images


def _num(value: float | None, form: str) -> str:
    return "-" if value is None else format(value, form)


def render_page(
    groups: Sequence[Group], suggestions: Sequence[str], compare_with: str, judged: bool
) -> str:
    rows = []
    for g in groups:
        verdicts = g.verdicts()
        verdict = (
            f"{verdicts['local']} / {verdicts['shadow']} / {verdicts['tie']}" if judged else "-"
        )
        cells = [
            g.model_group, g.task or "-", str(g.count), _num(g.length_ratio, ".2f"),
            _num(g.mean("local", "latency_ms"), ".0f"), _num(g.mean("shadow", "latency_ms"), ".0f"),
            _num(g.total_cost("local"), ".6f"), _num(g.total_cost("shadow"), ".6f"),
            _num(g.agreement, ".2f"), verdict,
        ]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    header = (
        "<tr><th>route</th><th>task</th><th>pairs</th><th>length ratio (local/comparison)</th>"
        "<th>local latency ms</th><th>comparison latency ms</th><th>local cost $</th>"
        "<th>comparison cost $</th><th>agreement</th><th>judge: local / comparison / tie</th></tr>"
    )
    plots = "".join(f'<img alt="plot" src="{src}">' for src in _plots(groups)) if groups else ""
    advice = "".join(f"<li>{html.escape(s)}</li>" for s in suggestions)
    pairs = []
    for g in groups:
        for p in g.pairs:
            shown = f" (judge: {html.escape(str(p['verdict']))})" if p.get("verdict") else ""
            pairs.append(
                '<div class="pair">'
                f'<div class="prompt"><b>{html.escape(g.model_group)}'
                f" / {html.escape(g.task or '-')}</b>{shown}: "
                f"{html.escape(p['prompt_preview'])}</div>"
                f"<div><b>local ({html.escape(str(p['local'].get('deployment')))})</b>"
                f"<pre>{html.escape(p['local']['answer'])}</pre></div>"
                f"<div><b>{html.escape(compare_with)}</b>"
                f"<pre>{html.escape(p['shadow']['answer'])}</pre></div></div>"
            )
    total = sum(g.count for g in groups)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>llm-sidecar quality review</title><style>{_STYLE}</style></head><body>"
        f"<h1>Quality review: local answers against {html.escape(compare_with)}</h1>"
        f"<p>{total} pairs.</p><table>{header}{''.join(rows)}</table>"
        f'<h2>Suggestions</h2><ul class="suggest">{advice}</ul>'
        f"<h2>Plots</h2>{plots}<h2>Pairs</h2>{''.join(pairs)}</body></html>"
    )
