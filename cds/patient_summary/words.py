"""The patient summary's own words: the framing around the guidelines' statements, in one place.

Nothing here is a clinical statement: what a result means, and what to do, is CPIC's or DPWG's (the
phenotype term, the EHR priority, the recommendation), shown as they wrote it.
"""
from __future__ import annotations

TITLE = "Your pharmacogenomic test results"
INTRO = ("These are the results of a genetic test about how your body handles some medicines. "
         "Keep this with you.")
SHOW_PRESCRIBER = "Show this to whoever prescribes for you."
SHOW_PRESCRIBER_LONG = ("Show this to whoever prescribes for you (doctor, dentist, nurse or pharmacist) "
                        "before you start a new medicine.")
QR_TITLE = "Pharmacogenomic results"
CHANGES = "Medicines whose guideline advice changes with this result"
NO_CHANGE = "No medicine in these guidelines has advice that changes with this result."
NO_RESULT = "no result"
NOT_INTERPRETED = "not interpreted here"
NOT_GRADED = "not graded"
CONFLICT = "the results on file disagree; ask the laboratory"
FOR_PRESCRIBER = "For the person prescribing: the guidelines' advice for these results, in their own words"
ADVICE_NONE = "None of the guidelines' advice changes prescribing for these results."
CARD_SCAN = "Scan: the same results as text"
FOOTER = ("Decision support from the CPIC and DPWG guidelines (CPIC: cpicpgx.org, CC0; DPWG via PharmGKB/ClinPGx, "
          "CC BY-SA 4.0); not a substitute for clinical judgement.")


def result_line(result) -> str:
    """One result in one line, as the wallet card and its QR code carry it: the gene and what the
    guidelines call the result ('CYP2C19: Poor Metabolizer', 'CYP2D6: Intermediate Metabolizer, activity
    score 1.0', 'HLA-A: no result'). The diplotype and why a result is Indeterminate are on the page."""
    if result.no_result:
        return f"{result.gene}: {NO_RESULT}"
    meaning = result.phenotype or NOT_INTERPRETED
    if result.activity_score and result.activity_score not in meaning:
        meaning += f", activity score {result.activity_score}"
    return f"{result.gene}: {meaning}"


def tested_line(date: str | None, lab: str | None) -> str:
    return f"Tested {date or '(date not stated)'}, {lab or '(laboratory not stated)'}"
