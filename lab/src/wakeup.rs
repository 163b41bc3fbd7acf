//! Fd-readiness plumbing shared by the lab's packet threads (delay lines, captures):
//! a stop signal and a timer that are fds, and a wait on several fds with an optional
//! nanosecond timeout.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

/// A one-way "stop now" signal a thread can wait on next to its socket (an eventfd).
#[derive(Debug)]
pub(crate) struct StopSignal {
    fd: EventFd,
}

impl StopSignal {
    pub(crate) fn new() -> io::Result<StopSignal> {
        let fd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(StopSignal { fd })
    }

    /// Makes the fd readable for good (the counter is never read back).
    pub(crate) fn raise(&self) {
        // An error (counter overflow after 2^64 - 1 raises) leaves the fd readable
        // anyway, which is all that matters.
        let _ = self.fd.write(1);
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Blocks until one of `fds` is readable, or `timeout` passes (`None`: no timeout),
/// and says which are readable (all false after a timeout or a signal).
///
/// ppoll takes a timespec, so the timeout has nanosecond resolution (epoll_wait's is a
/// millisecond, too coarse for packet timing); the kernel adds a slack of 0.1 % of the
/// timeout (at least the thread's timer slack), so exact deadlines use a timerfd.
pub(crate) fn wait_readable<const N: usize>(
    fds: [BorrowedFd<'_>; N],
    timeout: Option<Duration>,
) -> io::Result<[bool; N]> {
    let mut pollfds = fds.map(|fd| PollFd::new(fd, PollFlags::POLLIN));
    // A null sigmask (None) keeps the thread's mask.
    match ppoll(&mut pollfds, timeout.map(TimeSpec::from_duration), None) {
        Ok(_) => {}
        Err(Errno::EINTR) => return Ok([false; N]),
        Err(err) => return Err(err.into()),
    }
    let revents = pollfds.map(|pfd| pfd.revents().unwrap_or(PollFlags::empty()));
    if revents.iter().any(|r| r.contains(PollFlags::POLLNVAL)) {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    Ok(revents.map(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLERR)))
}

/// A one-shot CLOCK_MONOTONIC timer that is an fd: readable once it has expired.
/// Unlike a poll timeout it fires with no slack.
#[derive(Debug)]
pub(crate) struct Timer {
    fd: TimerFd,
}

impl Timer {
    pub(crate) fn new() -> io::Result<Timer> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        Ok(Timer { fd })
    }

    /// Arms the timer to expire `after` from now (re-arming replaces the previous
    /// expiry and clears a pending one); `None` disarms it.
    pub(crate) fn set(&self, after: Option<Duration>) -> io::Result<()> {
        match after {
            // A zero it_value would disarm: expire as soon as possible instead.
            Some(after) => self.fd.set(
                Expiration::OneShot(TimeSpec::from_duration(after.max(Duration::from_nanos(1)))),
                TimerSetTimeFlags::empty(),
            )?,
            None => self.fd.unset()?,
        }
        Ok(())
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Raises a socket's receive buffer past `net.core.rmem_max` (needs CAP_NET_ADMIN).
pub(crate) fn force_receive_buffer(fd: &impl AsFd, bytes: usize) -> io::Result<()> {
    let size = bytes.min(libc::c_int::MAX as usize);
    setsockopt(fd, sockopt::RcvBufForce, &size)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_raised_stop_signal_wakes_the_waiter_and_stays_raised() {
        let stop = StopSignal::new().unwrap();
        let data = StopSignal::new().unwrap();
        let ready = wait_readable([data.fd(), stop.fd()], Some(Duration::ZERO)).unwrap();
        assert_eq!(ready, [false, false]);
        stop.raise();
        for _ in 0..2 {
            let ready = wait_readable([data.fd(), stop.fd()], None).unwrap();
            assert_eq!(ready, [false, true]);
        }
    }

    #[test]
    fn a_timer_fires_once_after_its_time_and_can_be_disarmed() {
        let timer = Timer::new().unwrap();
        let start = Instant::now();
        timer.set(Some(Duration::from_micros(500))).unwrap();
        let ready = wait_readable([timer.fd()], Some(Duration::from_secs(5))).unwrap();
        assert_eq!(ready, [true]);
        assert!(start.elapsed() >= Duration::from_micros(500));
        // Re-arming clears the expiry; disarming means it never fires.
        timer.set(None).unwrap();
        let ready = wait_readable([timer.fd()], Some(Duration::from_millis(20))).unwrap();
        assert_eq!(ready, [false]);
    }

    #[test]
    fn the_timeout_is_honoured_below_a_millisecond() {
        let stop = StopSignal::new().unwrap();
        let data = StopSignal::new().unwrap();
        let start = Instant::now();
        let ready =
            wait_readable([data.fd(), stop.fd()], Some(Duration::from_micros(300))).unwrap();
        let waited = start.elapsed();
        assert_eq!(ready, [false, false]);
        assert!(waited >= Duration::from_micros(300), "{waited:?}");
    }
}
