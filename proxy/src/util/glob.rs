//! Globs over URLs and query-parameter names, on the `globset` crate and compiled once: `*`
//! matches any run of characters (`/` included) and `?` exactly one. Every other character is
//! literal, so names such as `filter[x]` or `a{b}` and URLs with `\` mean themselves: globset's
//! classes (`[...]`), alternations (`{a,b}`) and escapes are not used, which keeps the meaning
//! Sluice's globs always had.

use globset::{GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

/// `pattern` with globset's class and alternation brackets made literal (each as a
/// one-character class); with backslash escapes off, `\` is literal already.
fn literal_except_wildcards(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    for c in pattern.chars() {
        match c {
            '[' | ']' | '{' | '}' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            _ => out.push(c),
        }
    }
    out
}

fn glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    GlobBuilder::new(&literal_except_wildcards(pattern))
        .literal_separator(false)
        .backslash_escape(false)
        .empty_alternates(false)
        .build()
}

/// One glob, compiled (a purge pattern, used over every stored URL).
pub fn matcher(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    Ok(glob(pattern)?.compile_matcher())
}

/// Any of `patterns`, compiled into one set (the cache key's ignored parameters).
pub fn set(patterns: &[String]) -> Result<GlobSet, globset::Error> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(glob(p)?);
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is(pattern: &str, text: &str) -> bool {
        matcher(pattern).unwrap().is_match(text)
    }

    #[test]
    fn star_and_question_mark_only() {
        assert!(is("http://h/api/*", "http://h/api/x?y=1"));
        assert!(is("*/img/*.png", "https://h/img/a.png"));
        assert!(!is("*/img/*.png", "https://h/img/a.jpg"));
        assert!(is("http://h/?", "http://h/a"));
        assert!(!is("http://h/?", "http://h/ab"));
        assert!(is("*", ""));
        assert!(is("utm_*", "utm_source"));
        assert!(!is("utm_*", "xutm_source"));
    }

    #[test]
    fn brackets_braces_and_backslashes_are_literal() {
        assert!(is("filter[x]", "filter[x]"));
        assert!(!is("filter[x]", "filterx"));
        assert!(is("filter[*]", "filter[a]"));
        assert!(is("{a,b}", "{a,b}"));
        assert!(!is("{a,b}", "a"));
        assert!(is(r"a\*", r"a\bc"));
        assert!(is("[!x]", "[!x]"));
    }

    #[test]
    fn a_set_matches_any_member() {
        let s = set(&["utm_*".into(), "fbclid".into(), "f[x]".into()]).unwrap();
        assert!(s.is_match("utm_medium"));
        assert!(s.is_match("fbclid"));
        assert!(s.is_match("f[x]"));
        assert!(!s.is_match("page"));
    }
}
