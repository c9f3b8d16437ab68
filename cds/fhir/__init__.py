"""Reading FHIR R4: pharmacogenomic results and medication orders, as facts (cds/facts.py).

    reading = read_genomic_results(resources)          # Bundles, DiagnosticReports, Observations
    current = select_current(reading.results)          # which results count, conflicts
    resolver = MedicationResolver(ingredients)          # once at start-up
    orders = resolver.read_orders(draft_orders, extra_resources=prefetched)

See docs/fhir-reading.md for the shapes read and how a site adds its laboratory's codes.
"""
from cds.fhir.genomics import GenomicReader, GenomicReading, read_genomic_results
from cds.fhir.mappings import FhirMappings, default_mappings, load_mappings
from cds.fhir.medications import MedicationResolver, load_product_table
from cds.fhir.selection import CurrentResults, select_current

__all__ = [
    "CurrentResults", "FhirMappings", "GenomicReader", "GenomicReading", "MedicationResolver",
    "default_mappings", "load_mappings", "load_product_table", "read_genomic_results", "select_current",
]
