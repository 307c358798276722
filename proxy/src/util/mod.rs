//! Small shared helpers with no Sluice dependencies of their own: the clock, the hash and
//! globs. Every module may import them; they import nothing of Sluice.

pub mod clock;
pub mod glob;
pub mod hash;
