//! torch-compatible random numbers (placeholder until written).
