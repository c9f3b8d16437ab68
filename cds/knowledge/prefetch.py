"""The project's own tokens in the prefetch templates of hooks/*.yaml, expanded once at load.

`{{pgx.genomicCodes}}` becomes the Observation codes the FHIR reader reads (guidelines/fhir-mappings.yaml:
`observation_kinds`, `lab_codes` and `text_coded_results`), comma-separated as FHIR token search ORs them (FHIR R4
search.html#token, "system|code"); `{{pgx.reportCategories}}` and `{{pgx.reportCodes}}` become the
categories and codes Genomics Reports are searched by (`genomic_report_categories`, `genomic_report_codes`).
So the codes the EHR prefetches, the codes the service searches on its fhirServer and the codes the reader
understands are one set: a site adds a laboratory code once, in the mappings. Discovery shows the expanded
templates (CDS Hooks 2.0 knows only `{{context.*}}` and `{{userPractitionerId}}`-style tokens, so no `pgx.`
token may reach an EHR).
"""
from __future__ import annotations

import re
from collections.abc import Callable

from cds.fhir.mappings import FhirMappings

_TOKEN = re.compile(r"\{\{\s*(pgx\.[^}\s]+)\s*\}\}")


def genomic_search_codes(mappings: FhirMappings) -> list[str]:
    """Every Observation.code the reader reads, as `system|code`, in the mappings file's order: the
    result kinds, the laboratory codes with their gene, and the result codes read by their own wording."""
    codes = list(mappings.observation_kinds) + list(mappings.lab_codes) + list(mappings.text_coded_results)
    return list(dict.fromkeys(f"{system}|{code}" for system, code in codes))


def _tokens(codes: tuple[tuple[str, str], ...]) -> str:
    return ",".join(dict.fromkeys(f"{system}|{code}" for system, code in codes))


TOKENS: dict[str, Callable[[FhirMappings], str]] = {
    "pgx.genomicCodes": lambda m: ",".join(genomic_search_codes(m)),
    # Genomics Reports: by category, and by report code in a second search (`genomic_report_*`)
    "pgx.reportCategories": lambda m: _tokens(m.genomic_report_categories),
    "pgx.reportCodes": lambda m: _tokens(m.genomic_report_codes),
}


class UnknownToken(ValueError):
    pass


def expand_template(template: str, mappings: FhirMappings) -> str:
    """`template` with every `{{pgx.*}}` token replaced; UnknownToken names one that is not defined."""
    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in TOKENS:
            raise UnknownToken(f"unknown prefetch token {{{{{name}}}}} (known: {', '.join(sorted(TOKENS))})")
        return TOKENS[name](mappings)
    return _TOKEN.sub(value, template)
