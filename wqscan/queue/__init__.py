"""The ingestion queue: how a scan's operations are merged into it (`writes.py`), how
consumers claim and finish its rows (`consumer.py`), and what `queue list` and `queue
stats` show (`info.py`)."""
