//! How large a spec may be (docs/api.md, "Limits"). Every spec is held in memory while its
//! backend lives, stored with every record, sent in every list, and its command and
//! environment are copied into the backend's `exec`: bounds here keep all of those small,
//! in both modes and for pool templates alike, and keep a process backend well inside what
//! Linux accepts (128 KiB per string, about 2 MiB for the arguments and environment).

use crate::env::expand;
use crate::spec::{BackendSpec, Executable, ValidationError};

/// `executable.env`: at most this many variables.
pub const MAX_ENV_VARS: usize = 256;
/// `executable.env`: a variable's name at most this many bytes.
pub const MAX_ENV_NAME_BYTES: usize = 256;
/// `executable.env`: a variable's value at most this many bytes (Linux takes 128 KiB).
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
/// `executable.env`: names and values together (each `NAME=value`) at most this many bytes.
pub const MAX_ENV_BYTES: usize = 64 * 1024;
/// `executable.command`: at most this many arguments, the program included.
pub const MAX_COMMAND_ARGS: usize = 1024;
/// `executable.command`: its arguments together at most this many bytes, once `$(VAR)`
/// references to the spec's own `env` are expanded.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// `labels`: at most this many (each key and value has Kubernetes' own bounds).
pub const MAX_LABELS: usize = 64;
/// `executable.working_dir`: at most this many bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// `executable.image`: at most this many bytes.
pub const MAX_IMAGE_BYTES: usize = 1024;
/// `key`: at most this many bytes (a DNS name's length).
pub const MAX_KEY_BYTES: usize = 253;

fn too_large(field: &str, what: String) -> ValidationError {
    ValidationError::new(field, format!("{what} (docs/api.md, \"Limits\")"))
}

/// Checks the sizes of an executable: its environment and its command.
pub(crate) fn check_executable(exe: &Executable) -> Result<(), ValidationError> {
    if exe.env.len() > MAX_ENV_VARS {
        return Err(too_large(
            "executable.env",
            format!(
                "{} variables: at most {MAX_ENV_VARS} are allowed; pass bulk configuration as a file or through the application's own storage",
                exe.env.len()
            ),
        ));
    }
    let mut total = 0usize;
    for (name, value) in &exe.env {
        if name.len() > MAX_ENV_NAME_BYTES {
            return Err(too_large(
                &format!(
                    "executable.env.{}…",
                    name.chars().take(32).collect::<String>()
                ),
                format!(
                    "a name of {} bytes: at most {MAX_ENV_NAME_BYTES}",
                    name.len()
                ),
            ));
        }
        if value.len() > MAX_ENV_VALUE_BYTES {
            return Err(too_large(
                &format!("executable.env.{name}"),
                format!(
                    "a value of {} bytes: at most {MAX_ENV_VALUE_BYTES} (32 KiB) per variable; pass larger data as a file",
                    value.len()
                ),
            ));
        }
        total += name.len() + 1 + value.len();
    }
    if total > MAX_ENV_BYTES {
        return Err(too_large(
            "executable.env",
            format!(
                "{total} bytes of NAME=value in all: at most {MAX_ENV_BYTES} (64 KiB); pass larger data as a file"
            ),
        ));
    }
    if let Some(cmd) = &exe.command {
        if cmd.len() > MAX_COMMAND_ARGS {
            return Err(too_large(
                "executable.command",
                format!("{} arguments: at most {MAX_COMMAND_ARGS}", cmd.len()),
            ));
        }
        // Expanded as the backend gets it: a short `$(BIG)` repeated is as long as it expands.
        let bytes: usize = cmd.iter().map(|a| expand(a, &exe.env).len()).sum();
        if bytes > MAX_COMMAND_BYTES {
            return Err(too_large(
                "executable.command",
                format!(
                    "{bytes} bytes once $(VAR) references to executable.env are expanded: at most {MAX_COMMAND_BYTES} (64 KiB)"
                ),
            ));
        }
    }
    if let Some(dir) = &exe.working_dir {
        if dir.len() > MAX_PATH_BYTES {
            return Err(too_large(
                "executable.working_dir",
                format!("{} bytes: at most {MAX_PATH_BYTES}", dir.len()),
            ));
        }
    }
    if let Some(image) = &exe.image {
        if image.len() > MAX_IMAGE_BYTES {
            return Err(too_large(
                "executable.image",
                format!("{} bytes: at most {MAX_IMAGE_BYTES}", image.len()),
            ));
        }
    }
    Ok(())
}

/// Checks the number of labels (their keys and values have their own rules).
pub(crate) fn check_labels(count: usize) -> Result<(), ValidationError> {
    if count > MAX_LABELS {
        return Err(too_large(
            "labels",
            format!("{count} labels: at most {MAX_LABELS}"),
        ));
    }
    Ok(())
}

/// About how many bytes a spec takes once serialized: what a list page counts to stay
/// small whatever its specs hold.
pub fn spec_bytes(spec: &BackendSpec) -> usize {
    let exe = &spec.executable;
    let strings = |v: &[String]| v.iter().map(|s| s.len() + 3).sum::<usize>();
    let pairs = |m: &std::collections::BTreeMap<String, String>| {
        m.iter().map(|(k, v)| k.len() + v.len() + 6).sum::<usize>()
    };
    // The fixed fields (numbers, booleans, names) are a few hundred bytes.
    512 + exe.command.as_deref().map_or(0, strings)
        + pairs(&exe.env)
        + pairs(&spec.labels)
        + [
            &spec.key,
            &exe.image,
            &exe.working_dir,
            &exe.image_pull_secret,
        ]
        .iter()
        .map(|s| s.as_ref().map_or(0, String::len))
        .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn with_env(env: BTreeMap<String, String>) -> BackendSpec {
        let mut s = BackendSpec::from_command(vec!["app".into()]);
        s.executable.env = env;
        s
    }

    fn refused(spec: &BackendSpec) -> String {
        spec.validate().expect_err("refused").to_string()
    }

    #[test]
    fn the_largest_environment_allowed_passes_and_one_byte_more_does_not() {
        // Two values of 32 KiB less their names and '=': exactly 64 KiB.
        let value = |name: &str| "v".repeat(MAX_ENV_BYTES / 2 - name.len() - 1);
        let env: BTreeMap<_, _> = ["A", "B"].map(|n| (n.to_string(), value(n))).into();
        let spec = with_env(env.clone());
        assert!(spec.validate().is_ok());
        let mut over = env;
        over.insert("C".into(), String::new());
        let err = refused(&with_env(over));
        assert!(err.starts_with("executable.env:"), "{err}");
        assert!(err.contains("65536"), "{err}");
    }

    #[test]
    fn a_value_count_or_name_over_its_limit_is_refused_naming_it() {
        let big = with_env([("BIG".to_string(), "x".repeat(MAX_ENV_VALUE_BYTES + 1))].into());
        let err = refused(&big);
        assert!(
            err.starts_with("executable.env.BIG:") && err.contains("32768"),
            "{err}"
        );
        let many = with_env(
            (0..=MAX_ENV_VARS)
                .map(|i| (format!("V{i}"), String::new()))
                .collect(),
        );
        let err = refused(&many);
        assert!(
            err.starts_with("executable.env:") && err.contains("256"),
            "{err}"
        );
        let long_name = with_env([("N".repeat(MAX_ENV_NAME_BYTES + 1), String::new())].into());
        let err = refused(&long_name);
        assert!(
            err.starts_with("executable.env.NNN") && err.contains("256"),
            "{err}"
        );
    }

    #[test]
    fn a_command_is_bounded_in_arguments_and_in_bytes_once_expanded() {
        let mut spec = BackendSpec::from_command(vec!["a".to_string(); MAX_COMMAND_ARGS + 1]);
        let err = refused(&spec);
        assert!(
            err.starts_with("executable.command:") && err.contains("1024"),
            "{err}"
        );
        // 100 references of 1 KiB each: short as written, 100 KiB as run.
        spec.executable.command = Some(vec!["$(K)".to_string(); 100]);
        spec.executable.env = [("K".to_string(), "k".repeat(1024))].into();
        let err = refused(&spec);
        assert!(
            err.starts_with("executable.command:") && err.contains("65536"),
            "{err}"
        );
        // Spawner's own variables are not the spec's: left as written, and short.
        spec.executable.command = Some(vec!["$(SPAWNER_PUBLIC_URL)".to_string(); 100]);
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn labels_working_dir_and_image_are_bounded() {
        let mut spec = BackendSpec::from_command(vec!["app".into()]);
        spec.labels = (0..=MAX_LABELS)
            .map(|i| (format!("l{i}"), "v".to_string()))
            .collect();
        let err = refused(&spec);
        assert!(err.starts_with("labels:") && err.contains("64"), "{err}");
        spec.labels.clear();
        spec.executable.working_dir = Some(format!("/{}", "d".repeat(MAX_PATH_BYTES)));
        assert!(refused(&spec).starts_with("executable.working_dir:"));
        spec.executable.working_dir = None;
        spec.executable.image = Some("i".repeat(MAX_IMAGE_BYTES + 1));
        assert!(refused(&spec).starts_with("executable.image:"));
    }

    #[test]
    fn spec_bytes_grows_with_what_a_spec_holds() {
        let small = BackendSpec::from_command(vec!["app".into()]);
        let large = with_env([("A".to_string(), "x".repeat(10_000))].into());
        let serialized = serde_json::to_string(&large).expect("json").len();
        assert!(spec_bytes(&small) < 1024);
        assert!(
            spec_bytes(&large) >= serialized,
            "{} < {serialized}",
            spec_bytes(&large)
        );
    }
}
