//! Fd-readiness plumbing shared by the lab's packet threads (delay lines, captures):
//! a stop signal and a timer that are fds, and a wait on several fds with an optional
//! nanosecond timeout.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::error::cvt;

/// A one-way "stop now" signal a thread can wait on next to its socket (an eventfd).
#[derive(Debug)]
pub(crate) struct StopSignal {
    fd: OwnedFd,
}

impl StopSignal {
    pub(crate) fn new() -> io::Result<StopSignal> {
        // SAFETY: plain syscall; the result is checked.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: eventfd returned a fresh descriptor that nothing else owns.
        Ok(StopSignal {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Makes the fd readable for good (the counter is never read back).
    pub(crate) fn raise(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64. An error (counter overflow after
        // 2^64 - 1 raises) leaves the fd readable anyway, which is all that matters.
        let _ = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Blocks until one of `fds` is readable, or `timeout` passes (`None`: no timeout),
/// and says which are readable (all false after a timeout or a signal).
///
/// ppoll takes a timespec, so the timeout has nanosecond resolution (epoll_wait's is a
/// millisecond, too coarse for packet timing); the kernel adds a slack of 0.1 % of the
/// timeout (at least the thread's timer slack), so exact deadlines use a timerfd.
pub(crate) fn wait_readable<const N: usize>(
    fds: [RawFd; N],
    timeout: Option<Duration>,
) -> io::Result<[bool; N]> {
    let mut pollfds = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let timespec = timeout.map(timespec_of);
    let timespec_ptr = timespec
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: pollfds is a valid array of N pollfds; timespec_ptr is null or points to
    // a timespec that lives until the call returns; a null sigmask keeps the mask.
    let ret = unsafe {
        libc::ppoll(
            pollfds.as_mut_ptr(),
            N as libc::nfds_t,
            timespec_ptr,
            std::ptr::null(),
        )
    };
    if ret == -1 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok([false; N]);
        }
        return Err(err);
    }
    if pollfds.iter().any(|pfd| pfd.revents & libc::POLLNVAL != 0) {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    Ok(pollfds.map(|pfd| pfd.revents & (libc::POLLIN | libc::POLLERR) != 0))
}

fn timespec_of(t: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(t.subsec_nanos()),
    }
}

/// A one-shot CLOCK_MONOTONIC timer that is an fd: readable once it has expired.
/// Unlike a poll timeout it fires with no slack.
#[derive(Debug)]
pub(crate) struct Timer {
    fd: OwnedFd,
}

impl Timer {
    pub(crate) fn new() -> io::Result<Timer> {
        // SAFETY: plain syscall; the result is checked.
        let fd = cvt(unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        })?;
        // SAFETY: timerfd_create returned a fresh descriptor that nothing else owns.
        Ok(Timer {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Arms the timer to expire `after` from now (re-arming replaces the previous
    /// expiry and clears a pending one); `None` disarms it.
    pub(crate) fn set(&self, after: Option<Duration>) -> io::Result<()> {
        let value = match after {
            // A zero it_value would disarm: expire as soon as possible instead.
            Some(after) => timespec_of(after.max(Duration::from_nanos(1))),
            None => timespec_of(Duration::ZERO),
        };
        let spec = libc::itimerspec {
            it_interval: timespec_of(Duration::ZERO),
            it_value: value,
        };
        // SAFETY: spec is valid; the old value is not wanted.
        cvt(unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) })
            .map(drop)
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Raises a socket's receive buffer past `net.core.rmem_max` (needs CAP_NET_ADMIN).
pub(crate) fn force_receive_buffer(fd: RawFd, bytes: usize) -> io::Result<()> {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: valid option value of the right size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_raised_stop_signal_wakes_the_waiter_and_stays_raised() {
        let stop = StopSignal::new().unwrap();
        let data = StopSignal::new().unwrap();
        let ready = wait_readable([data.raw_fd(), stop.raw_fd()], Some(Duration::ZERO)).unwrap();
        assert_eq!(ready, [false, false]);
        stop.raise();
        for _ in 0..2 {
            let ready = wait_readable([data.raw_fd(), stop.raw_fd()], None).unwrap();
            assert_eq!(ready, [false, true]);
        }
    }

    #[test]
    fn a_timer_fires_once_after_its_time_and_can_be_disarmed() {
        let timer = Timer::new().unwrap();
        let start = Instant::now();
        timer.set(Some(Duration::from_micros(500))).unwrap();
        let ready = wait_readable([timer.raw_fd()], Some(Duration::from_secs(5))).unwrap();
        assert_eq!(ready, [true]);
        assert!(start.elapsed() >= Duration::from_micros(500));
        // Re-arming clears the expiry; disarming means it never fires.
        timer.set(None).unwrap();
        let ready = wait_readable([timer.raw_fd()], Some(Duration::from_millis(20))).unwrap();
        assert_eq!(ready, [false]);
    }

    #[test]
    fn the_timeout_is_honoured_below_a_millisecond() {
        let stop = StopSignal::new().unwrap();
        let data = StopSignal::new().unwrap();
        let start = Instant::now();
        let ready = wait_readable(
            [data.raw_fd(), stop.raw_fd()],
            Some(Duration::from_micros(300)),
        )
        .unwrap();
        let waited = start.elapsed();
        assert_eq!(ready, [false, false]);
        assert!(waited >= Duration::from_micros(300), "{waited:?}");
    }
}
