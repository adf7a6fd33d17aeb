"""Lab 05 — hybrid deployment: a local open model and a paid API behind one router .

- ``helpers.deploy.upstream``  a faithful stand-in for a paid chat-completions API on loopback (latency, faults)
- ``helpers.deploy.ledger``    the cost ledger at a database URL (SQLite WAL, or a shared PostgreSQL): one row per request,
                               idempotent, crash-safe;
                               the monthly budget reserved before and settled after each paid call
- ``helpers.deploy.pii``       personal data found with Presidio offline (plus the kit's phone formats), redaction, recall
- ``helpers.deploy.router``    policy as data (TOML), PII stays local, hard requests escalate, retries with backoff
                               honouring Retry-After, circuit breakers, fallbacks, one ledger row per request
- ``helpers.deploy.difficulty`` the difficulty score, learned from the dataset's labels (accuracy with an interval)
- ``helpers.deploy.desk``      the desk's model (Lab 03's tuned one, else the base with a note), its task prompt, and
                               triage accuracy per route (a stand-in's route is "not measured")
- ``helpers.deploy.traffic``   a seeded day of support-desk traffic replayed against the router, its bill and PII audit
- ``helpers.deploy.claims``    C15 and C16 tested with the day's measurements
"""
from . import claims, desk, difficulty, ledger, pii, router, traffic, upstream  # noqa: F401
