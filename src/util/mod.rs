//! Small shared helpers: atomic file writes, f32 config values serialized as written.

pub mod atomic;
pub mod shortest_f32;
