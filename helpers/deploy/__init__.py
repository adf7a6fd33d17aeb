"""Lab 05 — hybrid deployment: a local open model and a paid API behind one router (in progress).

- ``helpers.deploy.upstream``  a faithful stand-in for a paid chat-completions API on loopback (latency, faults)
- ``helpers.deploy.ledger``    the cost ledger in SQLite (WAL): one row per request, idempotent, crash-safe;
                               the monthly budget reserved before and settled after each paid call
- ``helpers.deploy.pii``       personal data found with Presidio offline (plus the kit's phone formats), redaction, recall
- ``helpers.deploy.router``    policy as data (TOML), PII stays local, hard requests escalate, retries with backoff
                               honouring Retry-After, circuit breakers, fallbacks, one ledger row per request
- ``helpers.deploy.difficulty`` the difficulty score, learned from the dataset's labels (accuracy with an interval)

Still to come (issue 10): the traffic simulation, the notebook, claims C15/C16, the README's scale-out example.
"""
from . import difficulty, ledger, pii, router, upstream  # noqa: F401
