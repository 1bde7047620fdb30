//! Small shared helpers: atomic file writes, f32 config values serialized as written, counts in words.

pub mod atomic;
pub mod shortest_f32;
pub mod text;
