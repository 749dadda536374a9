//! Schedulers (placeholder until written).
