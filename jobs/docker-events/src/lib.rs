//! `docker-events` (being written).
