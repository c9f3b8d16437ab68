"""The SMART app behind the cards' "Open pharmacogenomic summary" link (see views.py)."""
from cds.smartapp.views import smartapp

__all__ = ["smartapp"]
