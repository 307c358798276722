//! nginx's value syntax, pure: times (`10s`, `1h30m`, `500ms`), sizes (`10m`, `1k`), `listen`
//! parameters, `$variables` in header values and redirect targets (to Sluice templates), and
//! rewrite replacements (`$1` to `${1}`).

/// A time as nginx reads it (`ngx_parse_time`): a sequence of number+unit (`ms`, `s`, `m`, `h`,
/// `d`, `w`, `M`, `y`), a bare number being seconds. In milliseconds.
pub fn time_ms(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            match rest.chars().next() {
                None => (1000, 0),
                Some('s') => (1000, 1),
                Some('m') => (60_000, 1),
                Some('h') => (3_600_000, 1),
                Some('d') => (86_400_000, 1),
                Some('w') => (604_800_000, 1),
                Some('M') => (2_592_000_000, 1),
                Some('y') => (31_536_000_000, 1),
                Some(_) => return None,
            }
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[len..];
    }
    Some(total)
}

/// A size as nginx reads it (`ngx_parse_size`): a number with an optional `k`, `m` or `g`.
pub fn size_bytes(text: &str) -> Option<u64> {
    let (num, mult) = match text.chars().last()? {
        'k' | 'K' => (&text[..text.len() - 1], 1024),
        'm' | 'M' => (&text[..text.len() - 1], 1024 * 1024),
        'g' | 'G' => (&text[..text.len() - 1], 1024 * 1024 * 1024),
        _ => (text, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// One `listen` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// `ip:port` for Sluice (`*` and a bare port become `0.0.0.0`).
    pub addr: String,
    /// `ssl`.
    pub ssl: bool,
    /// `http2` (on a plain listener: h2c with prior knowledge).
    pub http2: bool,
    /// `default_server` (or the old `default`).
    pub default: bool,
    /// Parameters Sluice has no equivalent of (`proxy_protocol`, `quic`).
    pub unsupported: Vec<String>,
}

/// Parse `listen`'s arguments.
pub fn listen(args: &[String]) -> Result<Listen, String> {
    let Some(first) = args.first() else {
        return Err("listen without an address".into());
    };
    if first.starts_with("unix:") {
        return Err("unix sockets are not supported".into());
    }
    let addr = if first.chars().all(|c| c.is_ascii_digit()) {
        format!("0.0.0.0:{first}")
    } else if let Some(rest) = first.strip_prefix('[') {
        // [::]:80 or [::1]
        match rest.split_once(']') {
            Some((ip, "")) => format!("[{ip}]:80"),
            Some((ip, port)) => format!("[{ip}]{port}"),
            None => return Err(format!("bad address {first}")),
        }
    } else if let Some((host, port)) = first.rsplit_once(':') {
        let host = if host == "*" { "0.0.0.0" } else { host };
        format!("{host}:{port}")
    } else if first == "*" {
        "0.0.0.0:80".into()
    } else {
        format!("{first}:80")
    };
    let mut l = Listen {
        addr,
        ssl: false,
        http2: false,
        default: false,
        unsupported: Vec::new(),
    };
    for a in &args[1..] {
        match a.as_str() {
            "ssl" => l.ssl = true,
            "http2" => l.http2 = true,
            "default_server" | "default" => l.default = true,
            "proxy_protocol" | "quic" | "http3" => l.unsupported.push(a.clone()),
            // Socket tuning (backlog=, reuseport, rcvbuf=, so_keepalive=, ...): not needed.
            _ => {}
        }
    }
    Ok(l)
}

/// nginx variables with a Sluice template equivalent.
fn template_var(name: &str) -> Option<&'static str> {
    Some(match name {
        "host" => "{host}",
        "remote_addr" | "binary_remote_addr" => "{client_ip}",
        "scheme" => "{scheme}",
        "request_id" => "{request_id}",
        "request_uri" => "{uri}",
        _ => return None,
    })
}

/// Split `$name` / `${name}` out of an nginx value: literal text and variable names in order.
pub fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut lit = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let (start, end, next) = if b.get(i + 1) == Some(&b'{') {
                match text[i + 2..].find('}') {
                    Some(e) => (i + 2, i + 2 + e, i + 3 + e),
                    None => {
                        i += 1;
                        continue;
                    }
                }
            } else {
                // `$1`..`$9` are one digit (nginx's captures); names are [A-Za-z0-9_]+.
                let n = if b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    1
                } else {
                    text[i + 1..]
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(text.len() - i - 1)
                };
                (i + 1, i + 1 + n, i + 1 + n)
            };
            if end > start {
                if lit < i {
                    out.push(Piece::Lit(&text[lit..i]));
                }
                out.push(Piece::Var(&text[start..end]));
                i = next;
                lit = next;
                continue;
            }
        }
        i += 1;
    }
    if lit < b.len() {
        out.push(Piece::Lit(&text[lit..]));
    }
    out
}

/// A piece of an nginx value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Literal text.
    Lit(&'a str),
    /// A variable's name (without `$`).
    Var(&'a str),
}

/// An nginx value (header value, redirect target) as a Sluice template, or the first variable
/// that has no equivalent.
pub fn template(text: &str) -> Result<String, String> {
    let mut out = String::new();
    for p in pieces(text) {
        match p {
            Piece::Lit(s) => out.push_str(&s.replace('{', "{{").replace('}', "}}")),
            Piece::Var(v) => match template_var(v) {
                Some(t) => out.push_str(t),
                None => return Err(format!("${v}")),
            },
        }
    }
    Ok(out)
}

/// A rewrite replacement as the `to` of a Sluice `rewrite` (regex replacement syntax: `$1` is
/// written `${1}`, a literal `$` is `$$`), or the first variable that is not a capture.
pub fn replacement(text: &str) -> Result<String, String> {
    let mut out = String::new();
    for p in pieces(text) {
        match p {
            Piece::Lit(s) => out.push_str(&s.replace('$', "$$")),
            Piece::Var(v) if v.chars().all(|c| c.is_ascii_digit()) => {
                out.push_str("${");
                out.push_str(v);
                out.push('}');
            }
            Piece::Var(v) => return Err(format!("${v}")),
        }
    }
    Ok(out)
}

/// `rate=10r/s` / `rate=30r/m`: (requests, window in ms).
pub fn rate(text: &str) -> Option<(u64, u64)> {
    let t = text.strip_prefix("rate=")?;
    if let Some(n) = t.strip_suffix("r/s") {
        Some((n.parse().ok()?, 1000))
    } else if let Some(n) = t.strip_suffix("r/m") {
        Some((n.parse().ok()?, 60_000))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_sizes_read_as_nginx_reads_them() {
        assert_eq!(time_ms("60"), Some(60_000));
        assert_eq!(time_ms("10s"), Some(10_000));
        assert_eq!(time_ms("500ms"), Some(500));
        assert_eq!(time_ms("1h30m"), Some(5_400_000));
        assert_eq!(time_ms("3600s"), Some(3_600_000));
        assert_eq!(time_ms("1d"), Some(86_400_000));
        assert_eq!(time_ms("x"), None);
        assert_eq!(time_ms("10q"), None);
        assert_eq!(time_ms(""), None);
        assert_eq!(size_bytes("1m"), Some(1 << 20));
        assert_eq!(size_bytes("8k"), Some(8192));
        assert_eq!(size_bytes("0"), Some(0));
        assert_eq!(size_bytes("2G"), Some(2 << 30));
        assert_eq!(size_bytes("m"), None);
    }

    #[test]
    fn listen_forms() {
        let l = |s: &str| listen(&s.split(' ').map(String::from).collect::<Vec<_>>());
        assert_eq!(l("80").unwrap().addr, "0.0.0.0:80");
        assert_eq!(l("127.0.0.1:8080").unwrap().addr, "127.0.0.1:8080");
        assert_eq!(l("127.0.0.1").unwrap().addr, "127.0.0.1:80");
        assert_eq!(l("*:443").unwrap().addr, "0.0.0.0:443");
        assert_eq!(l("[::]:443").unwrap().addr, "[::]:443");
        assert_eq!(l("[::1]").unwrap().addr, "[::1]:80");
        let t = l("443 ssl http2 default_server reuseport backlog=511").unwrap();
        assert!(t.ssl && t.http2 && t.default && t.unsupported.is_empty());
        assert_eq!(
            l("80 proxy_protocol").unwrap().unsupported,
            ["proxy_protocol"]
        );
        assert!(l("unix:/run/x.sock").is_err());
    }

    #[test]
    fn variables_become_templates() {
        assert_eq!(
            template("https://$host$request_uri").unwrap(),
            "https://{host}{uri}"
        );
        assert_eq!(template("${scheme}x").unwrap(), "{scheme}x");
        assert_eq!(template("a{b}").unwrap(), "a{{b}}");
        assert_eq!(template("$remote_addr").unwrap(), "{client_ip}");
        assert_eq!(template("$http_cookie").unwrap_err(), "$http_cookie");
        assert_eq!(template("cost $").unwrap(), "cost $");
        assert_eq!(replacement("/new/$1").unwrap(), "/new/${1}");
        assert_eq!(replacement("/a$12b").unwrap(), "/a${1}2b");
        assert_eq!(replacement("/x/$uri").unwrap_err(), "$uri");
        assert_eq!(rate("rate=10r/s"), Some((10, 1000)));
        assert_eq!(rate("rate=30r/m"), Some((30, 60_000)));
        assert_eq!(rate("rate=1r/h"), None);
    }
}
