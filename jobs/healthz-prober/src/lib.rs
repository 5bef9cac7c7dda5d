//! `healthz-prober` (being written).
