//! The flags that describe a backend (every field of the spawn body but `key` and `access`),
//! shared by `spawner spawn` and `spawner pool create`, and how their errors name them.

use anyhow::{bail, Context};
use clap::Args;
use spawner_core::spec::{PullPolicy, Resources};
use spawner_core::{BackendSpec, IdleAction};
use std::collections::BTreeMap;

/// Defaults the server applies are written in the help as `[default: …]`: clap's own
/// `default_value` would send them, and a claim must be able to leave them to the template.
#[derive(Args, Debug, Clone, Default)]
pub struct SpecArgs {
    /// The command to run, as one shell-quoted string: --command 'python3 -m http.server $(PORT)'
    /// (single quotes, so that your shell leaves $(PORT) for Spawner to expand).
    #[arg(long, conflicts_with = "argv")]
    pub command: Option<String>,
    /// The command to run, as separate arguments after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub argv: Vec<String>,
    /// A container image (runs on the Docker runtime, or on Kubernetes).
    #[arg(long)]
    pub image: Option<String>,
    /// Environment variables, NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Labels, NAME=VALUE (repeatable).
    #[arg(long = "label", value_name = "NAME=VALUE")]
    pub labels: Vec<String>,
    /// Seconds without connections or requests before the backend is swept [default: 300].
    #[arg(long, value_name = "SECONDS")]
    pub grace: Option<u64>,
    /// Seconds after which the backend is stopped whatever it does [default: none].
    #[arg(long, value_name = "SECONDS")]
    pub lifetime: Option<u64>,
    /// How many seconds before a lifetime or idle-timeout stop the status stream warns
    /// (`expiring`); 0: no warning [default: 60].
    #[arg(long, value_name = "SECONDS")]
    pub lifetime_warning: Option<u64>,
    /// Seconds without a request from its clients (connections or not) before it is swept
    /// [default: none].
    #[arg(long, value_name = "SECONDS")]
    pub idle_timeout: Option<u64>,
    /// What idleness (--grace, --idle-timeout) does: `sweep` ends the backend; `sleep`
    /// stops its process but keeps it (its id, URL and files), and its next request wakes
    /// it [default: sweep].
    #[arg(long, value_parser = ["sweep", "sleep"], value_name = "ACTION")]
    pub idle_action: Option<String>,
    /// With --idle-action sleep: seconds asleep before it is swept for good [default: 86400].
    #[arg(long, value_name = "SECONDS")]
    pub max_sleep: Option<u64>,
    /// The port the backend listens on [default: a free one for a process, 8080 for an image].
    #[arg(long)]
    pub port: Option<u16>,
    /// Seconds it may take to accept connections on its port before it is stopped (Failed)
    /// [default: 300].
    #[arg(long, value_name = "SECONDS")]
    pub startup_timeout: Option<u64>,
    /// Forward /p/{id}/... unchanged instead of stripping the prefix [default: stripped].
    #[arg(long)]
    pub keep_prefix: bool,
    /// The directory the command runs in [default: the server's working directory].
    #[arg(long, value_name = "DIR")]
    pub working_dir: Option<String>,
    /// When the image is pulled (containers) [default: IfNotPresent].
    #[arg(long, value_parser = ["Always", "IfNotPresent", "Never"], value_name = "POLICY")]
    pub pull_policy: Option<String>,
    /// The name of registry credentials for the image (docs/docker.md) [default: none].
    #[arg(long, value_name = "NAME")]
    pub image_pull_secret: Option<String>,
    /// Memory limit of a container, in MiB [default: none].
    #[arg(long, value_name = "MIB")]
    pub memory_mb: Option<u64>,
    /// CPU quota of a container, 1000 = one CPU [default: none].
    #[arg(long, value_name = "MILLIS")]
    pub cpu_millis: Option<u64>,
}

/// `NAME=VALUE` items of a repeatable flag as a map; one without `=` says so.
pub fn pairs(items: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--{what} {kv:?} must be NAME=VALUE"))
        })
        .collect()
}

impl SpecArgs {
    /// The spec these flags describe (not validated: the caller adds key and access first).
    pub fn spec(&self) -> anyhow::Result<BackendSpec> {
        let command = match (&self.command, self.argv.is_empty()) {
            (Some(c), _) => Some(
                shlex::split(c)
                    .with_context(|| format!("--command {c:?} has unbalanced quotes"))?,
            ),
            (None, false) => Some(self.argv.clone()),
            (None, true) => None,
        };
        if command.is_none() && self.image.is_none() {
            bail!("say what to run: --command \"prog args\", -- prog args, or --image NAME");
        }
        let mut spec = BackendSpec::from_command(command.unwrap_or_default());
        if spec
            .executable
            .command
            .as_ref()
            .is_some_and(|c| c.is_empty())
        {
            spec.executable.command = None;
        }
        spec.executable.image = self.image.clone();
        spec.executable.env = pairs(&self.env, "env")?;
        spec.executable.port = self.port;
        spec.executable.working_dir = self.working_dir.clone();
        spec.executable.pull_policy = match self.pull_policy.as_deref() {
            None => None,
            Some("Always") => Some(PullPolicy::Always),
            Some("Never") => Some(PullPolicy::Never),
            Some(_) => Some(PullPolicy::IfNotPresent),
        };
        spec.executable.image_pull_secret = self.image_pull_secret.clone();
        if self.memory_mb.is_some() || self.cpu_millis.is_some() {
            spec.resources = Some(Resources {
                memory_mb: self.memory_mb,
                cpu_millis: self.cpu_millis,
            });
        }
        spec.labels = pairs(&self.labels, "label")?;
        if let Some(g) = self.grace {
            spec.grace_period_seconds = g;
        }
        if let Some(t) = self.startup_timeout {
            spec.startup_timeout_seconds = t;
        }
        spec.lifetime_limit_seconds = self.lifetime;
        spec.idle_timeout_seconds = self.idle_timeout;
        if let Some(w) = self.lifetime_warning {
            spec.lifetime_warning_seconds = w;
        }
        spec.strip_prefix = !self.keep_prefix;
        if let Some(a) = self.idle_action() {
            spec.idle_action = a;
        }
        if let Some(m) = self.max_sleep {
            spec.max_sleep_seconds = m;
        }
        Ok(spec)
    }
}

impl SpecArgs {
    /// `--idle-action`, parsed (clap has checked its value).
    pub fn idle_action(&self) -> Option<IdleAction> {
        self.idle_action.as_deref().and_then(IdleAction::parse)
    }
}

/// The flag that sets each field a spec's rules may name, for errors that say what to type.
const FLAGS: &[(&str, &str)] = &[
    ("grace_period_seconds", "--grace"),
    ("lifetime_limit_seconds", "--lifetime"),
    ("lifetime_warning_seconds", "--lifetime-warning"),
    ("idle_timeout_seconds", "--idle-timeout"),
    ("idle_action", "--idle-action"),
    ("max_sleep_seconds", "--max-sleep"),
    ("startup_timeout_seconds", "--startup-timeout"),
    ("executable.env", "--env"),
    ("executable.port", "--port"),
    ("executable.image_pull_secret", "--image-pull-secret"),
    ("executable.image", "--image"),
    ("executable.working_dir", "--working-dir"),
    ("executable.command", "the command"),
    ("resources.memory_mb", "--memory-mb"),
    ("resources.cpu_millis", "--cpu-millis"),
    ("labels", "--label"),
    ("key", "--key"),
    ("access.user_data", "--user-data"),
    ("access.user", "--user"),
    ("access", "--access"),
    ("wait_seconds", "--claim-wait"),
    ("min_ready", "--min-ready"),
    ("max", "--max"),
    ("name", "the pool's name"),
    ("template.claim_path", "--claim-path"),
];

/// `field: message` with the field said as its flag (`--env FOO: ...` for
/// `executable.env.FOO`); a field without a flag as it is. A pool's `template.` prefix is
/// passed over: its fields have the spawn's flags.
pub fn in_flags(field: &str, message: &str) -> String {
    for candidate in [field, field.strip_prefix("template.").unwrap_or(field)] {
        for (name, flag) in FLAGS {
            if candidate == *name {
                return format!("{flag}: {message}");
            }
            if let Some(rest) = candidate
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix('.'))
            {
                return format!("{flag} {rest}: {message}");
            }
        }
    }
    format!("{field}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_flag() {
        assert_eq!(in_flags("grace_period_seconds", "bad"), "--grace: bad");
        assert_eq!(in_flags("executable.env.X", "bad"), "--env X: bad");
        assert_eq!(
            in_flags("template.executable.image_pull_secret", "bad"),
            "--image-pull-secret: bad"
        );
        assert_eq!(in_flags("template.claim_path", "bad"), "--claim-path: bad");
        assert_eq!(in_flags("elsewhere", "bad"), "elsewhere: bad");
    }

    #[test]
    fn every_flag_reaches_the_spec() {
        let args = SpecArgs {
            image: Some("app:1".into()),
            working_dir: Some("/srv".into()),
            pull_policy: Some("Never".into()),
            image_pull_secret: Some("reg".into()),
            memory_mb: Some(256),
            cpu_millis: Some(500),
            startup_timeout: Some(9),
            keep_prefix: true,
            idle_action: Some("sleep".into()),
            max_sleep: Some(600),
            ..SpecArgs::default()
        };
        let spec = args.spec().unwrap();
        assert_eq!(spec.executable.command, None);
        assert_eq!(spec.executable.working_dir.as_deref(), Some("/srv"));
        assert_eq!(spec.executable.pull_policy, Some(PullPolicy::Never));
        assert_eq!(spec.executable.image_pull_secret.as_deref(), Some("reg"));
        assert_eq!(
            spec.resources,
            Some(Resources {
                memory_mb: Some(256),
                cpu_millis: Some(500)
            })
        );
        assert_eq!(spec.startup_timeout_seconds, 9);
        assert!(!spec.strip_prefix);
        assert_eq!(spec.idle_action, IdleAction::Sleep);
        assert_eq!(spec.max_sleep_seconds, 600);
        spec.validate().unwrap();
    }
}
