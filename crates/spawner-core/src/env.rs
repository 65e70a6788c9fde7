//! The environment a backend gets (what passes from Spawner's own, what Spawner sets), and
//! `$(VAR)` expansion in its command, as Kubernetes does for a container's command and args.

use std::collections::BTreeMap;

/// Expands `$(NAME)` from `env`; `$$` is a literal `$`; a reference to an unknown name is
/// left as written (Kubernetes' rule), so that shell syntax passes through untouched.
pub fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) if env.contains_key(&inner[..end]) => {
                    out.push_str(&env[&inner[..end]]);
                    rest = &inner[end + 1..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The variables of Spawner's own environment that a process backend gets, besides the
/// locale's `LC_*`: what a program needs to run as the user it runs as (where programs
/// are, its home, its language, time zone and temporary directory), and nothing that could
/// be a secret of the operator's. `spawner serve --env-keep NAME` adds others.
pub const INHERITED: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
];

/// Whether Spawner's own variable `name` passes to a process backend: one of
/// [`INHERITED`], a locale category (`LC_*`), or one of `keep` (`--env-keep`).
pub fn inherited(name: &str, keep: &[String]) -> bool {
    INHERITED.contains(&name) || name.starts_with("LC_") || keep.iter().any(|k| k == name)
}

/// Checks a name given to `--env-keep`: a variable name, and none that Spawner sets.
pub fn check_keep(name: &str) -> Result<(), String> {
    if !crate::spec::is_env_name(name) {
        return Err(format!(
            "--env-keep {name:?}: a variable name is letters, digits and '_', not starting with a digit"
        ));
    }
    if name == "PORT" || name.starts_with("SPAWNER_") {
        return Err(format!(
            "--env-keep {name}: PORT and SPAWNER_* are set by Spawner for each backend, and Spawner's own SPAWNER_* settings (its token) never pass"
        ));
    }
    Ok(())
}

/// The variables Spawner gives every backend besides the spec's own `env`.
pub fn backend_env(
    spec_env: &BTreeMap<String, String>,
    id: &str,
    port: u16,
    base_path: &str,
    public_url: &str,
) -> BTreeMap<String, String> {
    let mut env = spec_env.clone();
    env.insert("PORT".into(), port.to_string());
    env.insert("SPAWNER_BACKEND_ID".into(), id.to_string());
    env.insert("SPAWNER_BASE_PATH".into(), base_path.to_string());
    env.insert("SPAWNER_PUBLIC_URL".into(), public_url.to_string());
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_allow_list_the_locale_and_what_is_kept_pass() {
        let keep = vec!["OPERATOR_CA".to_string()];
        for name in [
            "PATH",
            "HOME",
            "LANG",
            "LC_ALL",
            "LC_CTYPE",
            "TZ",
            "OPERATOR_CA",
        ] {
            assert!(inherited(name, &keep), "{name}");
        }
        for name in [
            "OPERATOR_SECRET",
            "AWS_SECRET_ACCESS_KEY",
            "SPAWNER_TOKEN",
            "LD_PRELOAD",
            "path",
        ] {
            assert!(!inherited(name, &keep), "{name}");
        }
        assert!(check_keep("OPERATOR_CA").is_ok());
        for bad in ["SPAWNER_TOKEN", "PORT", "1X", "A-B", ""] {
            assert!(check_keep(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expands_like_kubernetes() {
        let env: BTreeMap<_, _> = [
            ("A".to_string(), "x".to_string()),
            ("P".into(), "/p/1/".into()),
        ]
        .into_iter()
        .collect();
        assert_eq!(expand("--base=$(P)", &env), "--base=/p/1/");
        assert_eq!(expand("$(A)$(A)", &env), "xx");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(NOPE) $HOME $", &env), "$(NOPE) $HOME $");
        assert_eq!(expand("$(A", &env), "$(A");
    }
}
