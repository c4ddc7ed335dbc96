//! The observed dependency graph of a run: commands and files as nodes,
//! read and write edges; a file written by one compile and read by another
//! (an object and its link) is one node, so the graph joins up by itself.
//! In a `cachefs mount` session each build step (a recipe and the processes
//! it started) is a command, or with `--processes` each process; a "spawn"
//! edge goes from the step or process that started it.

use super::{CompileRecord, RunRecord};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Paths dropped by `--no-system`: the toolchain and system headers.
const SYSTEM_PREFIXES: &[&str] = &["/usr/", "/lib/", "/lib64/", "/etc/", "/opt/"];

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub under: Option<String>,
    pub no_system: bool,
    /// A mount session: one node per process rather than per build step.
    pub processes: bool,
}

impl Filter {
    fn keeps(&self, path: &str) -> bool {
        if self.no_system && SYSTEM_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return false;
        }
        match &self.under {
            Some(dir) => path.starts_with(&format!("{}/", dir.trim_end_matches('/'))),
            None => true,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Node {
    pub id: String,
    pub kind: &'static str,
    pub label: String,
}

#[derive(Debug, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub kind: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Graph {
    pub run: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

pub fn build(run: &RunRecord, filter: &Filter) -> Graph {
    if run.is_mount() && !filter.processes {
        return build_nodes(&run.steps(), filter);
    }
    build_nodes(run, filter)
}

fn build_nodes(run: &RunRecord, filter: &Filter) -> Graph {
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    let mut file_id = |path: &str, nodes: &mut Vec<Node>| -> String {
        let next = format!("f{}", files.len());
        files
            .entry(path.to_string())
            .or_insert_with(|| {
                nodes.push(Node {
                    id: next.clone(),
                    kind: "file",
                    label: path.to_string(),
                });
                next
            })
            .clone()
    };
    for (i, c) in run.compiles.iter().enumerate() {
        let id = format!("c{i}");
        nodes.push(Node {
            id: id.clone(),
            kind: "command",
            label: command_label(c),
        });
        for r in c.reads.iter().filter(|p| filter.keeps(p)) {
            let f = file_id(r, &mut nodes);
            edges.push(Edge {
                from: f,
                to: id.clone(),
                kind: "read",
            });
        }
        if let Some(parent) = c.parent.filter(|&p| p < i) {
            edges.push(Edge {
                from: format!("c{parent}"),
                to: id.clone(),
                kind: "spawn",
            });
        }
        for w in c.written.iter().filter(|p| filter.keeps(p)) {
            let f = file_id(w, &mut nodes);
            edges.push(Edge {
                from: id.clone(),
                to: f,
                kind: "write",
            });
        }
    }
    Graph {
        run: run.id.clone(),
        nodes,
        edges,
    }
}

fn command_label(c: &CompileRecord) -> String {
    let mut label = c.argv.join(" ");
    if label.len() > 80 {
        label.truncate(77);
        label.push_str("...");
    }
    format!("{label} [{}]", c.outcome)
}

pub fn to_dot(g: &Graph) -> String {
    let mut out = String::from("digraph cachefs {\n  rankdir=LR;\n");
    for n in &g.nodes {
        let shape = if n.kind == "command" {
            "box"
        } else {
            "ellipse"
        };
        let _ = writeln!(
            out,
            "  {} [shape={shape}, label={}];",
            n.id,
            dot_string(&n.label)
        );
    }
    for e in &g.edges {
        let style = match e.kind {
            "read" => "solid",
            "spawn" => "dashed",
            _ => "bold",
        };
        let _ = writeln!(out, "  {} -> {} [style={style}];", e.from, e.to);
    }
    out.push_str("}\n");
    out
}

fn dot_string(s: &str) -> String {
    let escaped: String = s
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            '\n' => vec!['\\', 'n'],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunRecord {
        let compile = |argv: &str, reads: &[&str], written: &[&str]| CompileRecord {
            argv: argv.split(' ').map(str::to_owned).collect(),
            outcome: "miss".into(),
            reads: reads.iter().map(|s| s.to_string()).collect(),
            written: written.iter().map(|s| s.to_string()).collect(),
            ..CompileRecord::default()
        };
        RunRecord {
            id: "1-1".into(),
            compiles: vec![
                compile(
                    "gcc -c a.c",
                    &["/p/a.c", "/usr/include/stdio.h"],
                    &["/p/a.o"],
                ),
                compile("gcc a.o -o prog", &["/p/a.o"], &["/p/prog"]),
            ],
            ..RunRecord::default()
        }
    }

    #[test]
    fn objects_join_compile_and_link() {
        let g = build(&run(), &Filter::default());
        let obj = g.nodes.iter().find(|n| n.label == "/p/a.o").unwrap();
        assert!(g.edges.iter().any(|e| e.from == "c0" && e.to == obj.id));
        assert!(g.edges.iter().any(|e| e.from == obj.id && e.to == "c1"));
    }

    #[test]
    fn filters_drop_system_and_outside_paths() {
        let g = build(
            &run(),
            &Filter {
                under: Some("/p".into()),
                no_system: true,
                processes: false,
            },
        );
        assert!(g
            .nodes
            .iter()
            .all(|n| n.kind == "command" || n.label.starts_with("/p/")));
        assert!(to_dot(&g).starts_with("digraph"));
    }
}
