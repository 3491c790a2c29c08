//! CLI integration tests
