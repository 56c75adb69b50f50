"""Methods that change what a run computes across steps (step-level reuse), beside ``attention/``."""
