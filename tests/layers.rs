//! The layers of each crate (`crates/LAYERS`): every import goes down the table, never up or
//! sideways, so no two modules import each other and a reader can take the modules bottom to top.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::support::repo;

/// Each crate's modules with their layer (0 is the lowest), from `crates/LAYERS`.
fn table() -> BTreeMap<String, BTreeMap<String, usize>> {
    let text = fs::read_to_string(repo().join("crates/LAYERS")).unwrap();
    let mut out: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut line_no = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.to_string());
            line_no = 0;
            continue;
        }
        let krate = current.clone().expect("a [crate] line first");
        for module in line.split_whitespace() {
            let previous = out.entry(krate.clone()).or_default().insert(module.to_string(), line_no);
            assert!(previous.is_none(), "{krate}: `{module}` is listed twice in crates/LAYERS");
        }
        line_no += 1;
    }
    out
}

/// The source files of a crate's module `name` (its file, or its folder).
fn files_of(src: &Path) -> BTreeMap<String, Vec<std::path::PathBuf>> {
    let mut out: BTreeMap<String, Vec<std::path::PathBuf>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().to_string_lossy().replace('\\', "/");
            if !relative.ends_with(".rs") || relative.ends_with("/tests.rs") {
                continue;
            }
            let top = relative.split('/').next().unwrap().trim_end_matches(".rs").to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            out.entry(top).or_default().push(path);
        }
    }
    out
}

/// The modules `text` imports from its own crate (`crate::name`), with their line numbers: code
/// only, not comments, and not the file's test module.
fn imports(text: &str) -> Vec<(String, usize)> {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            // `dagrun_core::…` ends in `crate::` too only as `_crate::`; skip identifiers' tails.
            let before = rest[..at].chars().last();
            if !name.is_empty() && !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                out.push((name, n + 1));
            }
            rest = after;
        }
    }
    out
}

#[test]
fn every_import_goes_down_the_layer_table() {
    let mut problems = Vec::new();
    for (krate, layers) in table() {
        let src = repo().join("crates").join(&krate).join("src");
        let modules = files_of(&src);
        for name in modules.keys() {
            if !layers.contains_key(name) {
                problems.push(format!("{krate}: module `{name}` is not in crates/LAYERS: give it its layer"));
            }
        }
        for name in layers.keys() {
            if !modules.contains_key(name) {
                problems.push(format!("{krate}: crates/LAYERS lists `{name}`, which is no module of the crate"));
            }
        }
        for (name, paths) in &modules {
            let Some(&own) = layers.get(name) else { continue };
            for path in paths {
                for (imported, line) in imports(&fs::read_to_string(path).unwrap()) {
                    let Some(&theirs) = layers.get(&imported) else { continue };
                    if imported != *name && theirs >= own {
                        let how = if theirs == own { "on its own layer" } else { "on a layer above" };
                        problems.push(format!(
                            "{}:{line}: `{name}` imports `{imported}`, {how} in crates/LAYERS",
                            path.strip_prefix(repo()).unwrap().display()
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "imports against crates/LAYERS:\n{}", problems.join("\n"));
}

#[test]
fn an_upward_import_is_found_with_its_line() {
    let text = "use crate::plan::Plan;\n// crate::executor in a comment\nfn f() { crate::graph::render(); }\n\
                #[cfg(test)]\nmod tests {\n    use crate::compile;\n}\n";
    let found: Vec<(String, usize)> = imports(text);
    assert_eq!(found, [("plan".to_string(), 1), ("graph".to_string(), 3)]);
}
