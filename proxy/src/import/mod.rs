//! `sluice import nginx` (issue 19): turning an nginx configuration into a Sluice one. So far
//! the parser of nginx's syntax (`parse.rs`: directives, blocks, quoting, comments, `include`
//! with globs); the translation and the command come next (see issue 19).

pub mod parse;
