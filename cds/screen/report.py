"""report.html: a screening run's summary for people, viewable offline (one file, inline SVG, no
scripts, no CDN). Built from summary.json alone, so it never holds a patient row."""
from __future__ import annotations

from typing import Any

from jinja2 import Environment, select_autoescape

from cds.screen import storage

BAR_HEIGHT = 18
LABEL_WIDTH = 300
PLOT_WIDTH = 420


def bar_chart(title: str, items: list[tuple[str, int]]) -> dict[str, Any]:
    """Horizontal bars, one per item, as numbers the template draws into an <svg>."""
    top = max((v for _, v in items), default=0) or 1
    bars = [{"label": label, "value": value, "y": i * BAR_HEIGHT, "width": round(PLOT_WIDTH * value / top, 1)}
            for i, (label, value) in enumerate(items)]
    return {"title": title, "bars": bars, "height": max(1, len(bars)) * BAR_HEIGHT + 4,
            "label_width": LABEL_WIDTH, "width": LABEL_WIDTH + PLOT_WIDTH + 60, "bar_height": BAR_HEIGHT - 4}


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Pharmacogenomic screening — {{ s.started_at[:10] }}</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 2rem; max-width: 64rem; color: #222; }
 table { border-collapse: collapse; margin: .5rem 0 1.5rem; }
 td, th { padding: .2rem .8rem; border-bottom: 1px solid #ddd; text-align: left; }
 td.n { text-align: right; font-variant-numeric: tabular-nums; } .note { color: #555; font-size: .9rem; }
 svg text { font-size: 12px; } svg rect { fill: #3a6ea5; } .lost { color: #a00; }
</style></head><body>
<h1>Pharmacogenomic screening</h1>
<p class="note">Run {{ s.started_at }} by {{ s.run_by }} · knowledge base {{ s.knowledge_version }} ·
engine {{ s.engine }} ({{ s.workers }} worker{{ 's' if s.workers != 1 }}) · input {{ s.input.digest }}
({{ s.input.lines }} lines{% if s.input.source %}, from {{ s.input.source }}{% endif %}).
Decision support, not a substitute for clinical judgement; every row rests on the same decision the
CDS Hooks service makes at order signing.</p>
{% if s.lost %}<p class="lost"><strong>Incomplete run:</strong> the input was not read whole, and these outputs
lack what was lost:</p><ul class="lost">{% for item in s.lost %}<li>{{ item }}</li>{% endfor %}</ul>{% endif %}
<h2>Counts</h2>
<table>
{% for label, key in rows %}<tr><td>{{ label }}</td><td class="n">{{ s.counts[key] }}</td></tr>
{% endfor %}</table>
<p class="note">Files beside this report: actionable.csv (patients on a drug their results say to change),
carriers.csv (actionable results, not on an affected drug), testing.csv (on a drug with a pre-test rule and no
result), unreadable.csv (what could not be read or decided, with the reason), withheld.csv (genomic use
withheld by consent), no_card.csv (active drugs without a card, and why), summary.json.</p>
{% for chart in charts %}
<h2>{{ chart.title }}</h2>
{% if chart.bars %}
<svg role="img" aria-label="{{ chart.title }}" width="{{ chart.width }}" height="{{ chart.height }}" xmlns="http://www.w3.org/2000/svg">
{% for b in chart.bars %}<text x="{{ chart.label_width - 6 }}" y="{{ b.y + 13 }}" text-anchor="end">{{ b.label }}</text>
<rect x="{{ chart.label_width }}" y="{{ b.y + 2 }}" width="{{ b.width }}"
 height="{{ chart.bar_height }}"><title>{{ b.label }}: {{ b.value }}</title></rect>
<text x="{{ chart.label_width + b.width + 4 }}" y="{{ b.y + 13 }}">{{ b.value }}</text>
{% endfor %}</svg>
{% else %}<p class="note">none</p>{% endif %}
{% endfor %}
<h2>Timings</h2>
<table>{% for k, v in s.timings.items() %}<tr><td>{{ k }}</td><td class="n">{{ v }}</td></tr>{% endfor %}</table>
</body></html>
"""

COUNT_ROWS = [
    ("patients screened", "patients"),
    ("with pharmacogenomic results", "patients_with_results"),
    ("on a drug with pharmacogenomic guidance", "patients_on_screened_drugs"),
    ("on a drug their results say to change", "patients_actionable"),
    ("carriers of an actionable result, not on an affected drug", "patients_carriers"),
    ("genomic use withheld by consent", "patients_consent_withheld"),
    ("not screened: over the per-patient size limit", "patients_over_limit"),
    ("actionable rows", "rows_actionable"),
    ("pre-test rows (on a drug, no result)", "rows_testing"),
    ("could not be read or decided", "rows_unreadable"),
    ("active drugs without a card, with the reason", "rows_no_card"),
]


def write_report(path: str, summary: dict[str, Any]) -> str:
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    gene_phenotype = sorted(summary["gene_phenotype"].items(), key=lambda kv: (-kv[1], kv[0]))
    charts = [
        bar_chart("Results by gene × phenotype", [(k.replace("|", " — "), v) for k, v in gene_phenotype[:40]]),
        bar_chart("Drugs affected (actionable rows per drug)", list(summary["actionable_by_drug"].items())[:30]),
        bar_chart("Top drug–gene pairs",
                  [(k.replace("|", " × "), v) for k, v in summary["top_drug_gene_pairs"].items()]),
    ]
    storage.write_text(path, env.from_string(_TEMPLATE).render(s=summary, rows=COUNT_ROWS, charts=charts))
    return path
