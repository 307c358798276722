//! `sluice import nginx` (issue 19): an nginx configuration turned into a Sluice one. The parser
//! of nginx's syntax (`parse.rs`: directives, blocks, quoting, comments, `include` with globs,
//! file:line of each directive), nginx's value forms (`values.rs`: times, sizes, `listen`,
//! `$variables` to templates) and the translation (`nginx.rs`: what each directive becomes, with
//! nginx's inheritance and defaults, and a note for each). Pure but for reading the files; the
//! command (`cli.rs`) writes the result and checks it as `--check` does.

pub mod nginx;
pub mod parse;
pub mod values;

use std::path::Path;

/// Read the nginx configuration at `path` (and its includes) and translate it.
pub fn nginx(path: &Path) -> Result<nginx::Import, parse::ParseError> {
    let directives = parse::parse_file(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_owned());
    Ok(nginx::translate(&directives, &base))
}
