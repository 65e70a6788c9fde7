//! The process runtime: a backend is a local command in its own process group.
//!
//! The process is started in a new process group with its output going to a file, so that
//! it neither dies with Spawner nor blocks on a pipe nobody reads: a crash of Spawner leaves
//! it running, and the restarted Spawner adopts it by pid and start time (a recycled pid is
//! not mistaken for it). Every process carries `SPAWNER_INSTANCE` and `SPAWNER_BACKEND_ID` in
//! its environment, which is how a restart finds processes the store never heard of. Of
//! Spawner's own environment it gets only an allow list (`spawner_core::env::inherited`).

use crate::{Handle, Launch, Owned, Runtime, RuntimeError, Signal, Started};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use nix::sys::signal::{kill, killpg, Signal as NixSignal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use spawner_core::lifecycle::Exit;
use spawner_core::BackendId;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::unix::AsyncFd;

/// Runs backends as local processes.
#[derive(Debug, Default, Clone)]
pub struct ProcessRuntime {
    /// What a backend gets of Spawner's own environment ([`spawner_core::env::inherited`]),
    /// read once at start.
    inherited: Arc<Vec<(OsString, OsString)>>,
}

/// What identifies one backend process across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct ProcessHandle {
    pid: i32,
    /// Field 22 of `/proc/{pid}/stat`: with the pid, unique for the machine's uptime.
    start_time: u64,
}

impl ProcessHandle {
    fn to_handle(self) -> Handle {
        Handle(serde_json::json!({"pid": self.pid, "start_time": self.start_time}))
    }
    fn from_handle(h: &Handle) -> Result<Self, RuntimeError> {
        serde_json::from_value(h.0.clone())
            .map_err(|e| RuntimeError::Unavailable(format!("not a process handle: {e}")))
    }
}

impl ProcessRuntime {
    /// A runtime whose backends get of this process's environment only the variables
    /// [`spawner_core::env::inherited`] lets through, with those named in `keep`.
    pub fn new(keep: &[String]) -> Self {
        let inherited = std::env::vars_os()
            .filter(|(name, _)| {
                name.to_str()
                    .is_some_and(|n| spawner_core::env::inherited(n, keep))
            })
            .collect();
        ProcessRuntime {
            inherited: Arc::new(inherited),
        }
    }

    /// The names of the variables a backend gets of Spawner's environment.
    pub fn inherited_names(&self) -> Vec<String> {
        self.inherited
            .iter()
            .map(|(n, _)| n.to_string_lossy().into_owned())
            .collect()
    }
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn start(&self, launch: &Launch) -> Result<Started, RuntimeError> {
        // Creating the log file and the process are system calls that take their time
        // (the caller's thread waits until the child has exec'd): off the async workers,
        // so that other requests are not queued behind a storm of starts.
        let port = launch.port;
        let launch = launch.clone();
        let inherited = self.inherited.clone();
        let mut starting = Starting(Some(tokio::task::spawn_blocking(move || {
            spawn(&launch, &inherited)
        })));
        let Some(task) = starting.0.as_mut() else {
            return Err(RuntimeError::Start("the start was abandoned".into()));
        };
        let spawned = task.await;
        starting.0 = None;
        let (child, handle) =
            spawned.map_err(|e| RuntimeError::Start(format!("the start was abandoned: {e}")))??;
        let pid = handle.pid;
        let exited = async move {
            let mut child = child;
            let exit = match child.wait().await {
                Ok(status) => match (status.code(), status.signal()) {
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(sig)) => Exit::Signal(sig),
                    _ => Exit::Unknown,
                },
                Err(_) => Exit::Unknown,
            };
            kill_group(pid);
            exit
        }
        .boxed();
        Ok(Started {
            handle: handle.to_handle(),
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            netns: None,
            exited,
            note: Some(format!("pid {pid}")),
        })
    }

    async fn adopt(
        &self,
        _id: &BackendId,
        handle: &Handle,
    ) -> Result<Option<BoxFuture<'static, Exit>>, RuntimeError> {
        let h = ProcessHandle::from_handle(handle)?;
        if !is_alive(h) {
            kill_group(h.pid);
            return Ok(None);
        }
        // Not our child any more: a pidfd tells when it ends (its exit code went to init).
        // Where there are no pidfds (kernels before 5.3, seccomp profiles that refuse the
        // call, valgrind), `/proc` is polled instead: a live backend is never given up.
        let pidfd = match pidfd_open(h.pid) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::debug!(pid = h.pid, error = %e, "no pidfd; watching /proc instead");
                return Ok(Some(watch_by_polling(h)));
            }
        };
        // The pid could have been recycled between the check and the pidfd: check again.
        if !is_alive(h) {
            kill_group(h.pid);
            return Ok(None);
        }
        // SAFETY: the AsyncFd owns the pidfd, so it stays open for as long as it is registered.
        let fd = match unsafe { AsyncFd::register(pidfd) } {
            Ok(fd) => fd,
            Err(e) => {
                tracing::debug!(pid = h.pid, error = %e, "pidfd not pollable; watching /proc instead");
                return Ok(Some(watch_by_polling(h)));
            }
        };
        let pid = h.pid;
        Ok(Some(
            async move {
                let _ = fd.readable().await;
                kill_group(pid);
                Exit::Unknown
            }
            .boxed(),
        ))
    }

    async fn signal(&self, handle: &Handle, signal: Signal) -> Result<(), RuntimeError> {
        let h = ProcessHandle::from_handle(handle)?;
        let sig = match signal {
            Signal::Term => NixSignal::SIGTERM,
            Signal::Kill => NixSignal::SIGKILL,
        };
        // The group first (the command may be a shell with children), then the leader in
        // case it left its group.
        let _ = killpg(Pid::from_raw(h.pid), sig);
        if is_alive(h) {
            let _ = kill(Pid::from_raw(h.pid), sig);
        }
        Ok(())
    }

    async fn cleanup(&self, handle: &Handle) -> Result<(), RuntimeError> {
        let h = ProcessHandle::from_handle(handle)?;
        kill_group(h.pid);
        Ok(())
    }

    async fn list_owned(&self, instance: &str) -> Result<Vec<Owned>, RuntimeError> {
        let instance = instance.to_string();
        tokio::task::spawn_blocking(move || scan_proc(&instance))
            .await
            .map_err(|e| RuntimeError::Unavailable(format!("scanning /proc: {e}")))
    }
}

/// A start on the blocking pool. Dropped before it has been awaited to the end (the start
/// was abandoned: a stop came first), the process it makes is killed once made, so that
/// nothing runs that nobody supervises.
struct Starting(
    Option<tokio::task::JoinHandle<Result<(tokio::process::Child, ProcessHandle), RuntimeError>>>,
);

impl Drop for Starting {
    fn drop(&mut self) {
        let (Some(task), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        rt.spawn(async move {
            if let Ok(Ok((_child, handle))) = task.await {
                kill_group(handle.pid);
            }
        });
    }
}

/// Creates the log file and starts the process: blocking system calls. Its environment is
/// `inherited` (what passes of Spawner's own), then the launch's (the spec's `env`, then
/// `PORT` and `SPAWNER_*`), and nothing else.
fn spawn(
    launch: &Launch,
    inherited: &[(OsString, OsString)],
) -> Result<(tokio::process::Child, ProcessHandle), RuntimeError> {
    let argv = launch.command.as_deref().unwrap_or_default();
    let Some((program, args)) = argv.split_first() else {
        return Err(RuntimeError::Start(
            "the process runtime needs executable.command".into(),
        ));
    };
    // Private to Spawner's user, as everything in its data directory.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(crate::LOG_FILE_MODE)
        .open(&launch.log_path)
        .map_err(|source| RuntimeError::Io {
            context: format!("opening log file {}", launch.log_path.display()),
            source,
        })?;
    let log_err = log.try_clone().map_err(|source| RuntimeError::Io {
        context: "duplicating the log file handle".into(),
        source,
    })?;

    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .kill_on_drop(false);
    // Spawner's own environment (its token, the operator's secrets) is not the backend's
    // business: only what `inherited` lets through.
    cmd.env_clear()
        .envs(inherited.iter().map(|(k, v)| (k, v)))
        .envs(&launch.env)
        .env("SPAWNER_INSTANCE", &launch.instance);
    if let Some(dir) = &launch.spec.executable.working_dir {
        cmd.current_dir(dir);
    }
    let child = cmd.spawn().map_err(|e| {
        let what = match e.kind() {
            std::io::ErrorKind::NotFound => match &launch.spec.executable.working_dir {
                Some(dir) if !std::path::Path::new(dir).is_dir() => {
                    format!("working_dir {dir:?} does not exist")
                }
                _ => format!("command not found: {program:?} (is it installed and on PATH?)"),
            },
            std::io::ErrorKind::PermissionDenied => {
                format!("permission denied running {program:?}")
            }
            _ => format!("could not start {program:?}: {e}"),
        };
        RuntimeError::Start(what)
    })?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| RuntimeError::Start("the process exited at once".into()))?;
    let start_time = proc_start_time(pid).unwrap_or(0);
    Ok((child, ProcessHandle { pid, start_time }))
}

/// How often an adopted process without a pidfd is looked at.
const POLL_ADOPTED: std::time::Duration = std::time::Duration::from_millis(250);

/// Resolves once the process has ended, by looking at `/proc` now and then; then kills
/// whatever is left of its group, as the pidfd watch does.
fn watch_by_polling(h: ProcessHandle) -> BoxFuture<'static, Exit> {
    async move {
        while is_alive(h) {
            tokio::time::sleep(POLL_ADOPTED).await;
        }
        kill_group(h.pid);
        Exit::Unknown
    }
    .boxed()
}

/// Kills whatever is left of a backend's process group; a no-op once it is empty.
fn kill_group(pgid: i32) {
    let _ = killpg(Pid::from_raw(pgid), NixSignal::SIGKILL);
}

fn is_alive(h: ProcessHandle) -> bool {
    match proc_stat(h.pid) {
        Some((state, start)) => {
            state != 'Z' && state != 'X' && (h.start_time == 0 || start == h.start_time)
        }
        None => false,
    }
}

fn proc_start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, start)| start)
}

/// The state letter and start time of a process, from `/proc/{pid}/stat`.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After ')' come fields 3.. ; start time is field 22, i.e. the 20th from here.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    debug_assert!(owned.as_raw_fd() >= 0);
    Ok(owned)
}

/// Every live process whose environment names this instance.
fn scan_proc(instance: &str) -> Vec<Owned> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    let inst_var = format!("SPAWNER_INSTANCE={instance}");
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let mut mine = false;
        let mut id = None;
        for var in environ.split(|b| *b == 0) {
            if var == inst_var.as_bytes() {
                mine = true;
            } else if let Some(v) = var.strip_prefix(b"SPAWNER_BACKEND_ID=") {
                id = std::str::from_utf8(v).ok().map(str::to_string);
            }
        }
        if let (true, Some(id), Some((state, start_time))) = (mine, id, proc_stat(pid)) {
            if state != 'Z' {
                found.push(Owned {
                    id,
                    handle: ProcessHandle { pid, start_time }.to_handle(),
                    describe: format!("pid {pid}"),
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::time::Duration;

    #[tokio::test]
    async fn a_process_watched_without_a_pidfd_is_followed_until_it_ends() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("sleep");
        let pid = i32::try_from(child.id()).expect("pid");
        let h = ProcessHandle {
            pid,
            start_time: proc_start_time(pid).expect("a start time"),
        };
        let mut watch = watch_by_polling(h);
        // Alive: the watch does not end, and does not harm the process.
        assert!(tokio::time::timeout(Duration::from_millis(600), &mut watch)
            .await
            .is_err());
        assert!(is_alive(h));
        // Ended (a zombie until reaped counts as ended): the watch ends.
        let _ = kill(Pid::from_raw(pid), NixSignal::SIGTERM);
        let exit = tokio::time::timeout(Duration::from_secs(10), watch)
            .await
            .expect("the watch ends once the process has");
        assert!(matches!(exit, Exit::Unknown));
        let _ = child.wait();
    }
}
