"""Negative-spike alerts: read the Redis per-minute aggregates, judge closed windows of
event time against each brand's baseline, store new alerts in Postgres and announce them
on the alerts topic."""
