"""The experience store: one SQLite file holding libraries, their versions, attempts, jobs and the ledger."""

from ted.store.store import Store

__all__ = ["Store"]
