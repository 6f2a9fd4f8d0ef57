"""Tenants: virtual keys, teams, USD budgets, the cost ledger and sticky sessions.

The records and their JSON (``records``), the cached lookup of a presented key
(``directory``: the auth stage's half), what the admin API does (``admin``),
budget counters and a request's maximum cost (``budget``: the limit stage's half),
cost by token class and the ledger (``ledger``: the settle stage's half), and
sticky sessions (``sessions``: the route stage's half). Storage goes through
``store.base.TenantStore``; nothing here knows which backend holds it.
"""
