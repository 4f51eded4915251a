//! The shape of the code: no crate under `host/` has a cycle among its top-level modules.
//!
//! A module `a` depends on `b` when any file of `a` names `crate::b` (also inside
//! `use crate::{…}` groups) or reaches `b` through enough `super::`s, outside comment
//! lines (a doc link is not a dependency). Written here rather
//! than taken from `cargo-modules`: that tool builds rust-analyzer (minutes of CI on two
//! cores) to answer a question a text scan answers exactly for this code base.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates' roots: every `lib.rs` and `main.rs` under `host/*/src`.
fn crate_roots() -> Vec<PathBuf> {
    let host = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host");
    let mut roots = Vec::new();
    for entry in std::fs::read_dir(&host).expect("host/ is readable") {
        let src = entry.expect("entry").path().join("src");
        for root in ["lib.rs", "main.rs"] {
            if src.join(root).is_file() {
                roots.push(src.join(root));
            }
        }
    }
    roots.sort();
    assert!(
        roots.len() >= 7,
        "expected the host crates, found {roots:?}"
    );
    roots
}

/// The modules a crate root declares in files of their own (`mod x;` / `pub mod x;`).
fn top_level_modules(root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root).expect("root is readable");
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("pub(crate) mod "))
                .or_else(|| line.strip_prefix("mod "))?;
            let name = rest.strip_suffix(';')?;
            Some(name.trim().to_owned())
        })
        .collect()
}

/// Every `.rs` file of a module, with its module path below the crate root.
fn module_files(src: &Path, module: &str) -> Vec<(PathBuf, Vec<String>)> {
    let mut files = Vec::new();
    let single = src.join(format!("{module}.rs"));
    if single.is_file() {
        files.push((single, vec![module.to_owned()]));
    }
    let dir = src.join(module);
    if dir.is_dir() {
        let mut stack = vec![(dir, vec![module.to_owned()])];
        while let Some((dir, path)) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("dir is readable") {
                let p = entry.expect("entry").path();
                let stem = p
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("")
                    .to_owned();
                if p.is_dir() {
                    let mut sub = path.clone();
                    sub.push(stem);
                    stack.push((p, sub));
                } else if p.extension().is_some_and(|e| e == "rs") {
                    let mut sub = path.clone();
                    if stem != "mod" {
                        sub.push(stem);
                    }
                    files.push((p, sub));
                }
            }
        }
    }
    files
}

fn identifier_at(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The names a file reaches at the crate root: `crate::x`, `crate::{x, y::z}`, and
/// `super::…::x` paths that climb to the root from the file's module path.
fn root_names(text: &str, module_path: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `weir_crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start => {
                        item_start = false;
                        names.insert(identifier_at(&group[i..]));
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(identifier_at(rest));
        }
    }
    // `super::` counted from the file's own module: one climbs to its parent.
    let mut rest = text;
    while let Some(at) = rest.find("super::") {
        let before = rest[..at].chars().next_back();
        let mut tail = &rest[at..];
        rest = &rest[at + "super::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // counted with the `super::` before it
        }
        let mut climbs = 0;
        while let Some(t) = tail.strip_prefix("super::") {
            climbs += 1;
            tail = t;
        }
        if climbs >= module_path.len() {
            names.insert(identifier_at(tail));
        }
    }
    names
}

/// The text without its comment lines (`//`, `///`, `//!`).
fn code_lines(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Strongly connected components with more than one module (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

/// One crate's module graph: each top-level module and the top-level modules it names.
fn module_graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let src = root.parent().expect("root is in src/");
    let modules = top_level_modules(root);
    let mut graph = BTreeMap::new();
    for module in &modules {
        let mut deps = BTreeSet::new();
        for (file, path) in module_files(src, module) {
            let text = std::fs::read_to_string(&file).expect("source is readable");
            let text = code_lines(&text);
            for name in root_names(&text, &path) {
                if &name != module && modules.contains(&name) {
                    deps.insert(name);
                }
            }
        }
        graph.insert(module.clone(), deps);
    }
    graph
}

#[test]
fn no_host_crate_has_a_cycle_among_its_top_level_modules() {
    let mut failures = Vec::new();
    for root in crate_roots() {
        let graph = module_graph(&root);
        for cycle in cycles(&graph) {
            let edges: Vec<String> = cycle
                .iter()
                .map(|m| {
                    let inside: Vec<&str> = graph[m]
                        .iter()
                        .filter(|d| cycle.contains(d))
                        .map(String::as_str)
                        .collect();
                    format!("{m} -> {}", inside.join(", "))
                })
                .collect();
            failures.push(format!("{}: {}", root.display(), edges.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "module cycles:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_check_finds_a_cycle_and_reads_groups_and_super_paths() {
    let names = root_names(
        "use crate::{a::X, b, c::{d, e}};\nuse super::super::f::G;\nlet x = crate::h::i();",
        &["m".into(), "n".into()],
    );
    let expected: BTreeSet<String> = ["a", "b", "c", "f", "h"].map(String::from).into();
    assert_eq!(names, expected);
    assert!(root_names(
        &code_lines("/// See [`crate::x`].\nfn f() {}"),
        &["m".into()]
    )
    .is_empty());
    // One `super::` from a nested file stays inside its own top-level module.
    assert!(root_names("use super::x;", &["m".into(), "n".into()]).is_empty());
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, deps)| (m.to_owned(), deps.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c"]]);
}

/// Every source kind the host hands filters (`source_kind: "…"` in `host/`) is one that
/// `wit/filter.wit` documents, so filter authors can rely on the list.
#[test]
fn the_wit_file_documents_every_source_kind_the_host_sends() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let wit = std::fs::read_to_string(root.join("wit/filter.wit")).expect("wit/filter.wit");
    let doc: String = wit
        .split("record context")
        .nth(1)
        .and_then(|r| r.split("source-kind: string").next())
        .expect("the context record documents source-kind")
        .to_owned();
    let mut sent = BTreeSet::new();
    let mut files = vec![root.join("host")];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("readable") {
                files.push(entry.expect("entry").path());
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("readable");
            for (i, _) in text.match_indices("source_kind: \"") {
                let rest = &text[i + "source_kind: \"".len()..];
                sent.insert(rest[..rest.find('"').expect("closing quote")].to_owned());
            }
            for constant in ["REPLAY_SOURCE: &str = \"", "SOURCE_KIND: &str = \""] {
                for (i, _) in text.match_indices(constant) {
                    let rest = &text[i + constant.len()..];
                    sent.insert(rest[..rest.find('"').expect("closing quote")].to_owned());
                }
            }
        }
    }
    assert!(sent.len() >= 8, "found {sent:?}");
    for kind in &sent {
        assert!(
            doc.contains(&format!("\"{kind}\"")),
            "the host sends source kind `{kind}`, which wit/filter.wit does not document"
        );
    }
}

#[test]
fn docs_metrics_lists_every_metric_family_the_host_registers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/metrics.md")).expect("docs/metrics.md");
    let mut registered = BTreeSet::new();
    let mut files = vec![root.join("host")];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            // Benchmarks read metrics; they register none.
            if !path.ends_with("benches") {
                for entry in std::fs::read_dir(&path).expect("readable") {
                    files.push(entry.expect("entry").path());
                }
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("readable");
            // Unit tests register families of their own.
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            for call in [
                "counter(",
                // The Toggle sink's families go through a short closure.
                ": c(",
                "gauge(",
                "histogram(",
                "HistogramOpts::new(",
                "Opts::new(",
            ] {
                for (i, _) in text.match_indices(call) {
                    let rest = text[i + call.len()..].trim_start();
                    if let Some(name) = rest.strip_prefix("\"weir_") {
                        let end = name.find('"').expect("closing quote");
                        registered.insert(format!("weir_{}", &name[..end]));
                    }
                }
            }
        }
    }
    assert!(registered.len() >= 40, "found {registered:?}");
    let missing: Vec<&String> = registered
        .iter()
        .filter(|name| !doc.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/metrics.md does not list {missing:?}"
    );
}
