//! The access log: one line per request in a configurable format ([`format`]), written off the
//! request thread by a bounded, dropping writer ([`sink`]). Pure of the proxy: the edge fills an
//! [`Entry`] from its request state and hands the rendered line to the [`Sink`].

pub mod format;
pub mod sink;

pub use format::{Entry, Field, Format};
pub use sink::{Destination, Sink};
