"""The files a screening run writes, with their columns (shared by the workers that fill them and the
run that joins them; no decision code here, so the run can start its readers before importing it)."""

COLUMNS = {
    "actionable": ["patient", "drug", "gene", "phenotype", "classification", "recommendation_id", "rule",
                   "indicator", "guideline", "medication", "summary"],
    "testing": ["patient", "drug", "gene", "rule", "indicator", "medication", "summary"],
    "carriers": ["patient", "gene", "phenotype", "result", "diplotype", "priority", "drugs_with_guidance"],
    "unreadable": ["patient", "kind", "drug", "gene", "where", "reason"],
    "withheld": ["patient", "reason"],
    "no_card": ["patient", "drug", "reason"],
}
