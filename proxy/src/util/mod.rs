//! Small shared helpers with no Sluice dependencies of their own: the clock and the hash. Every
//! module may import them; they import nothing of Sluice.

pub mod clock;
pub mod hash;
