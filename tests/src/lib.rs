//! Harness for system tests.
