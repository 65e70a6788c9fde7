//! The crate's picture holds (see the crate's top doc): each program's folder uses the
//! shared model and its own modules, never another program's, and the model uses no
//! program. A module outside these folders, or a file reaching across, fails this.

/// The programs, one folder each.
const PROGRAMS: &[&str] = &["controller", "api", "node", "router"];
/// The shared model of the resources, under every program.
const MODEL: &str = "model";

#[test]
fn programs_use_the_model_never_each_other() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        if rel == std::path::Path::new("lib.rs") {
            continue;
        }
        let shown = rel.display().to_string();
        let Some(top) = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .filter(|_| rel.components().count() > 1)
        else {
            wrong.push(format!(
                "{shown}: not in a program's folder nor in {MODEL}/"
            ));
            continue;
        };
        if top != MODEL && !PROGRAMS.contains(&top) {
            wrong.push(format!("{shown}: {top}/ is not placed in tests/layers.rs"));
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read");
        for used in imported(&text) {
            let allowed = used == MODEL || used == top;
            if !allowed {
                wrong.push(format!("{shown} ({top}) uses crate::{used}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every `.rs` file under `dir`.
fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The modules named after `crate::` in `text`, in `crate::a::b` and `crate::{a, b::c}` alike.
fn imported(text: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + 7..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let end = group.find('}').unwrap_or(group.len());
                out.extend(group[..end].split(',').map(ident));
            }
            None => out.push(ident(rest)),
        }
    }
    out
}

#[test]
fn imports_are_found_in_both_forms() {
    assert_eq!(
        imported("use crate::a::B;\nuse crate::{c, d::E};\nx = crate::f::g();"),
        ["a", "c", "d", "f"]
    );
}
