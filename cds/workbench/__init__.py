"""The pharmacist's workbench (web pages under /workbench); create_app registers this blueprint."""
from cds.workbench.views import workbench

__all__ = ["workbench"]
