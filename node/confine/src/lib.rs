//! Confinement primitives for Archy's process runtime (being written).
