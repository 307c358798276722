//! Small shared helpers with no Sluice dependencies of their own: the allocator, the clock, the
//! hash, globs, IP text and the request path's random ids. Every module may import them; they import nothing of Sluice.

pub mod alloc;
pub mod clock;
pub mod glob;
pub mod hash;
pub mod ip;
pub mod rng;
