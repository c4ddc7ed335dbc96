//! The root crate's layout, checked: which top-level module may use which
//! (the table below, DESIGN.md "Layout"), no import circle between modules
//! that are not parent and child, and nothing but the binaries uses `cli`.
//! Rust does not enforce any of this inside one crate; this test does, by
//! reading every `crate::…` and `super::…` path in `src/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What each top-level module may use. `client` is what every compile
/// starts: it reaches the agent through `protocol` and links nothing of the
/// agent's (no store, no mirror, no entry).
const ALLOWED: &[(&str, &[&str])] = &[
    ("bytes", &[]),
    ("digest", &["compiler"]),
    ("protocol", &["bytes"]),
    ("config", &[]),
    ("logging", &["config"]),
    ("compiler", &[]),
    ("fuse_mounts", &[]),
    ("stat_cache", &["digest", "compiler"]),
    (
        "entry",
        &["bytes", "digest", "stat_cache", "compiler", "protocol"],
    ),
    ("observe", &["entry", "digest", "stat_cache", "compiler"]),
    ("runlog", &[]),
    ("client", &["protocol", "config", "compiler", "logging"]),
    (
        "agent",
        &[
            "entry",
            "observe",
            "stat_cache",
            "digest",
            "runlog",
            "compiler",
            "config",
            "protocol",
            "fuse_mounts",
        ],
    ),
    (
        "cli",
        &[
            "agent",
            "client",
            "compiler",
            "config",
            "entry",
            "fuse_mounts",
            "logging",
            "protocol",
            "runlog",
        ],
    ),
];

type Module = Vec<String>;

/// Every module of the library, by path (`[]` is the crate root), with its
/// source text.
fn modules() -> BTreeMap<Module, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap().with_extension("");
            let mut module: Module = rel.iter().map(|c| c.to_string_lossy().into()).collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            if module == ["main"] || module == ["cli_main"] {
                continue; // the binaries: they may use anything.
            }
            found.insert(module, std::fs::read_to_string(&path).unwrap());
        }
    }
    found
}

/// The paths a source names, as module-relative segments: `crate::a::b`
/// → (None, [a, b]); `super::super::c` → (Some(2), [c]); `use crate::{x,
/// y::z}` → each of x and y::z.
fn named_paths(source: &str) -> Vec<(Option<usize>, Vec<String>)> {
    let code: String = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !code.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let rest = &code[i..];
        let at_word_start =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let root = if !at_word_start {
            None
        } else if rest.starts_with("crate::") {
            Some((None, "crate::".len()))
        } else if rest.starts_with("super::") {
            let mut ups = 0;
            let mut len = 0;
            while code[i + len..].starts_with("super::") {
                ups += 1;
                len += "super::".len();
            }
            Some((Some(ups), len))
        } else {
            None
        };
        let Some((ups, len)) = root else {
            i += 1;
            continue;
        };
        let tail = &code[i + len..];
        if let Some(group) = tail.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                out.push((ups, segments(item.trim())));
            }
        } else {
            out.push((ups, segments(tail)));
        }
        i += len;
    }
    out
}

fn segments(path: &str) -> Vec<String> {
    let end = path
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(path.len());
    path[..end]
        .split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The module a path names: its longest prefix that is a module.
fn resolve(
    from: &Module,
    (ups, segs): &(Option<usize>, Vec<String>),
    all: &BTreeMap<Module, String>,
) -> Option<Module> {
    let mut base: Module = match ups {
        None => Vec::new(),
        Some(n) => from[..from.len().checked_sub(*n)?].to_vec(),
    };
    let mut best = None;
    for s in segs {
        base.push(s.clone());
        if all.contains_key(&base) {
            best = Some(base.clone());
        }
    }
    best
}

fn is_within(inner: &Module, outer: &Module) -> bool {
    inner.len() >= outer.len() && inner[..outer.len()] == outer[..]
}

/// Uses between modules, leaving out a module's own parents and children
/// (a child reaches its parent's items, a parent names its children).
fn uses() -> BTreeMap<Module, BTreeSet<Module>> {
    let all = modules();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, source) in &all {
        for path in named_paths(source) {
            let Some(to) = resolve(module, &path, &all) else {
                continue;
            };
            if !is_within(&to, module) && !is_within(module, &to) {
                edges.entry(module.clone()).or_default().insert(to);
            }
        }
    }
    edges
}

fn top(m: &Module) -> &str {
    m.first().map_or("", String::as_str)
}

#[test]
fn each_top_level_module_uses_only_what_the_table_allows() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (from, tos) in uses() {
        let Some(may) = allowed.get(top(&from)) else {
            wrong.push(format!("{} is not in the table", from.join("::")));
            continue;
        };
        for to in tos {
            if top(&to) != top(&from) && !may.contains(&top(&to)) {
                wrong.push(format!("{} uses {}", from.join("::"), to.join("::")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "uses the layout does not allow (tests/layout.rs, DESIGN.md \"Layout\"):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn only_the_binaries_use_the_cli() {
    let users: Vec<String> = uses()
        .into_iter()
        .filter(|(from, tos)| top(from) != "cli" && tos.iter().any(|t| top(t) == "cli"))
        .map(|(from, _)| from.join("::"))
        .collect();
    assert!(users.is_empty(), "modules that use cli: {users:?}");
}

#[test]
fn no_import_circle_between_modules() {
    let edges = uses();
    // Depth-first search; a module met again on the current path closes a circle.
    fn visit(
        m: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        path: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            return Some(path[at..].to_vec());
        }
        if !done.insert(m.clone()) {
            return None;
        }
        path.push(m.clone());
        for to in edges.get(m).into_iter().flatten() {
            if let Some(circle) = visit(to, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        if let Some(circle) = visit(m, &edges, &mut Vec::new(), &mut done) {
            let names: Vec<String> = circle.iter().map(|m| m.join("::")).collect();
            panic!("import circle: {} → back", names.join(" → "));
        }
    }
}

/// The checker itself: a circle and a forbidden use are found.
#[test]
fn the_path_reader_resolves_crate_super_and_groups() {
    let paths = named_paths(
        "use crate::{entry::key1, config};\nuse super::super::x::Y;\n// crate::ignored\nfn f() { crate::protocol::write_frame(); }",
    );
    assert_eq!(
        paths,
        vec![
            (None, vec!["entry".into(), "key1".into()]),
            (None, vec!["config".into()]),
            (Some(2), vec!["x".into(), "Y".into()]),
            (None, vec!["protocol".into(), "write_frame".into()]),
        ]
    );
    let all = modules();
    let from: Module = vec!["agent".into(), "compile".into()];
    assert_eq!(
        resolve(&from, &(Some(1), vec!["runs".into(), "Ended".into()]), &all),
        Some(vec!["agent".into(), "runs".into()])
    );
    assert_eq!(
        resolve(&from, &(None, vec!["entry".into(), "Hash".into()]), &all),
        Some(vec!["entry".into()])
    );
}
