//! `inspect-cron` (being written).
