//! Fd-readiness plumbing shared by the lab's packet threads (delay lines, captures):
//! a stop signal that is itself an fd, and a precise wait on two fds with an optional
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

/// Which of the two fds passed to [`wait_readable`] became readable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ready {
    pub(crate) data: bool,
    pub(crate) stop: bool,
}

/// Blocks until `data` or `stop` is readable, or `timeout` passes (`None`: no timeout).
///
/// ppoll takes a timespec, so the timeout has nanosecond resolution (epoll_wait's is a
/// millisecond, too coarse for a delay line); together with a small timer slack on the
/// calling thread the wake-up lands within tens of microseconds of the deadline.
pub(crate) fn wait_readable(
    data: RawFd,
    stop: RawFd,
    timeout: Option<Duration>,
) -> io::Result<Ready> {
    let mut fds = [
        libc::pollfd {
            fd: data,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let timespec = timeout.map(|t| libc::timespec {
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(t.subsec_nanos()),
    });
    let timespec_ptr = timespec
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: fds is a valid array of 2 pollfds; timespec_ptr is null or points to a
    // timespec that lives until the call returns; a null sigmask keeps the mask.
    let ret = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, timespec_ptr, std::ptr::null()) };
    if ret == -1 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(Ready::default());
        }
        return Err(err);
    }
    let readable = |pfd: &libc::pollfd| pfd.revents & (libc::POLLIN | libc::POLLERR) != 0;
    if fds[0].revents & libc::POLLNVAL != 0 || fds[1].revents & libc::POLLNVAL != 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    Ok(Ready {
        data: readable(&fds[0]),
        stop: readable(&fds[1]),
    })
}

/// Lets the calling thread's timers fire within `slack` of their deadline instead of
/// the default 50 µs (timer slack only ever makes wake-ups later).
pub(crate) fn set_timer_slack(slack: Duration) -> io::Result<()> {
    let nanos = libc::c_ulong::try_from(slack.as_nanos().max(1)).unwrap_or(libc::c_ulong::MAX);
    // SAFETY: PR_SET_TIMERSLACK takes an unsigned long and affects only this thread.
    cvt(unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, nanos, 0, 0, 0) }).map(drop)
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
        let ready = wait_readable(data.raw_fd(), stop.raw_fd(), Some(Duration::ZERO)).unwrap();
        assert_eq!(ready, Ready::default());
        stop.raise();
        for _ in 0..2 {
            let ready = wait_readable(data.raw_fd(), stop.raw_fd(), None).unwrap();
            assert!(ready.stop && !ready.data);
        }
    }

    #[test]
    fn the_timeout_is_honoured_below_a_millisecond() {
        let stop = StopSignal::new().unwrap();
        let data = StopSignal::new().unwrap();
        set_timer_slack(Duration::from_nanos(1)).unwrap();
        let start = Instant::now();
        let ready = wait_readable(
            data.raw_fd(),
            stop.raw_fd(),
            Some(Duration::from_micros(300)),
        )
        .unwrap();
        let waited = start.elapsed();
        assert_eq!(ready, Ready::default());
        assert!(waited >= Duration::from_micros(300), "{waited:?}");
    }
}
