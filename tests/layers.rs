//! The crate's layers point down: each top-level module of `src/` (a file or a folder) belongs to
//! one layer, and its code names only modules of its own layer or of layers below. No two
//! modules reach each other through a circle, and no library module reaches up into the command
//! line. Read from the source: every `crate::NAME` path and `use crate::{...}` group outside
//! comments and outside the test modules (tests may reach anywhere).
//!
//! A new module must be given a layer here (the test names it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. README's "Library" section describes the same layers.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "base",
        &[
            "cancel", "rng", "host", "text", "params", "memory", "device", "theme",
        ],
    ),
    (
        "engine",
        &["graph", "probe", "train", "data", "mnist", "fetch"],
    ),
    (
        "record",
        &[
            "runlog", "report", "follow", "alerts", "export", "compare", "status",
        ],
    ),
    ("experiments", &["presets", "acts", "monitor"]),
    ("ui", &["tui"]),
    ("commands", &["paper", "bench", "cli"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The modules `text` names through `crate::`.
fn named_modules(text: &str) -> BTreeSet<String> {
    // The unit tests at the end of a file may reach anywhere.
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            // `crate::` not in the middle of a longer path (`probescope::crate::` never occurs,
            // but `my_crate::x` would).
            let before = rest[..i].chars().last();
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                if let Some(group) = after.strip_prefix('{') {
                    let inner = group.split('}').next().unwrap_or("");
                    for part in inner.split(',') {
                        let name = ident(part.trim());
                        if !name.is_empty() {
                            out.insert(name);
                        }
                    }
                } else {
                    let name = ident(after);
                    if !name.is_empty() {
                        out.insert(name);
                    }
                }
            }
            rest = after;
        }
    }
    out
}

fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let m = module_of(&src, &file);
        if m == "main" || m == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let named = named_modules(&text);
        let to = edges.entry(m.clone()).or_default();
        to.extend(named.into_iter().filter(|t| *t != m));
    }
    edges
}

#[test]
fn every_module_has_a_layer_and_points_down() {
    let mut wrong = Vec::new();
    for (from, tos) in edges() {
        let Some(lf) = layer_of(&from) else {
            wrong.push(format!(
                "module `{from}` has no layer: add it to LAYERS in tests/layers.rs"
            ));
            continue;
        };
        for to in tos {
            match layer_of(&to) {
                Some(lt) if lt <= lf => {}
                Some(lt) => wrong.push(format!(
                    "`{from}` ({}) names `{to}` ({}), a layer above it",
                    LAYERS[lf].0, LAYERS[lt].0
                )),
                None => wrong.push(format!("`{from}` names `{to}`, which has no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_module_circles_and_no_library_module_uses_the_command_line() {
    let edges = edges();
    let into_cli: Vec<&String> = edges
        .iter()
        .filter(|(m, to)| m.as_str() != "cli" && to.contains("cli"))
        .map(|(m, _)| m)
        .collect();
    assert!(
        into_cli.is_empty(),
        "library modules that name `cli`: {into_cli:?}"
    );
    // A circle: a module that reaches itself. Depth-first from each module.
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        while let Some((m, path)) = stack.pop() {
            for to in edges.get(&m).into_iter().flatten() {
                if to == start {
                    panic!("a circle of imports: {} -> {start}", path.join(" -> "));
                }
                if seen.insert(to.clone()) {
                    let mut p = path.clone();
                    p.push(to.clone());
                    stack.push((to.clone(), p));
                }
            }
        }
    }
}

/// The reader itself, on a hand example: paths, groups, comments and the test module.
#[test]
fn the_reader_finds_what_a_file_names() {
    let text = "use crate::probe::{self, Fitted};\n\
                use crate::{graph, runlog::Record};\n\
                // crate::tui in a comment\n\
                fn f() { crate::host::conv2d(); let x = my_crate::cli::y; }\n\
                #[cfg(test)]\nmod tests {\n    use crate::cli;\n}\n";
    let got: Vec<String> = named_modules(text).into_iter().collect();
    assert_eq!(got, ["graph", "host", "probe", "runlog"]);
}
