//! How this machine treats memory left idle: what it costs a process to
//! touch again a page it has not touched for a second, on 4 KiB pages and
//! on memory advised for 2 MiB pages.
//!
//! The reconnect budgets (DESIGN.md: the protocol's limit + 5 ms) leave a
//! few milliseconds for every host on the path to wake and answer. On the
//! VM this lab was built on that held some hours and not others: its host
//! tracks guest memory in 4 KiB pages, and at times the first touch of each
//! page idle for a second cost 11-50 us (no guest page fault), at others
//! 0.07 us. A process waking after a move touches a few hundred pages, so the
//! same tree met or missed its budgets with the hour. The conformance suite
//! prints this figure before and after its scenarios, so a miss can be read
//! against the machine's state (README, "Code on huge pages").

use std::hint::black_box;
use std::time::{Duration, Instant};

use nix::sys::mman::{madvise, MmapAdvise};

const PAGE: usize = 4096;
const HUGE: usize = 2 << 20;
/// Memory measured on each kind of page.
const SPAN: usize = 16 << 20;

/// Mean cost per 4 KiB page of touching memory again after it lay idle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleTouch {
    /// How long the memory lay idle.
    pub idle: Duration,
    /// On 4 KiB pages.
    pub small_pages: Duration,
    /// On memory advised `MADV_HUGEPAGE`; `None` where the kernel's THP mode
    /// is `never` or the advice failed.
    pub huge_pages: Option<Duration>,
}

impl std::fmt::Display for IdleTouch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        write!(
            f,
            "a page left idle {:.0} s costs {:.2} us to touch again on 4 KiB pages",
            self.idle.as_secs_f64(),
            us(self.small_pages)
        )?;
        match self.huge_pages {
            Some(huge) => write!(f, ", {:.2} us on 2 MiB pages", us(huge)),
            None => write!(f, " (no 2 MiB pages here)"),
        }
    }
}

/// Touches 16 MiB on each kind of page, waits `idle`, and times touching it
/// again. Takes `idle` and a few milliseconds.
pub fn idle_touch(idle: Duration) -> IdleTouch {
    let mut small = vec![0u8; SPAN];
    let mut huge = vec![0u8; SPAN + HUGE];
    let start = huge.as_ptr().align_offset(HUGE);
    let huge_span = &mut huge[start..start + SPAN];
    let advised = thp_available() && advise_huge(huge_span);
    for page in (0..SPAN).step_by(PAGE) {
        small[page] = 1;
        huge_span[page] = 1;
    }
    std::thread::sleep(idle);
    let small_pages = time_touch(&small);
    let huge_pages = advised.then(|| time_touch(huge_span));
    IdleTouch {
        idle,
        small_pages,
        huge_pages,
    }
}

fn time_touch(memory: &[u8]) -> Duration {
    let started = Instant::now();
    let mut sum = 0u8;
    for page in (0..memory.len()).step_by(PAGE) {
        sum = sum.wrapping_add(black_box(memory[page]));
    }
    black_box(sum);
    started.elapsed() / u32::try_from(memory.len() / PAGE).unwrap_or(u32::MAX)
}

/// The kernel's THP mode lets `MADV_HUGEPAGE` take effect (not `never`).
pub fn thp_available() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|mode| !mode.contains("[never]"))
}

/// `MADV_HUGEPAGE` on `memory` (2 MiB aligned, not yet touched).
fn advise_huge(memory: &mut [u8]) -> bool {
    let Some(ptr) = std::ptr::NonNull::new(memory.as_mut_ptr().cast()) else {
        return false;
    };
    // SAFETY: the range is a live allocation this function borrows mutably;
    // MADV_HUGEPAGE changes how the kernel backs it, not its contents.
    #[allow(unsafe_code)]
    let advised = unsafe { madvise(ptr, memory.len(), MmapAdvise::MADV_HUGEPAGE) };
    advised.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touching_idle_memory_is_timed_per_page() {
        let touch = idle_touch(Duration::from_millis(10));
        assert_eq!(touch.idle, Duration::from_millis(10));
        // A 4 KiB page cannot take a second to touch; a zero would mean the
        // loop was optimized away.
        assert!(touch.small_pages > Duration::ZERO);
        assert!(touch.small_pages < Duration::from_millis(1));
        let line = touch.to_string();
        assert!(line.starts_with("a page left idle 0 s costs"), "{line}");
    }
}
