"""The printable monthly sheet (fiche mensuelle, maandfiche), shared by the node (``quartier sheet``,
from its own store) and the community server (``quartier community sheets``, from the ledger, for
members without a Pi). Pure figures and rendering (PDF: ``services.pdf``); no store of either side.
"""
