//! The crate's picture holds: every module imports only modules below it (see the crate's
//! top doc). A module that needs one above it, or a new module not placed here, fails this.

/// The modules from the top down: accepting and placing connections, the two paths, the
/// framing of messages, and the shared ground.
const ORDER: &[&str] = &[
    // Accepting and placing connections.
    "sidecar",
    "gate",
    "listen",
    "workers",
    "route",
    // The two paths: the relay, and hyper's stack for what it does not take.
    "forward",
    "relay",
    "body",
    // Framing: heads, chunked bodies, the rules of both.
    "head",
    "chunked",
    "framing",
    // Shared ground.
    "tunnel",
    "ws_frames",
    "splice",
    "prefixed",
    "pool",
    "trusted",
    "target",
    "forwarded",
    "access",
    "slice",
    "busy_poll",
    "monitor",
    "readiness",
    "claim_hook",
];

#[test]
fn no_module_imports_one_above_it() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<String> = std::fs::read_dir(&src)
        .expect("src")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.ends_with(".rs") && n != "lib.rs")
        .collect();
    files.sort();
    let mut wrong = Vec::new();
    for file in &files {
        let module = file.trim_end_matches(".rs");
        let Some(rank) = ORDER.iter().position(|m| *m == module) else {
            wrong.push(format!("{module}: not placed in ORDER (tests/layers.rs)"));
            continue;
        };
        let text = std::fs::read_to_string(src.join(file)).expect("read");
        for used in imported(&text) {
            let Some(used_rank) = ORDER.iter().position(|m| *m == used) else {
                continue;
            };
            if used_rank <= rank && used != module {
                wrong.push(format!("{module} imports {used}, which is above it"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
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
