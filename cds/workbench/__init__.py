"""The pharmacist's workbench (web pages under /workbench); create_app registers this blueprint."""
from cds.workbench import governance_views  # noqa: F401  (registers the governance pages on the blueprint)
from cds.workbench.views import workbench

__all__ = ["workbench"]
