//! Maps a key path (`upstreams.api.backends[2].weight`) to the line and column where it is written,
//! so that every config problem can point at the file. Built from `toml_edit`'s span-keeping parse.

use std::collections::HashMap;
use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

/// Key path -> (line, column), both 1-based.
#[derive(Default)]
pub struct SpanIndex {
    spans: HashMap<String, (usize, usize)>,
}

impl SpanIndex {
    /// Index `text`; an unparsable text gives an empty index (the syntax error is reported
    /// separately).
    pub fn build(text: &str) -> Self {
        let mut idx = SpanIndex::default();
        if let Ok(doc) = ImDocument::parse(text) {
            let lines = LineIndex::new(text);
            idx.table("", doc.as_table(), &lines);
        }
        idx
    }

    fn record(&mut self, path: &str, span: Option<Range<usize>>, lines: &LineIndex) {
        if let Some(s) = span {
            self.spans
                .entry(path.to_owned())
                .or_insert_with(|| lines.locate(s.start));
        }
    }

    fn table(&mut self, path: &str, t: &Table, lines: &LineIndex) {
        for (k, item) in t.iter() {
            let p = join(path, k);
            // Prefer the key's own span: that is where a reader looks.
            let span = t.key(k).and_then(|key| key.span()).or_else(|| item.span());
            self.record(&p, span, lines);
            self.item(&p, item, lines);
        }
    }

    fn item(&mut self, path: &str, item: &Item, lines: &LineIndex) {
        match item {
            Item::Table(t) => self.table(path, t, lines),
            Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    self.record(&p, t.span(), lines);
                    self.table(&p, t, lines);
                }
            }
            Item::Value(v) => self.value(path, v, lines),
            Item::None => {}
        }
    }

    fn value(&mut self, path: &str, v: &Value, lines: &LineIndex) {
        match v {
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    self.record(&p, v.span(), lines);
                    self.value(&p, v, lines);
                }
            }
            Value::InlineTable(t) => {
                for (k, v) in t.iter() {
                    let p = join(path, k);
                    let span = t.key(k).and_then(|key| key.span()).or_else(|| v.span());
                    self.record(&p, span, lines);
                    self.value(&p, v, lines);
                }
            }
            _ => {}
        }
    }

    /// Where `path` is written, or where its closest written ancestor is.
    pub fn locate(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(l) = self.spans.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Byte offset -> 1-based line and column.
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    /// Index the line starts of `text`.
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    /// Line and column (1-based, column in bytes) of `offset`.
    pub fn locate(&self, offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|&s| s <= offset);
        (line, offset - self.starts[line - 1] + 1)
    }
}
