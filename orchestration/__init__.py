"""Job kinds -> plans -> Celery canvas; the state machine; commands and queries."""
