//! Readiness: the moment an application listens on its port.
//!
//! A connect probe per starting backend has to back off (a thousand backends probed every
//! millisecond is a million failed connections a second), so a slow starter is seen late by
//! up to its back-off. Instead, one thread per network namespace looks every 0.75–1 ms
//! ([`MIN_PERIOD`], [`MAX_PERIOD`]) whether any of the ports being waited for has a
//! listening socket: one socket-diagnostics dump (netlink `inet_diag`) of listening TCP
//! sockets of both address families, filtered in the kernel by a small program over those
//! ports, so its cost hardly depends on the number of waiters: one dump serves them all.
//! Nothing is dumped while nothing waits. The embedded server (process backends: its own
//! namespace; Docker containers: the container's) and the Kubernetes sidecar (the Pod's,
//! its own) use this.
//!
//! A dump walks the kernel's whole table of listening sockets (16,384 buckets on a machine
//! of 24 GiB: about 20 µs, more with cold caches), so a tick first reads the namespace's
//! socket counters (`/proc/thread-self/net/sockstat`, about 2 µs) and dumps only when they
//! moved since the last tick ([`SockStat`]): a socket that starts listening is counted in
//! `TCP: inuse` once it is in that table, so no listen goes by without a change. Only a
//! coincidence (another TCP socket leaving the table in the same tick, with no other
//! counter moving) hides it, until the next change or at most [`FULL_DUMP_EVERY`].
//!
//! Where netlink socket diagnostics are unavailable (a sandbox that refuses them, a kernel
//! without `inet_diag`), waiting falls back to connect probes with a back-off, and says so
//! once in the log.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::oneshot;

/// How often the listening sockets are looked at while something waits, at most and at
/// least: a backend is seen listening at most a period (plus the dump itself) late. Within
/// these bounds the period is [`PERIOD_PER_DUMP`] times the last tick's work, so that
/// dumping at every tick takes at most 4 % of a core while a dump lasts up to 40 µs (about
/// 20 µs on an idle machine, plus about 70 ns per listening socket of the whole machine).
pub const MIN_PERIOD: Duration = Duration::from_micros(750);
pub const MAX_PERIOD: Duration = Duration::from_millis(1);
const PERIOD_PER_DUMP: u32 = 25;
/// The longest run of ticks without a dump while something waits: the bound on how late a
/// listen hidden from the socket counters (see the module's notes) is seen. A dump after a
/// quiet while costs 150 µs or so (the table is out of the caches by then), so one every 50
/// ms is 0.3 % of a core.
pub const FULL_DUMP_EVERY: Duration = Duration::from_millis(50);
/// How long a namespace's thread stays once nothing waits in it, before it ends.
const IDLE_LINGER: Duration = Duration::from_secs(2);
/// The back-off of the connect probe (fallback, or the second opinion for other
/// namespaces): a tenth of the time already waited, within these bounds.
const PROBE_MIN: Duration = Duration::from_millis(1);
const PROBE_MAX: Duration = Duration::from_millis(100);

/// Watches the listening sockets of one network namespace. Cheap to clone.
#[derive(Clone)]
pub struct ListenWatch {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<Waiting>,
    wake: Condvar,
    /// Cleared once netlink turned out unusable here: waiters probe by connecting instead.
    netlink: AtomicBool,
    /// Where the namespace is (`None`: this process's own).
    namespace: Option<PathBuf>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Waiting {
    /// By port: who waits, for which address.
    by_port: HashMap<u16, Vec<Waiter>>,
    /// The kernel filter matches the ports of `by_port` (rebuilt when they change).
    filter_stale: bool,
    /// Whether the namespace's thread runs.
    thread: bool,
}

struct Waiter {
    id: u64,
    ip: IpAddr,
    tx: Option<oneshot::Sender<Seen>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Listening,
    /// Netlink failed: probe by connecting.
    Unavailable,
}

/// The watches by namespace (device and inode of its `ns/net` file), so that every backend of
/// one namespace shares one thread and one dump.
type Namespaces = Mutex<HashMap<(u64, u64), Weak<Inner>>>;

fn registry() -> &'static Namespaces {
    static REGISTRY: OnceLock<Namespaces> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn namespace_id(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

impl ListenWatch {
    /// The watch of this process's own network namespace (process backends, the sidecar's
    /// application in its Pod).
    pub fn own() -> ListenWatch {
        static OWN: OnceLock<ListenWatch> = OnceLock::new();
        OWN.get_or_init(|| ListenWatch {
            inner: Arc::new(Inner::new(None)),
        })
        .clone()
    }

    /// The watch of the network namespace at `path` (such as `/proc/PID/ns/net` of a
    /// container's process), shared with everyone watching the same namespace. Entering it
    /// needs `CAP_SYS_ADMIN`; without, its waits probe by connecting.
    pub fn of_namespace(path: &Path) -> ListenWatch {
        let Ok(key) = namespace_id(path) else {
            // Gone already (the process exited): nothing will listen there; let the connect
            // probe say so, as it does without netlink.
            let inner = Inner::new(Some(path.to_path_buf()));
            inner.netlink.store(false, Ordering::Relaxed);
            return ListenWatch {
                inner: Arc::new(inner),
            };
        };
        if namespace_id(Path::new("/proc/self/ns/net")).ok() == Some(key) {
            return Self::own();
        }
        let mut map = registry().lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(inner) = map.get(&key).and_then(Weak::upgrade) {
            return ListenWatch { inner };
        }
        let inner = Arc::new(Inner::new(Some(path.to_path_buf())));
        map.insert(key, Arc::downgrade(&inner));
        ListenWatch { inner }
    }

    /// Resolves once something listens where a connection to `addr` would land: on its
    /// address or on the wildcard address of its family (or `::` for IPv4, unless
    /// IPv6-only). Cancel-safe: dropping the future stops the waiting.
    pub async fn listening(&self, addr: SocketAddr) {
        if self.inner.netlink.load(Ordering::Relaxed) {
            let (rx, _registration) = self.register(addr);
            match rx.await {
                Ok(Seen::Listening) => return,
                Ok(Seen::Unavailable) | Err(_) => {}
            }
        }
        accepting(addr).await;
    }

    /// [`Self::listening`], and in case the namespace is not where connections to `addr`
    /// land after all (a container's process that is not the one named), also a connect
    /// probe with back-off: whichever sees it first. For namespaces other than one's own.
    pub async fn listening_or_accepting(&self, addr: SocketAddr) {
        tokio::select! {
            () = self.listening(addr) => {}
            () = accepting(addr) => {}
        }
    }

    fn register(&self, addr: SocketAddr) -> (oneshot::Receiver<Seen>, Registration) {
        let (tx, rx) = oneshot::channel();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut start = false;
        {
            let mut st = self.inner.lock();
            let list = st.by_port.entry(addr.port()).or_default();
            let new_port = list.is_empty();
            list.push(Waiter {
                id,
                ip: addr.ip(),
                tx: Some(tx),
            });
            st.filter_stale |= new_port;
            if !st.thread {
                st.thread = true;
                start = true;
            }
        }
        if start {
            let inner = self.inner.clone();
            let spawned = std::thread::Builder::new()
                .name("listen-watch".into())
                .spawn(move || watch_loop(inner));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the listen watch thread; probing by connecting");
                self.inner.give_up();
            }
        } else {
            self.inner.wake.notify_one();
        }
        let registration = Registration {
            inner: self.inner.clone(),
            port: addr.port(),
            id,
        };
        (rx, registration)
    }
}

/// Removes a waiter when its wait ends or is dropped.
struct Registration {
    inner: Arc<Inner>,
    port: u16,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        if let Some(list) = st.by_port.get_mut(&self.port) {
            list.retain(|w| w.id != self.id);
            if list.is_empty() {
                st.by_port.remove(&self.port);
                st.filter_stale = true;
            }
        }
    }
}

impl Inner {
    fn new(namespace: Option<PathBuf>) -> Inner {
        Inner {
            state: Mutex::new(Waiting::default()),
            wake: Condvar::new(),
            netlink: AtomicBool::new(true),
            namespace,
            next_id: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // The state stays consistent through a panic (plain inserts and removals).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Netlink is unusable here: every waiter, now and later, probes by connecting.
    fn give_up(&self) {
        self.netlink.store(false, Ordering::Relaxed);
        let mut st = self.lock();
        st.thread = false;
        for w in st.by_port.values_mut().flatten() {
            if let Some(tx) = w.tx.take() {
                let _ = tx.send(Seen::Unavailable);
            }
        }
    }
}

/// The thread of one namespace: dumps the listening sockets every tick while anyone waits.
fn watch_loop(inner: Arc<Inner>) {
    let diag = match &inner.namespace {
        None => Diag::open(),
        Some(path) => enter_namespace(path).and_then(|()| Diag::open()),
    };
    let mut diag = match diag {
        Ok(d) => d,
        Err(e) => {
            log_fallback(inner.namespace.as_deref(), &e);
            inner.give_up();
            return;
        }
    };
    // Opened in the namespace just entered; without it, every tick dumps.
    let mut counters = SockStat::open(Path::new("/proc/thread-self/net/sockstat"))
        .map_err(|e| tracing::debug!(error = %e, "no socket counters: every tick dumps"))
        .ok();
    let mut ports: Vec<u16> = Vec::new();
    let mut found: Vec<(IpAddr, u16, bool)> = Vec::new();
    let mut last_dump = std::time::Instant::now();
    loop {
        let mut must_dump = false;
        {
            let mut st = inner.lock();
            let mut idle_since = None;
            while st.by_port.is_empty() {
                // Nothing waits: sleep until someone does. A namespace other than one's own
                // is let go after a while, when nobody holds its watch any more.
                let waited = idle_since.get_or_insert_with(std::time::Instant::now);
                if inner.namespace.is_some()
                    && waited.elapsed() >= IDLE_LINGER
                    && Arc::strong_count(&inner) == 1
                {
                    st.thread = false;
                    return;
                }
                st = inner
                    .wake
                    .wait_timeout(st, IDLE_LINGER)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            if st.filter_stale {
                ports.clear();
                ports.extend(st.by_port.keys().copied());
                ports.sort_unstable();
                diag.set_ports(&ports);
                st.filter_stale = false;
                // A new waiter's application may listen already.
                must_dump = true;
            }
        }
        let tick_started = std::time::Instant::now();
        // Read before the dump: a listen the counters show is in the table the dump walks.
        let moved = match counters.as_mut().map(SockStat::moved) {
            None | Some(Ok(true)) => true,
            Some(Ok(false)) => false,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "socket counters unreadable: every tick dumps");
                counters = None;
                true
            }
        };
        if !(must_dump || moved || last_dump.elapsed() >= FULL_DUMP_EVERY) {
            sleep_rest_of_tick(tick_started.elapsed());
            continue;
        }
        last_dump = tick_started;
        found.clear();
        if let Err(e) = diag.listening(&mut found) {
            log_fallback(inner.namespace.as_deref(), &e);
            inner.give_up();
            return;
        }
        if !found.is_empty() {
            let mut st = inner.lock();
            for &(ip, port, v6only) in &found {
                if let Some(list) = st.by_port.get_mut(&port) {
                    for w in list.iter_mut().filter(|w| reaches(w.ip, ip, v6only)) {
                        if let Some(tx) = w.tx.take() {
                            let _ = tx.send(Seen::Listening);
                        }
                    }
                }
            }
        }
        sleep_rest_of_tick(tick_started.elapsed());
    }
}

/// Sleeps out the tick whose work took `took`: [`PERIOD_PER_DUMP`] times that, within
/// [`MIN_PERIOD`] and [`MAX_PERIOD`].
fn sleep_rest_of_tick(took: Duration) {
    let period = (took * PERIOD_PER_DUMP).clamp(MIN_PERIOD, MAX_PERIOD);
    std::thread::sleep(period.saturating_sub(took));
}

/// A network namespace's socket counters (`sockstat`: sockets in use, TCP sockets in the
/// kernel's tables, in time-wait, allocated, their memory), read again in place each tick
/// to tell whether anything changed since the last read.
struct SockStat {
    file: std::fs::File,
    last: Vec<u8>,
    buf: Vec<u8>,
}

impl SockStat {
    fn open(path: &Path) -> io::Result<SockStat> {
        let mut counters = SockStat {
            file: std::fs::File::open(path)?,
            last: Vec::new(),
            buf: vec![0; 4096],
        };
        counters.moved()?;
        Ok(counters)
    }

    /// Whether the counters differ from the last read.
    fn moved(&mut self) -> io::Result<bool> {
        use std::os::unix::fs::FileExt;
        // The file is generated whole at each read from its start (a few hundred bytes).
        let n = self.file.read_at(&mut self.buf, 0)?;
        let now = &self.buf[..n];
        if now == self.last.as_slice() {
            return Ok(false);
        }
        self.last.clear();
        self.last.extend_from_slice(now);
        Ok(true)
    }
}

fn log_fallback(namespace: Option<&Path>, e: &io::Error) {
    static SAID: AtomicBool = AtomicBool::new(false);
    let ns = namespace.map_or_else(|| "own".to_string(), |p| p.display().to_string());
    if !SAID.swap(true, Ordering::Relaxed) {
        tracing::warn!(error = %e, namespace = %ns, "netlink socket diagnostics unavailable: readiness is probed by connecting, with a back-off (seen up to a tenth of the start-up late)");
    } else {
        tracing::debug!(error = %e, namespace = %ns, "netlink socket diagnostics unavailable");
    }
}

/// Whether a listener on `listen` (IPv6-only or not) takes connections to `want`.
fn reaches(want: IpAddr, listen: IpAddr, v6only: bool) -> bool {
    if want == listen {
        return true;
    }
    match listen {
        IpAddr::V4(l) => match to_v4(want) {
            IpAddr::V4(w) => l.is_unspecified() || l == w,
            IpAddr::V6(_) => false,
        },
        IpAddr::V6(l) => {
            if l.is_unspecified() {
                return want.is_ipv6() || !v6only;
            }
            // A listener on a v4-mapped address takes that IPv4 address's connections.
            match (l.to_ipv4_mapped(), want) {
                (Some(m), IpAddr::V4(w)) => m == w,
                _ => false,
            }
        }
    }
}

fn to_v4(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Resolves once a connection to `addr` is accepted: connects, backing off by a tenth of
/// the time already waited (1 ms at first, at most 100 ms), so it may see a slow starter up
/// to a tenth of its start-up late. For where no namespace to watch is known.
pub async fn accepting(addr: SocketAddr) {
    let since = std::time::Instant::now();
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        let delay = (since.elapsed() / 10).clamp(PROBE_MIN, PROBE_MAX);
        tokio::time::sleep(delay).await;
    }
}

/// Moves this thread into the network namespace at `path`.
fn enter_namespace(path: &Path) -> io::Result<()> {
    let file = std::fs::File::open(path)?;
    // SAFETY: setns takes a descriptor of a namespace file and a namespace type; it only
    // changes this (dedicated) thread's namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// --- netlink socket diagnostics -------------------------------------------------------

const TCPDIAG_GETSOCK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_LISTEN: u32 = 10;
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const INET_DIAG_SKV6ONLY: u16 = 11;
const BC_JMP: u8 = 1;
const BC_S_GE: u8 = 2;
const BC_S_LE: u8 = 3;
/// Header (16) + `inet_diag_req` (60).
const REQ_LEN: usize = 76;
/// `inet_diag_msg`.
const MSG_LEN: usize = 72;
/// Runs of ports in the filter program (see [`filter_program`]).
const MAX_RUNS: usize = 16;

/// One netlink socket-diagnostics socket, and the filter for the ports waited for.
struct Diag {
    fd: OwnedFd,
    /// The dump request, with its filter, for AF_INET; the AF_INET6 one differs by a byte.
    request: Vec<u8>,
    buf: Vec<u8>,
    seq: u32,
}

impl Diag {
    fn open() -> io::Result<Diag> {
        // SAFETY: plain socket(2); the descriptor is owned right below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut diag = Diag {
            fd,
            request: Vec::new(),
            buf: vec![0; 64 * 1024],
            seq: 0,
        };
        // Try a dump at once, so that an unusable netlink shows before anyone relies on it.
        diag.set_ports(&[]);
        diag.listening(&mut Vec::new())?;
        Ok(diag)
    }

    /// Builds the dump request for listening TCP sockets on `ports` (sorted). It is the
    /// older `inet_diag_req` (`TCPDIAG_GETSOCK`), which, unlike `SOCK_DIAG_BY_FAMILY`,
    /// dumps both address families in one walk of the kernel's listening sockets.
    fn set_ports(&mut self, ports: &[u16]) {
        let program = filter_program(ports);
        let attr_len = 4 + program.len();
        let total = REQ_LEN + attr_len;
        let mut r = Vec::with_capacity(total);
        r.extend_from_slice(&(total as u32).to_ne_bytes());
        r.extend_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        r.extend_from_slice(&flags.to_ne_bytes());
        r.extend_from_slice(&0u32.to_ne_bytes()); // seq, set per dump
        r.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        r.push(libc::AF_INET as u8); // ignored: both families
        r.push(0); // source prefix length
        r.push(0); // destination prefix length
        r.push(0); // no extensions
        r.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: any
        r.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
        r.extend_from_slice(&0u32.to_ne_bytes()); // idiag_dbs
        r.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        r.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        r.extend_from_slice(&program);
        debug_assert_eq!(r.len(), total);
        self.request = r;
    }

    /// Appends every listening socket the filter lets through: address, port, IPv6-only.
    fn listening(&mut self, out: &mut Vec<(IpAddr, u16, bool)>) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        self.request[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        // SAFETY: sockaddr_nl is plain data; all zeroes is the kernel's address.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: the buffer and the address are valid for the given lengths.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                self.request.as_ptr().cast(),
                self.request.len(),
                0,
                std::ptr::addr_of!(kernel).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            // SAFETY: recv into our own buffer, within its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let n = n as usize;
            if parse(&self.buf[..n], self.seq, out)? {
                return Ok(());
            }
        }
    }
}

/// Parses one datagram of a dump; `true` once the dump is done.
fn parse(mut data: &[u8], seq: u32, out: &mut Vec<(IpAddr, u16, bool)>) -> io::Result<bool> {
    let u16_at = |d: &[u8], i: usize| u16::from_ne_bytes([d[i], d[i + 1]]);
    let u32_at = |d: &[u8], i: usize| u32::from_ne_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
    while data.len() >= 16 {
        let len = u32_at(data, 0) as usize;
        if len < 16 || len > data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad netlink message",
            ));
        }
        let kind = u16_at(data, 4);
        let msg_seq = u32_at(data, 8);
        let body = &data[16..len];
        data = &data[len.next_multiple_of(4).min(data.len())..];
        if msg_seq != seq {
            continue; // left from an earlier, failed dump
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = if body.len() >= 4 {
                    i32::from_ne_bytes([body[0], body[1], body[2], body[3]])
                } else {
                    -libc::EINVAL
                };
                if code == 0 {
                    continue;
                }
                return Err(io::Error::from_raw_os_error(-code));
            }
            TCPDIAG_GETSOCK if body.len() >= MSG_LEN => {
                let family = body[0];
                // inet_diag_sockid: sport (network order) at 4, src address at 8.
                let port = u16::from_be_bytes([body[4], body[5]]);
                let src: [u8; 16] = body[8..24].try_into().unwrap_or([0; 16]);
                let ip = if family == libc::AF_INET as u8 {
                    IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3]))
                } else {
                    IpAddr::V6(Ipv6Addr::from(src))
                };
                let mut v6only = false;
                let mut attrs = &body[MSG_LEN..];
                while attrs.len() >= 4 {
                    let alen = usize::from(u16_at(attrs, 0));
                    if alen < 4 || alen > attrs.len() {
                        break;
                    }
                    if u16_at(attrs, 2) == INET_DIAG_SKV6ONLY && alen >= 5 {
                        v6only = attrs[4] != 0;
                    }
                    attrs = &attrs[alen.next_multiple_of(4).min(attrs.len())..];
                }
                out.push((ip, port, v6only));
            }
            _ => {}
        }
    }
    Ok(false)
}

/// An `inet_diag` filter program that lets through sockets whose local port is in `ports`
/// (sorted), or near: a binary search over at most [`MAX_RUNS`] runs of ports, so each
/// socket costs a few comparisons. The kernel checks a program before each dump in time
/// quadratic in its length, hence the few runs: waiting ports close together (the process
/// runtime hands them out in turn) are merged into one run, and what a run lets through in
/// excess is dropped when the result is read.
///
/// The kernel only runs programs whose every instruction lies on the path of "yes"
/// branches, so that path is the whole program in order (each instruction's "yes" is the
/// next one) and the search branches with "no" jumps: a node tests `port >= first of the
/// upper half`; yes goes on into the upper half, no jumps over it to the lower one; a leaf
/// tests its run's bounds and ends in an unconditional jump to "accept". With no port, the
/// program accepts nothing.
fn filter_program(ports: &[u16]) -> Vec<u8> {
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for &p in ports {
        match runs.last_mut() {
            Some((_, hi)) if u32::from(*hi) + 1 >= u32::from(p) => *hi = (*hi).max(p),
            _ => runs.push((p, p)),
        }
    }
    if runs.is_empty() {
        // An impossible range: port >= 1 and port <= 0.
        runs.push((1, 0));
    }
    while runs.len() > MAX_RUNS {
        let Some(i) = (0..runs.len() - 1).min_by_key(|&i| runs[i + 1].0 - runs[i].1) else {
            break;
        };
        runs[i].1 = runs[i + 1].1;
        runs.remove(i + 1);
    }
    let len = program_len(runs.len());
    let mut out = Vec::with_capacity(len);
    emit(&runs, len, &mut out);
    out
}

fn program_len(runs: usize) -> usize {
    20 * runs + 8 * runs.saturating_sub(1)
}

/// Appends the search over `runs`; `total` is the whole program's length, where jumps to
/// `total` accept and to `total + 4` reject.
fn emit(runs: &[(u16, u16)], total: usize, out: &mut Vec<u8>) {
    let op = |out: &mut Vec<u8>, code: u8, yes: u8, no: usize| {
        out.push(code);
        out.push(yes);
        out.extend_from_slice(&(no as u16).to_ne_bytes());
    };
    // A port comparison carries its port in the "no" field of a second instruction.
    let compare = |out: &mut Vec<u8>, code: u8, port: u16, no_target: usize| {
        let here = out.len();
        op(out, code, 8, no_target - here);
        op(out, 0, 0, usize::from(port));
    };
    match runs {
        [] => {}
        [(lo, hi)] => {
            compare(out, BC_S_GE, *lo, total + 4);
            compare(out, BC_S_LE, *hi, total + 4);
            let here = out.len();
            op(out, BC_JMP, 4, total - here);
        }
        _ => {
            let (lower, upper) = runs.split_at(runs.len() / 2);
            let lower_at = out.len() + 8 + program_len(upper.len());
            compare(out, BC_S_GE, upper[0].0, lower_at);
            emit(upper, total, out);
            emit(lower, total, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a filter program as the kernel does, for a socket on `port`.
    fn run(program: &[u8], port: u16) -> bool {
        let mut at = 0usize;
        let len = program.len();
        while at < len {
            let code = program[at];
            let yes_step = usize::from(program[at + 1]);
            let no_step = usize::from(u16::from_ne_bytes([program[at + 2], program[at + 3]]));
            let arg = || u16::from_ne_bytes([program[at + 6], program[at + 7]]);
            let yes = match code {
                BC_S_GE => port >= arg(),
                BC_S_LE => port <= arg(),
                BC_JMP => false,
                other => panic!("unexpected instruction {other}"),
            };
            at += if yes { yes_step } else { no_step };
        }
        at == len
    }

    #[test]
    fn the_filter_accepts_exactly_the_ports() {
        let ports = [1u16, 5, 6, 7, 100, 20000, 20001, 20003, 29999, 65535];
        assert!(ports.len() <= MAX_RUNS);
        for n in 0..=ports.len() {
            let program = filter_program(&ports[..n]);
            for p in (0..=65535u16).step_by(1).filter(|p| *p < 200 || *p > 19990) {
                assert_eq!(run(&program, p), ports[..n].contains(&p), "n {n} port {p}");
            }
        }
    }

    #[test]
    fn many_ports_are_merged_into_few_runs_that_hold_them_all() {
        let ports: Vec<u16> = (0..5000u16).map(|i| 20000 + 2 * i).chain([40000]).collect();
        let program = filter_program(&ports);
        assert!(program.len() <= program_len(MAX_RUNS));
        assert!(ports.iter().all(|&p| run(&program, p)));
        assert!(!run(&program, 19999));
        assert!(!run(&program, 39999));
    }

    /// In a network namespace of its own (nothing else happens there), a listen alone moves
    /// the counters that gate the dumps, and nothing moves them while nothing happens.
    #[test]
    fn a_listen_alone_moves_the_socket_counters() {
        std::thread::spawn(|| {
            // SAFETY: unshare of the network namespace affects this thread only.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                panic!(
                    "this test needs a network namespace of its own (CAP_SYS_ADMIN: run it as \
                     root, as scripts/test does): {}",
                    io::Error::last_os_error()
                );
            }
            let path = Path::new("/proc/thread-self/net/sockstat");
            let mut counters = SockStat::open(path).expect("sockstat");
            assert!(
                !counters.moved().expect("read"),
                "moved with nothing happening"
            );
            // SAFETY: plain socket(2) and bind(2) on a descriptor owned right away.
            let fd =
                unsafe { OwnedFd::from_raw_fd(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0)) };
            let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            addr.sin_family = libc::AF_INET as u16;
            addr.sin_port = 41999u16.to_be();
            let bound = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    std::ptr::addr_of!(addr).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            assert_eq!(bound, 0, "bind: {}", io::Error::last_os_error());
            counters.moved().expect("read");
            assert!(
                !counters.moved().expect("read"),
                "moved with nothing happening"
            );
            // SAFETY: listen(2) on the socket above.
            assert_eq!(unsafe { libc::listen(fd.as_raw_fd(), 16) }, 0);
            assert!(
                counters.moved().expect("read"),
                "a listen left the counters as they were"
            );
            assert!(
                !counters.moved().expect("read"),
                "moved with nothing happening"
            );
        })
        .join()
        .expect("the test's thread");
    }

    #[test]
    fn wildcards_reach_their_families() {
        let lo4: IpAddr = Ipv4Addr::LOCALHOST.into();
        let any4: IpAddr = Ipv4Addr::UNSPECIFIED.into();
        let any6: IpAddr = Ipv6Addr::UNSPECIFIED.into();
        let lo6: IpAddr = Ipv6Addr::LOCALHOST.into();
        assert!(reaches(lo4, lo4, false));
        assert!(reaches(lo4, any4, false));
        assert!(reaches(lo4, any6, false));
        assert!(!reaches(lo4, any6, true));
        assert!(!reaches(lo4, lo6, false));
        assert!(!reaches(lo6, any4, false));
        assert!(reaches(lo6, any6, true));
        let other: IpAddr = Ipv4Addr::new(127, 0, 0, 2).into();
        assert!(!reaches(lo4, other, false));
        let mapped: IpAddr = Ipv4Addr::LOCALHOST.to_ipv6_mapped().into();
        assert!(reaches(lo4, mapped, false));
    }
}
