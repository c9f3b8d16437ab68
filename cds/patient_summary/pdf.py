"""The patient summary as a PDF (fpdf2, pure Python): an A4 page to print, then a wallet card cut to the
ID-1 (credit card) size, 85.6 × 53.98 mm, like the PREPARE study's card: front, the results; back, a QR
code (segno) whose content is the same results as text.

The text needs a Unicode TrueType font ("≥" in CYP2D6 copy numbers, "ï" in CPIC's wording): DejaVu
Sans (Debian's fonts-dejavu-core) or the regular TTF named by CDS_PDF_FONT (its bold beside it as
*-Bold.ttf, else the regular one).
"""
from __future__ import annotations

from pathlib import Path

import segno
from fpdf import FPDF

from cds.errors import CdsError
from cds.patient_summary import words
from cds.patient_summary.model import PatientSummary

CARD_W, CARD_H = 85.6, 53.98           # ISO/IEC 7810 ID-1, as a payment card or the PREPARE card
DEBIAN_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
FONT = "PgxSans"


def qr_code(text: str) -> segno.QRCode:
    """The QR code of `text`: error correction M, UTF-8 declared (ECI) so a reader decodes "≥" as "≥"."""
    return segno.make(text, error="m", eci=True, micro=False)


def _fonts(font: Path | None) -> tuple[Path, Path]:
    regular = Path(font or DEBIAN_FONT)
    if not regular.is_file():
        raise CdsError(f"the patient summary PDF needs a Unicode TrueType font: install Debian's fonts-dejavu-core "
                       f"({DEBIAN_FONT}) or set CDS_PDF_FONT to a .ttf file (not found: {regular})")
    bold = regular.with_name(regular.stem + "-Bold" + regular.suffix)
    return regular, bold if bold.is_file() else regular


def summary_pdf(summary: PatientSummary, font: Path | None = None) -> bytes:
    """`font`: a Unicode TrueType font (CDS_PDF_FONT, passed by a face), else Debian's DejaVu Sans."""
    regular, bold = _fonts(font)
    pdf = FPDF(unit="mm", format="A4")
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_font(FONT, "", str(regular))
    pdf.add_font(FONT, "B", str(bold))
    pdf.set_title(words.TITLE)
    pdf.add_page()
    _page(pdf, summary)
    pdf.add_page()
    _card(pdf, summary, 15, 20)
    return bytes(pdf.output())


def _page(pdf: FPDF, summary: PatientSummary) -> None:
    pdf.set_font(FONT, "B", 16)
    pdf.multi_cell(0, 8, words.TITLE, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", 10)
    pdf.multi_cell(0, 5, words.INTRO, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "B", 11)
    pdf.multi_cell(0, 6, words.SHOW_PRESCRIBER_LONG, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", 9)
    for date, lab in summary.tested:
        pdf.multi_cell(0, 5, words.tested_line(date, lab), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    with pdf.table(col_widths=(18, 38, 50, 74), text_align="LEFT", line_height=4.5) as table:
        heading = table.row()
        for title in ("Gene", "Your result", "What the guidelines call it", words.CHANGES):
            heading.cell(title)
        for line in summary.lines:
            r = line.result
            row = table.row()
            row.cell(r.gene)
            row.cell(words.NO_RESULT if r.no_result else r.reported)
            meaning = r.phenotype or ""
            if r.problem:
                meaning = f"{meaning} ({r.problem})" if meaning else r.problem
            if r.activity_score and r.activity_score not in r.reported:
                meaning += f"; activity score {r.activity_score}"
            if line.priority:
                meaning += f"\nCPIC: {line.priority}"
            row.cell(meaning)
            row.cell(", ".join(line.drugs) if line.drugs else ("" if r.no_result else words.NO_CHANGE))
    pdf.ln(4)
    pdf.set_font(FONT, "B", 11)
    pdf.multi_cell(0, 6, words.FOR_PRESCRIBER, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", 8.5)
    if not summary.advice:
        pdf.multi_cell(0, 4.5, words.ADVICE_NONE, new_x="LMARGIN", new_y="NEXT")
    for a in summary.advice:
        label = f" · {a.label}" if a.label else ""
        pdf.set_font(FONT, "B", 8.5)
        pdf.multi_cell(0, 4.5, f"{a.drug} — {a.source} ({a.classification}){label}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(FONT, "", 8.5)
        pdf.multi_cell(0, 4.2, f"{a.recommendation}\n{a.guideline}: {a.url}", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
    pdf.ln(3)
    pdf.set_font(FONT, "", 7.5)
    pdf.multi_cell(0, 4, f"{words.FOOTER} Knowledge base {summary.knowledge_version}.", new_x="LMARGIN", new_y="NEXT")


def _card(pdf: FPDF, summary: PatientSummary, x: float, y: float) -> None:
    """Front and back side by side, each with a dashed line to cut along."""
    pdf.set_font(FONT, "", 9)
    pdf.text(x, y - 4, "Wallet card: cut along the dashed lines and fold in the middle.")
    pdf.set_dash_pattern(dash=1, gap=1)
    pdf.set_line_width(0.2)
    for left in (x, x + CARD_W):
        pdf.rect(left, y, CARD_W, CARD_H)
    pdf.set_dash_pattern()
    # front: the results
    pdf.set_xy(x + 3, y + 3)
    pdf.set_font(FONT, "B", 7)
    pdf.multi_cell(CARD_W - 6, 3.2, words.QR_TITLE + " — " + words.SHOW_PRESCRIBER, new_x="LEFT", new_y="NEXT",
                   align="L")
    texts = [words.result_line(line.result) for line in summary.lines]
    columns = 1 if len(texts) <= 11 else 2
    size = 5.2 if columns == 1 else 4.4
    pdf.set_font(FONT, "", size)
    per_column = -(-len(texts) // columns)
    top = pdf.get_y()
    width = (CARD_W - 6) / columns
    for c in range(columns):
        pdf.set_xy(x + 3 + c * width, top)
        for text in texts[c * per_column:(c + 1) * per_column]:
            pdf.multi_cell(width - 1, size * 0.4, text, new_x="LEFT", new_y="NEXT", align="L")
    pdf.set_xy(x + 3, y + CARD_H - 3 - size * 0.45 * len(summary.tested))
    for date, lab in summary.tested:
        pdf.multi_cell(CARD_W - 6, size * 0.45, words.tested_line(date, lab), new_x="LEFT", new_y="NEXT")
    # back: the QR code, drawn as squares (vector, sharp at any printer resolution)
    qr = qr_code(summary.qr_text)
    side = CARD_H - 12
    modules = qr.symbol_size(border=0)[0]
    cell = side / modules
    left, top = x + CARD_W + (CARD_W - side) / 2, y + 3
    pdf.set_fill_color(0, 0, 0)
    for row_index, row in enumerate(qr.matrix):
        for col_index, dark in enumerate(row):
            if dark:
                pdf.rect(left + col_index * cell, top + row_index * cell, cell, cell, style="F")
    pdf.set_font(FONT, "", 6)
    pdf.set_xy(x + CARD_W + 3, top + side + 1.5)
    pdf.multi_cell(CARD_W - 6, 3, words.CARD_SCAN, align="C")
