//! nginx's configuration syntax, as `ngx_conf_file.c` reads it: directives of words ended by `;`
//! or followed by a `{ ... }` block, `#` comments (at the start of a word), words quoted with
//! `"` or `'` (with `\` escapes) or bare (with `\` escaping the next character), and `include`
//! expanded where it stands (a glob in the file name matches any number of files, sorted; a
//! relative path is taken from the main file's directory, as nginx takes it from its prefix).
//! Every directive keeps the file and line it came from, for the importer's comments.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One directive: `name arg...;` or `name arg... { block }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Its name (the first word).
    pub name: String,
    /// The other words, unquoted and unescaped.
    pub args: Vec<String>,
    /// The directives of its `{ ... }` block (`None`: it ended with `;`).
    pub block: Option<Vec<Directive>>,
    /// The file it is written in.
    pub file: Arc<PathBuf>,
    /// The line its name is on (1-based).
    pub line: usize,
}

/// Why a configuration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct ParseError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// The line (1-based).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// How deep `include` may nest (an include cycle ends here).
const MAX_INCLUDE_DEPTH: usize = 32;

/// Parse the file at `path` and every file it includes.
pub fn parse_file(path: &Path) -> Result<Vec<Directive>, ParseError> {
    let base = path.parent().unwrap_or(Path::new(".")).to_owned();
    parse_included(path, &base, 0)
}

/// Parse `text` as if read from `path` (includes are resolved against `path`'s directory).
pub fn parse_str(text: &str, path: &Path) -> Result<Vec<Directive>, ParseError> {
    let base = path.parent().unwrap_or(Path::new(".")).to_owned();
    Parser::new(text, Arc::new(path.to_owned()), &base, 0).parse_all()
}

fn parse_included(path: &Path, base: &Path, depth: usize) -> Result<Vec<Directive>, ParseError> {
    let text = std::fs::read_to_string(path).map_err(|e| ParseError {
        file: path.to_owned(),
        line: 0,
        message: format!("cannot read: {e}"),
    })?;
    Parser::new(&text, Arc::new(path.to_owned()), base, depth).parse_all()
}

/// A token: a word (and whether it was quoted, so that a quoted `{` is a word) or punctuation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
}

struct Parser<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    file: Arc<PathBuf>,
    base: &'a Path,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, file: Arc<PathBuf>, base: &'a Path, depth: usize) -> Self {
        Parser {
            chars: text.chars().peekable(),
            line: 1,
            file,
            base,
            depth,
        }
    }

    fn error(&self, line: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            file: (*self.file).clone(),
            line,
            message: message.into(),
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next();
        if c == Some('\n') {
            self.line += 1;
        }
        c
    }

    /// The next token and the line it starts on (`None` at the end of the text).
    fn token(&mut self) -> Result<Option<(Token, usize)>, ParseError> {
        loop {
            match self.chars.peek() {
                None => return Ok(None),
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('#') => {
                    while let Some(c) = self.bump() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                Some(_) => break,
            }
        }
        let line = self.line;
        let Some(c) = self.bump() else {
            return Ok(None);
        };
        let token = match c {
            ';' => Token::Semicolon,
            '{' => Token::Open,
            '}' => Token::Close,
            '"' | '\'' => {
                let quote = c;
                let mut word = String::new();
                loop {
                    match self.bump() {
                        None => return Err(self.error(line, "unterminated quoted string")),
                        Some('\\') => match self.bump() {
                            None => return Err(self.error(line, "unterminated quoted string")),
                            // nginx keeps the backslash unless it escapes the quote or itself
                            // (or is one of \t \r \n).
                            Some(e) if e == quote || e == '\\' => word.push(e),
                            Some('t') => word.push('\t'),
                            Some('r') => word.push('\r'),
                            Some('n') => word.push('\n'),
                            Some(e) => {
                                word.push('\\');
                                word.push(e);
                            }
                        },
                        Some(ch) if ch == quote => break,
                        Some(ch) => word.push(ch),
                    }
                }
                // A quoted word must be followed by a separator.
                match self.chars.peek().copied() {
                    None => {}
                    Some(n) if n.is_whitespace() || matches!(n, ';' | '{' | '}') => {}
                    Some(n) => {
                        return Err(self
                            .error(self.line, format!("unexpected `{n}` after a quoted string")))
                    }
                }
                Token::Word(word)
            }
            first => {
                let mut word = String::new();
                let mut c = first;
                loop {
                    if c == '\\' {
                        word.push('\\');
                        if let Some(e) = self.bump() {
                            word.push(e);
                        }
                    } else if c == '$' && self.chars.peek() == Some(&'{') {
                        // `${var}` keeps its braces inside a word.
                        word.push('$');
                        while let Some(b) = self.bump() {
                            word.push(b);
                            if b == '}' {
                                break;
                            }
                        }
                    } else {
                        word.push(c);
                    }
                    match self.chars.peek() {
                        None => break,
                        Some(n) if n.is_whitespace() || matches!(n, ';' | '{' | '}') => break,
                        Some(_) => {}
                    }
                    let Some(next) = self.bump() else { break };
                    c = next;
                }
                Token::Word(word)
            }
        };
        Ok(Some((token, line)))
    }

    fn parse_all(&mut self) -> Result<Vec<Directive>, ParseError> {
        let out = self.parse_block(None)?;
        Ok(out)
    }

    /// Directives until the end of the text (`open` is `None`) or the `}` closing the block
    /// opened on line `open`.
    fn parse_block(&mut self, open: Option<usize>) -> Result<Vec<Directive>, ParseError> {
        let mut out = Vec::new();
        loop {
            let Some((token, line)) = self.token()? else {
                return match open {
                    None => Ok(out),
                    Some(l) => {
                        Err(self.error(l, "unexpected end of file: this `{` is never closed"))
                    }
                };
            };
            let name = match token {
                Token::Word(w) => w,
                Token::Close if open.is_some() => return Ok(out),
                Token::Close => return Err(self.error(line, "unexpected `}`")),
                Token::Semicolon => return Err(self.error(line, "unexpected `;`")),
                Token::Open => return Err(self.error(line, "unexpected `{`")),
            };
            let mut args = Vec::new();
            let block = loop {
                match self.token()? {
                    None => {
                        return Err(self.error(
                            line,
                            format!("unexpected end of file: `{name}` is not ended by `;` or `{{`"),
                        ))
                    }
                    Some((Token::Word(w), _)) => args.push(w),
                    Some((Token::Semicolon, _)) => break None,
                    Some((Token::Open, l)) => break Some(self.parse_block(Some(l))?),
                    Some((Token::Close, l)) => {
                        return Err(
                            self.error(l, format!("unexpected `}}`: `{name}` is not ended by `;`"))
                        )
                    }
                }
            };
            if name == "include" && block.is_none() {
                out.extend(self.include(&args, line)?);
                continue;
            }
            out.push(Directive {
                name,
                args,
                block,
                file: Arc::clone(&self.file),
                line,
            });
        }
    }

    /// The directives of `include PATTERN;` at `line`.
    fn include(&self, args: &[String], line: usize) -> Result<Vec<Directive>, ParseError> {
        let [pattern] = args else {
            return Err(self.error(line, "`include` takes one file name or pattern"));
        };
        if self.depth >= MAX_INCLUDE_DEPTH {
            return Err(self.error(
                line,
                format!("includes nest deeper than {MAX_INCLUDE_DEPTH} (an include cycle?)"),
            ));
        }
        let path = Path::new(pattern);
        let full = if path.is_absolute() {
            path.to_owned()
        } else {
            self.base.join(path)
        };
        let files = if pattern.contains(['*', '?', '[']) {
            glob_files(&full).map_err(|e| self.error(line, e))?
        } else {
            if !full.is_file() {
                return Err(self.error(
                    line,
                    format!("included file `{}` does not exist", full.display()),
                ));
            }
            vec![full]
        };
        let mut out = Vec::new();
        for f in files {
            out.extend(parse_included(&f, self.base, self.depth + 1)?);
        }
        Ok(out)
    }
}

/// The files matching `pattern` (a glob in its last component), sorted; none is not an error
/// (as in nginx).
fn glob_files(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let dir = pattern.parent().unwrap_or(Path::new("."));
    let name = pattern
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("`{}` has no file name", pattern.display()))?;
    if dir.to_string_lossy().contains(['*', '?', '[']) {
        return Err(format!(
            "`{}`: a pattern is only supported in the file name",
            pattern.display()
        ));
    }
    let matcher = globset::GlobBuilder::new(name)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("`{name}`: {e}"))?
        .compile_matcher();
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .filter(|p| p.file_name().is_some_and(|n| matcher.is_match(n)))
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Directive> {
        parse_str(text, Path::new("/etc/nginx/nginx.conf")).unwrap()
    }

    fn err(text: &str) -> ParseError {
        parse_str(text, Path::new("/etc/nginx/nginx.conf")).unwrap_err()
    }

    fn shape(d: &[Directive]) -> Vec<(String, Vec<String>, usize)> {
        d.iter()
            .map(|d| (d.name.clone(), d.args.clone(), d.line))
            .collect()
    }

    /// nginx.org's "Full Example Configuration" (abridged to the parts with every syntax form).
    const FULL_EXAMPLE: &str = r#"user       www www;  ## Default: nobody
worker_processes  5;  ## Default: 1
error_log  logs/error.log;
pid        logs/nginx.pid;
worker_rlimit_nofile 8192;

events {
  worker_connections  4096;  ## Default: 1024
}

http {
  default_type application/octet-stream;
  log_format   main '$remote_addr - $remote_user [$time_local]  $status '
    '"$request" $body_bytes_sent "$http_referer" '
    '"$http_user_agent" "$http_x_forwarded_for"';
  access_log   logs/access.log  main;
  sendfile     on;
  tcp_nopush   on;
  server_names_hash_bucket_size 128; # this seems to be required for some vhosts

  server { # php/fastcgi
    listen       80;
    server_name  domain1.com www.domain1.com;
    access_log   logs/domain1.access.log  main;
    root         html;

    location ~ \.php$ {
      fastcgi_pass   127.0.0.1:1025;
    }
  }

  upstream big_server_com {
    server 127.0.0.3:8000 weight=5;
    server 127.0.0.3:8001 weight=5;
    server 192.168.0.1:8000;
    server 192.168.0.1:8001;
  }

  server { # simple load balancing
    listen          80;
    server_name     big.server.com;
    access_log      logs/big.server.access.log main;

    location / {
      proxy_pass      http://big_server_com;
    }
  }
}
"#;

    #[test]
    fn the_full_example_of_the_nginx_documentation_parses() {
        let d = parse(FULL_EXAMPLE);
        assert_eq!(
            shape(&d[..5]),
            [
                ("user".into(), vec!["www".into(), "www".into()], 1),
                ("worker_processes".into(), vec!["5".into()], 2),
                ("error_log".into(), vec!["logs/error.log".into()], 3),
                ("pid".into(), vec!["logs/nginx.pid".into()], 4),
                ("worker_rlimit_nofile".into(), vec!["8192".into()], 5),
            ]
        );
        let http = &d[6];
        assert_eq!((http.name.as_str(), http.line), ("http", 11));
        let body = http.block.as_ref().unwrap();
        let log_format = &body[1];
        assert_eq!(log_format.args.len(), 4, "{:?}", log_format.args);
        assert_eq!(log_format.args[0], "main");
        assert_eq!(
            log_format.args[2],
            "\"$request\" $body_bytes_sent \"$http_referer\" "
        );
        let server = body.iter().find(|d| d.name == "server").unwrap();
        assert_eq!(server.line, 21);
        let location = server.block.as_ref().unwrap().last().unwrap();
        assert_eq!(location.args, ["~", "\\.php$"]);
        let upstream = body.iter().find(|d| d.name == "upstream").unwrap();
        assert_eq!(upstream.args, ["big_server_com"]);
        assert_eq!(upstream.block.as_ref().unwrap().len(), 4);
        assert_eq!(
            upstream.block.as_ref().unwrap()[0].args,
            ["127.0.0.3:8000", "weight=5"]
        );
    }

    #[test]
    fn quoting_escapes_variables_and_comments() {
        let d = parse(
            "add_header X-A \"a;b{c}\" always;\n\
             return 301 https://$host$request_uri;\n\
             set $x 'it\\'s';\n\
             rewrite ^/(.*)$ /new/$1 break; # a comment; with { braces }\n\
             proxy_set_header Host ${host}:8080;\n\
             location ~* \\.(gif|jpg)$ { expires 30d; }\n\
             a#b c;\n",
        );
        assert_eq!(d[0].args, ["X-A", "a;b{c}", "always"]);
        assert_eq!(d[1].args, ["301", "https://$host$request_uri"]);
        assert_eq!(d[2].args, ["$x", "it's"]);
        assert_eq!(d[3].args, ["^/(.*)$", "/new/$1", "break"]);
        assert_eq!(d[4].args, ["Host", "${host}:8080"]);
        assert_eq!(d[5].args, ["~*", "\\.(gif|jpg)$"]);
        assert_eq!(d[5].block.as_ref().unwrap()[0].args, ["30d"]);
        // `#` inside a word is not a comment.
        assert_eq!(d[6].name, "a#b");
        assert_eq!(d.len(), 7);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(err("http {\n  server {\n  }\n").line, 1);
        assert!(err("http {\n").message.contains("never closed"));
        assert_eq!(err("a;\n}\n").line, 2);
        let e = err("listen 80\n");
        assert!(e.message.contains("not ended by"), "{e}");
        assert_eq!(err("a \"b;\n\n").line, 1);
        assert!(err("a \"b\"c;").message.contains("after a quoted string"));
        assert_eq!(err("a;\n;\n").line, 2);
        let e = err("x {\n y\n}\n");
        assert_eq!((e.line, e.message.contains("`y`")), (3, true), "{e}");
        assert_eq!(
            err("a;\n}").to_string(),
            "/etc/nginx/nginx.conf:2: unexpected `}`"
        );
    }

    #[test]
    fn includes_expand_in_place_with_globs_from_the_main_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("conf.d")).unwrap();
        std::fs::write(
            d.join("nginx.conf"),
            "events {}\nhttp {\n  include mime.types;\n  include conf.d/*.conf;\n  include none/*.conf;\n}\n",
        )
        .unwrap();
        std::fs::write(d.join("mime.types"), "types { text/html html; }\n").unwrap();
        std::fs::create_dir(d.join("none")).unwrap();
        // Relative to the main file's directory, even from an included file.
        std::fs::write(
            d.join("conf.d/b.conf"),
            "server { listen 82; include snippets/x; }\n",
        )
        .unwrap();
        std::fs::write(d.join("conf.d/a.conf"), "server { listen 81; }\n").unwrap();
        std::fs::write(d.join("conf.d/skip.txt"), "broken {").unwrap();
        std::fs::create_dir(d.join("snippets")).unwrap();
        std::fs::write(d.join("snippets/x"), "add_header X-From snippet;\n").unwrap();
        let parsed = parse_file(&d.join("nginx.conf")).unwrap();
        let http = parsed[1].block.as_ref().unwrap();
        let names: Vec<(&str, String)> = http
            .iter()
            .map(|x| {
                (
                    x.name.as_str(),
                    x.file.file_name().unwrap().to_string_lossy().into_owned(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("types", "mime.types".to_owned()),
                ("server", "a.conf".to_owned()),
                ("server", "b.conf".to_owned())
            ]
        );
        let b = http[2].block.as_ref().unwrap();
        assert_eq!(b[1].name, "add_header");
        assert_eq!(b[1].file.file_name().unwrap(), "x");
        assert_eq!(b[1].line, 1);

        // A missing plain file is an error naming where it was included; a cycle ends.
        std::fs::write(d.join("bad.conf"), "a;\ninclude missing.conf;\n").unwrap();
        let e = parse_file(&d.join("bad.conf")).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("missing.conf"), "{e}");
        std::fs::write(d.join("loop.conf"), "include loop.conf;\n").unwrap();
        let e = parse_file(&d.join("loop.conf")).unwrap_err();
        assert!(e.message.contains("cycle"), "{e}");
    }

    /// A short deterministic fuzz of the syntax's special characters (the long one is
    /// `scripts/fuzz.sh nginx_parse`): no panic, and every error on a line of the text.
    #[test]
    fn arbitrary_punctuation_never_panics() {
        let alphabet = [
            '{', '}', ';', '"', '\'', '\\', '#', '$', 'a', ' ', '\n', 'é',
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut text = String::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for _ in 0..(x % 24) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                text.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            if let Err(e) = parse_str(&text, Path::new("/nonexistent/nginx.conf")) {
                assert!(
                    e.line >= 1 && e.line <= text.lines().count() + 1,
                    "{text:?}: {e}"
                );
            }
        }
    }
}
