//! Shoal messaging core.
