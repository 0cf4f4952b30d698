//! Deterministic simulator for Shoal's sans-IO protocol cores.
