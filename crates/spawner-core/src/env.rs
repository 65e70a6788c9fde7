//! The environment a backend gets, and `$(VAR)` expansion in its command, as Kubernetes
//! does for a container's command and args.

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
