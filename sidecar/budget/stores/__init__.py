"""Where budgets and spend are kept: SQLite (embedded), Redis (shared ledger), PostgreSQL
(shared spend log). Each one speaks the interfaces of `ledger.py` and `spendlog.py`."""
