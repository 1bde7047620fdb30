//! Small shared helpers: atomic file writes, f32 config values serialized as written, counts in words,
//! and the provenance of results (build, machine, GPU; UTC timestamps).

pub mod atomic;
pub mod provenance;
pub mod shortest_f32;
pub mod text;
