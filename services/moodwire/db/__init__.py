"""The database: tables (``tables``), engines (``engine``), migrations (``migrate``)."""
