//! The module map in `docs/architecture.md` holds the code: every `crate::x` a module of
//! `proxy/src` names must be in its row's "may import" list, every module has a row, and the
//! allowed arrows form no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// module -> allowed imports, from the table under "## Modules".
fn table() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let section = doc
        .split("## Modules (`proxy/src/`)")
        .nth(1)
        .expect("a Modules section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut map = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
        assert_eq!(
            cells.len(),
            3,
            "a row needs module | owns | may import: {line}"
        );
        let module = cells[0]
            .trim()
            .trim_matches('`')
            .trim_end_matches('/')
            .trim_end_matches(".rs")
            .to_owned();
        let allowed: BTreeSet<String> = cells[2]
            .split(',')
            .map(|c| {
                c.trim()
                    .trim_end_matches('|')
                    .trim()
                    .trim_matches('`')
                    .to_owned()
            })
            .filter(|c| !c.is_empty() && c != "nothing")
            .collect();
        assert!(
            map.insert(module.clone(), allowed).is_none(),
            "{module} listed twice"
        );
    }
    map
}

/// module -> the Sluice modules its code names (comments left out).
fn code() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("proxy/src");
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let module = first.trim_end_matches(".rs").to_owned();
            if module == "lib" {
                continue;
            }
            let names = map.entry(module.clone()).or_default();
            let text = std::fs::read_to_string(&path).unwrap();
            let prefix = if module == "main" {
                "sluice::"
            } else {
                "crate::"
            };
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or("");
                let mut rest = code;
                while let Some(i) = rest.find(prefix) {
                    rest = &rest[i + prefix.len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != module {
                        names.insert(name);
                    }
                }
                // `use crate::{a::X, b}`
                if let Some(i) = code.find(&format!("use {prefix}{{")) {
                    let list = &code[i + prefix.len() + 5..];
                    for item in list.split(',') {
                        let name: String = item
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                            .collect();
                        if !name.is_empty() && name != module && name != "self" {
                            names.insert(name);
                        }
                    }
                }
            }
        }
    }
    map
}

#[test]
fn every_module_imports_only_what_the_map_allows() {
    let table = table();
    let code = code();
    let mut problems = Vec::new();
    for (module, names) in &code {
        let Some(allowed) = table.get(module) else {
            problems.push(format!("{module}: no row in docs/architecture.md"));
            continue;
        };
        for n in names.difference(allowed) {
            problems.push(format!(
                "{module} imports {n}, which its row does not allow"
            ));
        }
    }
    for module in table.keys() {
        if !code.contains_key(module) {
            problems.push(format!("{module}: listed in the map but not in proxy/src"));
        }
    }
    assert!(problems.is_empty(), "module map:\n{}", problems.join("\n"));
}

#[test]
fn the_allowed_arrows_have_no_cycle_but_the_known_ones() {
    let table = table();
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(m) = stack.pop() {
            for n in table.get(&m).into_iter().flatten() {
                if n == to {
                    return true;
                }
                if seen.insert(n.clone()) {
                    stack.push(n.clone());
                }
            }
        }
        false
    };
    let mut cycles = BTreeSet::new();
    for (a, allowed) in &table {
        for b in allowed {
            if reaches(b, a) {
                let (x, y) = if a < b { (a, b) } else { (b, a) };
                cycles.insert((x.clone(), y.clone()));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "modules that reach each other in the module map: {cycles:?}"
    );
}
