//! Processes, probes, statistics and clocks shared by every phase.

use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The environment variable that marks every process of one run (and, by inheritance,
/// every backend Spawner starts for it), so that a cleanup can find what is left.
pub const RUN_VAR: &str = "SPAWNER_BENCH_RUN";

/// A child process in its own process group, killed with its whole group when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    pid: i32,
}

impl Proc {
    /// Starts `cmd` in a new process group, tagged with the run token, output to `log`.
    pub fn start(name: &str, mut cmd: Command, token: &str, log: &Path) -> Result<Proc> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.env(RUN_VAR, token)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .with_context(|| format!("{name} exited at once"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            pid,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits until the process accepts connections at `addr`; fails early if it exits.
    pub async fn wait_port(&mut self, addr: SocketAddr, limit: Duration) -> Result<()> {
        let since = Instant::now();
        loop {
            self.check_alive()?;
            if wait_port(addr, Duration::from_millis(500)).await.is_ok() {
                return Ok(());
            }
            if since.elapsed() > limit {
                bail!(
                    "{} does not accept connections at {addr} after {limit:?}",
                    self.name
                );
            }
        }
    }

    /// Sends SIGTERM to the process (not its group).
    pub fn signal_term(&self) {
        // SAFETY: kill(2) on a pid this harness started; no memory is involved.
        unsafe {
            libc::kill(self.pid, libc::SIGTERM);
        }
    }

    /// SIGTERM, then how long the process took to exit (an error after `limit`).
    pub async fn terminate_and_wait(&mut self, limit: Duration) -> Result<Duration> {
        let since = Instant::now();
        self.signal_term();
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => {
                status?;
                Ok(since.elapsed())
            }
            Err(_) => bail!("{} did not exit within {limit:?} of SIGTERM", self.name),
        }
    }

    /// Kills the process group and waits for the process to be gone.
    pub async fn stop(mut self) {
        kill_group(self.pid);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    /// Fails if the process has exited already.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        kill_group(self.pid);
    }
}

/// SIGKILLs a process group (a no-op once it is gone).
pub fn kill_group(pgid: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// The ids of the processes alive now (none if `/proc` cannot be read).
fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
}

/// Kills every process (and its process group) whose environment carries the run token:
/// the fallback that leaves nothing behind, also after a crash of the harness.
pub fn kill_tagged(token: &str) -> usize {
    let marker = format!("{RUN_VAR}={token}");
    // SAFETY: getpid/getpgrp have no preconditions.
    let (me, my_group) = unsafe { (libc::getpid(), libc::getpgrp()) };
    let mut killed = 0;
    for pid in pids() {
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
            // SAFETY: getpgid and kill take plain integers.
            unsafe {
                let group = libc::getpgid(pid);
                if group > 1 && group != my_group {
                    libc::kill(-group, libc::SIGKILL);
                }
                libc::kill(pid, libc::SIGKILL);
            }
            killed += 1;
        }
    }
    killed
}

/// A port nothing listens on now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Probes `addr` the way Spawner's readiness probe does: connect, and back off a tenth of
/// the time waited (1 ms to 100 ms). Returns when a connection is accepted.
pub async fn wait_port(addr: SocketAddr, limit: Duration) -> Result<Duration> {
    let since = Instant::now();
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(since.elapsed());
        }
        let waited = since.elapsed();
        if waited > limit {
            bail!("nothing accepted connections at {addr} within {limit:?}");
        }
        let delay = (waited / 10).clamp(Duration::from_millis(1), Duration::from_millis(100));
        tokio::time::sleep(delay).await;
    }
}

/// Resident memory of a process in KiB (VmRSS).
pub fn rss_kib(pid: i32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/{pid}/status")
}

/// CPU time (user + system, all threads) that process `pid` has used so far, and with
/// `children` also that of its live child processes (nginx's workers under their master).
pub fn cpu_time(pid: i32, children: bool) -> Result<Duration> {
    let mut ticks = stat_ticks(pid)?.1;
    if children {
        for child in pids() {
            // A process may end between the listing and the read: it then counts for nothing.
            if let Ok((parent, t)) = stat_ticks(child) {
                if parent == pid {
                    ticks += t;
                }
            }
        }
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100);
    Ok(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// The parent and the utime + stime clock ticks of a process, from `/proc/PID/stat`.
fn stat_ticks(pid: i32) -> Result<(i32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces; the fields follow the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let num = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("no field {i} in /proc/{pid}/stat"))
    };
    let parent = i32::try_from(num(1)?).unwrap_or(0);
    Ok((parent, num(11)? + num(12)?))
}

/// The soft limit on open files of this process (children inherit it).
pub fn nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc == 0 {
        lim.rlim_cur
    } else {
        1024
    }
}

/// Raises the soft limit on open files to the hard limit.
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain struct in, plain struct out.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Milliseconds since the epoch, by the wall clock (comparable with Spawner's timestamps).
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Microseconds since the epoch, by the wall clock (comparable across processes).
pub fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.mmm]Z` into milliseconds since the epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let frac3: String = frac.chars().chain("000".chars()).take(3).collect();
    let ms: i64 = frac3.parse().ok()?;
    // Days from the civil date (proleptic Gregorian), after H. Hinnant's well-known formula.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms)
}

/// A distribution of samples (milliseconds unless named otherwise).
#[derive(Debug, Clone, Default)]
pub struct Dist {
    sorted: Vec<f64>,
}

impl Dist {
    pub fn new(mut samples: Vec<f64>) -> Self {
        samples.retain(|v| v.is_finite());
        samples.sort_by(f64::total_cmp);
        Dist { sorted: samples }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The nearest-rank percentile `q` in 0..=100 (NaN when empty).
    pub fn pct(&self, q: f64) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((q / 100.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    pub fn max(&self) -> f64 {
        self.sorted.last().copied().unwrap_or(f64::NAN)
    }

    pub fn mean(&self) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        self.sorted.iter().sum::<f64>() / self.sorted.len() as f64
    }

    /// p50, p90, p99, max and count as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "n": self.len(),
            "p50": round3(self.pct(50.0)),
            "p90": round3(self.pct(90.0)),
            "p99": round3(self.pct(99.0)),
            "max": round3(self.max()),
            "mean": round3(self.mean()),
        })
    }
}

/// The median of a few figures (NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    Dist::new(values.to_vec()).pct(50.0)
}

/// Three decimals, and NaN as null in JSON.
pub fn round3(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!((v * 1000.0).round() / 1000.0)
    } else {
        serde_json::Value::Null
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let d = Dist::new((1..=100).map(f64::from).collect());
        assert_eq!(d.pct(50.0), 50.0);
        assert_eq!(d.pct(99.0), 99.0);
        assert_eq!(d.pct(100.0), 100.0);
        assert!(Dist::new(vec![]).pct(50.0).is_nan());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn parses_timestamps() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2000-03-01T00:00:01.5Z"),
            Some(951_868_801_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-23T20:17:15.123Z"),
            Some(1_795_465_035_123)
        );
        assert_eq!(parse_rfc3339_ms("garbage"), None);
    }

    #[test]
    fn counts_cpu_time_of_a_process_and_its_children() {
        // A child that burns CPU for a moment, then waits to be counted.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5",
            ])
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let started = Instant::now();
        let mut counted = Duration::ZERO;
        while started.elapsed() < Duration::from_secs(5) {
            counted = cpu_time(me, true)
                .unwrap()
                .saturating_sub(cpu_time(me, false).unwrap());
            if counted >= Duration::from_millis(50) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            counted >= Duration::from_millis(50),
            "children's CPU: {counted:?}"
        );
        assert!(cpu_time(-1, false).is_err());
    }
}
