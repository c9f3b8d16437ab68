"""pgx-cds: pharmacogenomic clinical decision support over CDS Hooks."""

# The one place the version is written: the package metadata (pyproject's dynamic version), `cds --version`
# and the OpenAPI document read it. CHANGELOG.md says what each version changed.
__version__ = "0.2.0"
