"""pgx-cds: pharmacogenomic clinical decision support over CDS Hooks."""

__version__ = "0.1.0"
