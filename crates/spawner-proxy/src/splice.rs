//! Moving a body from one socket to another without copying it through the proxy:
//! `splice(2)` from the source socket into a pipe, and from the pipe into the destination,
//! so the kernel moves page references instead of the proxy reading and writing the bytes
//! (HAProxy's `option splice-auto` does the same). Used by the relay for `Content-Length`
//! bodies above [`THRESHOLD`]; the relay still counts every byte, so the framing is enforced
//! exactly as on the copying path, and anything splice cannot take falls back to copying.
//!
//! A [`Pipe`] belongs to one client connection, made the first time it moves a large body;
//! connections that never do (WebSockets, small requests) never hold one.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bodies with at least this much still to move are spliced; below it, a copy costs less
/// than the two system calls per pipeful.
pub(crate) const THRESHOLD: u64 = 64 * 1024;

/// How much a pipe holds: as much as one splice moves. The kernel allocates its pages as data
/// arrives, so an empty pipe costs a few hundred bytes whatever its size.
const PIPE_SIZE: libc::c_int = 256 * 1024;

/// A pipe between two sockets; its ends are closed when dropped.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe now.
    held: usize,
    /// What the pipe holds at most (the kernel may round [`PIPE_SIZE`]).
    capacity: usize,
}

impl Pipe {
    pub(crate) fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ takes an int; on failure the pipe keeps its default size.
        let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        let capacity = if size > 0 { size as usize } else { 64 * 1024 };
        Ok(Pipe {
            read,
            write,
            held: 0,
            capacity,
        })
    }

    /// Moves exactly `len` bytes from `from` to `to`. An error means the connections cannot
    /// be used again: a short body (`from` ended first) or a failed write; `Source` says
    /// which side failed.
    pub(crate) async fn transfer(
        &mut self,
        from: &TcpStream,
        to: &TcpStream,
        len: u64,
    ) -> Result<(), Failed> {
        let mut left = len;
        while left > 0 || self.held > 0 {
            let mut progressed = false;
            if left > 0 && self.held < self.capacity {
                let want = (left as usize).min(self.capacity - self.held);
                match self.fill(from, want) {
                    Ok(0) => return Err(Failed::Source),
                    Ok(n) => {
                        left -= n as u64;
                        self.held += n;
                        progressed = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Err(Failed::Source),
                }
            }
            if self.held > 0 {
                let held = self.held;
                match to.try_io(Interest::WRITABLE, || {
                    splice(self.read.as_raw_fd(), to.as_raw_fd(), held)
                }) {
                    Ok(n) => {
                        self.held -= n;
                        progressed = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Err(Failed::Destination),
                }
            }
            if progressed {
                continue;
            }
            // Neither side can move now: wait for the one that holds things up.
            let wait_source = left > 0 && self.held == 0;
            let ready = if wait_source {
                from.readable().await.map_err(|_| Failed::Source)
            } else {
                to.writable().await.map_err(|_| Failed::Destination)
            };
            ready?;
        }
        crate::busy_poll::note_activity();
        Ok(())
    }

    /// One splice from `from` into the pipe. With the pipe empty, nothing but the socket can
    /// hold it up, so a "would block" clears the socket's readiness; with bytes in the pipe
    /// it may be the pipe that is full, and the socket's readiness is left alone.
    fn fill(&mut self, from: &TcpStream, want: usize) -> io::Result<usize> {
        let (src, dst) = (from.as_raw_fd(), self.write.as_raw_fd());
        if self.held == 0 {
            from.try_io(Interest::READABLE, || splice(src, dst, want))
        } else {
            splice(src, dst, want)
        }
    }
}

/// Which side of a transfer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failed {
    Source,
    Destination,
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (their owners are
    // borrowed by the caller), and null offsets are required for sockets and pipes.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
