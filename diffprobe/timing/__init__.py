"""Timing, apart from counting: one clock, the stage timer and the per-op timer that fills the record table's time
columns after a traced run."""
