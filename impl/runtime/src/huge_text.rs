//! The program's code on transparent huge pages.
//!
//! A sustain process sleeps between a peer's packets, and on its first packet
//! after a move it runs code it has not run for a second or more: the MSYN and
//! MSYN-ACK paths, the server's report handling. Where the hypervisor tracks
//! guest memory in 4 KiB pages (the lab's VM does), the first touch of each
//! page left idle for ~0.1 s or more can cost 10-50 us: measured on this
//! machine, 16 MiB of anonymous memory re-read after 1-2 s idle cost 11-50 us
//! per 4 KiB page in bad hours (no guest page fault; the cost is the host's)
//! and 0.07 us in good ones. Sampled side by side every 20 s through one bad
//! spell, 4 KiB pages cost 1.9, 7.3, 155 and 2.0 us and the same memory on
//! 2 MiB pages 0.16, 0.16, 33 and 0.05 us. A resume referenced up to ~150
//! pages of sustain-host's code (584 KiB in smaps, which also counts pages the
//! peer's process touched), and in paper-sustaining the server took 1.3-4.7 ms
//! between the report arriving and its notice leaving (captures, 3 runs),
//! most of it in code run for the first time in a second. On real hardware the same move saves iTLB misses, which is
//! why large servers remap their text onto huge pages (HHVM, Intel's iodlr).
//!
//! What [`move_code_to_huge_pages`] does, once, before any thread starts:
//! the executable's code mapping (its r-x segment, which the binaries are
//! linked to start on a 2 MiB boundary, build.rs) is copied into anonymous
//! memory advised `MADV_HUGEPAGE`, made read-execute, and moved over the
//! original with one `mremap(MREMAP_FIXED)`: the code stays at the same
//! addresses with the same bytes, so nothing that points into it changes.
//! The range is widened to whole 2 MiB pages when no other mapping lies in
//! the widening (the linker leaves the padding unmapped), else only the
//! whole 2 MiB pages inside the segment move.
//!
//! Not done (and said so): when the kernel's THP mode is `never`, when the
//! segment holds no whole 2 MiB page, or when `SUSTAIN_HUGE_TEXT=off` (perf
//! and debuggers symbolize file-backed code; moved code is anonymous).
//! Shared libraries (libc) stay where the loader put them: they are not
//! aligned, and their code is shared with other processes.

use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{self, MRemapFlags, MapFlags, MmapAdvise, ProtFlags};

/// A transparent huge page on x86-64 and aarch64 (4 KiB base pages).
const HUGE: usize = 2 << 20;

/// The environment variable that turns the move off (`off`).
pub const DISABLE_VAR: &str = "SUSTAIN_HUGE_TEXT";

/// What [`move_code_to_huge_pages`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HugeText {
    /// Code now on memory advised for huge pages.
    Moved {
        /// The first address moved (2 MiB aligned).
        start: usize,
        /// Bytes moved, a multiple of 2 MiB.
        len: usize,
    },
    /// Left as it was, and why.
    Skipped(&'static str),
}

/// Why the move failed (the code stays where it was in every case).
#[derive(Debug, thiserror::Error)]
pub enum HugeTextError {
    /// The process's own mappings could not be read.
    #[error("reading /proc/self/maps: {0}")]
    Maps(#[source] std::io::Error),
    /// A memory call failed.
    #[error("{what}: {errno}")]
    Sys {
        /// The step that failed.
        what: &'static str,
        /// The kernel's answer.
        #[source]
        errno: nix::Error,
    },
}

/// One line of `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Readable and executable (`r-x`): code the move can copy. An
    /// execute-only mapping (`--x`) cannot be read, so it is never moved.
    pub(crate) code: bool,
    pub(crate) path: String,
}

/// Parses `/proc/<pid>/maps` text; lines it cannot read are skipped.
pub(crate) fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let perms = fields.next()?;
            // offset, device, inode, then the path (absent for anonymous).
            let path = fields.nth(3).unwrap_or("").to_string();
            Some(Mapping {
                start: usize::from_str_radix(start, 16).ok()?,
                end: usize::from_str_radix(end, 16).ok()?,
                code: perms.starts_with('r') && perms.as_bytes().get(2) == Some(&b'x'),
                path,
            })
        })
        .collect()
}

/// The range of whole huge pages to move for `code`: widened to 2 MiB
/// boundaries if nothing else is mapped in the widening, else the whole
/// huge pages inside it; `None` if that is empty.
pub(crate) fn huge_range(code: &Mapping, all: &[Mapping]) -> Option<(usize, usize)> {
    let down = |a: usize| a & !(HUGE - 1);
    let up = |a: usize| a.checked_add(HUGE - 1).map(down);
    let wide = (down(code.start), up(code.end)?);
    let clear = all
        .iter()
        .filter(|m| m != &code)
        .all(|m| m.end <= wide.0 || m.start >= wide.1);
    let (start, end) = if clear {
        wide
    } else {
        (up(code.start)?, down(code.end))
    };
    (end > start).then_some((start, end))
}

/// The kernel's THP mode allows `MADV_HUGEPAGE` to take effect.
fn thp_available() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|mode| !mode.contains("[never]"))
}

/// Moves the executable's code onto huge pages (module doc). Call it before
/// any other thread starts.
pub fn move_code_to_huge_pages() -> Result<HugeText, HugeTextError> {
    if std::env::var(DISABLE_VAR).is_ok_and(|v| v == "off") {
        return Ok(HugeText::Skipped("SUSTAIN_HUGE_TEXT=off"));
    }
    if !thp_available() {
        return Ok(HugeText::Skipped("transparent huge pages are off (never)"));
    }
    let exe = std::fs::read_link("/proc/self/exe").map_err(HugeTextError::Maps)?;
    let exe = exe.to_string_lossy();
    let maps =
        parse_maps(&std::fs::read_to_string("/proc/self/maps").map_err(HugeTextError::Maps)?);
    let Some(code) = maps.iter().find(|m| m.code && m.path == exe) else {
        return Ok(HugeText::Skipped(
            "no executable mapping of the program's file",
        ));
    };
    let Some((start, end)) = huge_range(code, &maps) else {
        return Ok(HugeText::Skipped(
            "the code segment holds no whole 2 MiB page",
        ));
    };
    // SAFETY: `code` is a live read-execute mapping of this process that no one
    // writes; the copy reads it through raw pointers within its bounds, and the
    // bytes outside it in [start, end) are unmapped padding (huge_range). The
    // new memory holds the same bytes at the same addresses; mremap replaces
    // the old pages atomically, and a thread running the old code meanwhile
    // sees the same instructions either side of it.
    unsafe {
        replace(start, end, code.start.max(start), code.end.min(end))?;
    }
    Ok(HugeText::Moved {
        start,
        len: end - start,
    })
}

/// Maps `[start, end)` afresh on anonymous memory advised for huge pages,
/// holding the bytes now at `[copy_from, copy_to)` (the rest zero).
///
/// # Safety
/// `[copy_from, copy_to)` must be readable, and `[start, end)` must hold no
/// mapping but code whose bytes are that range's (module doc).
unsafe fn replace(
    start: usize,
    end: usize,
    copy_from: usize,
    copy_to: usize,
) -> Result<(), HugeTextError> {
    let sys = |what| move |errno| HugeTextError::Sys { what, errno };
    let len = end - start;
    let reserve = len + HUGE;
    let Some(reserve_len) = NonZeroUsize::new(reserve) else {
        return Ok(());
    };
    // SAFETY: a fresh private anonymous mapping at an address of the kernel's
    // choosing touches nothing else.
    let base = unsafe {
        mman::mmap_anonymous(
            None,
            reserve_len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE,
        )
    }
    .map_err(sys("reserving memory for the code"))?;
    let base_addr = base.as_ptr() as usize;
    let aligned = (base_addr + HUGE - 1) & !(HUGE - 1);
    let at = |addr: usize| NonNull::new(addr as *mut c_void).unwrap_or(base);
    let result = (|| {
        // SAFETY: [aligned, aligned + len) lies inside the reservation.
        unsafe { mman::madvise(at(aligned), len, MmapAdvise::MADV_HUGEPAGE) }
            .map_err(sys("advising huge pages"))?;
        // SAFETY: the source is readable code (caller), the destination is
        // the writable reservation, and the two cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                copy_from as *const u8,
                (aligned + (copy_from - start)) as *mut u8,
                copy_to - copy_from,
            );
        }
        // SAFETY: as for madvise.
        unsafe {
            mman::mprotect(
                at(aligned),
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_EXEC,
            )
        }
        .map_err(sys("making the copy executable"))?;
        // SAFETY: moves the copy over [start, end), which holds only the code
        // it copies and unmapped padding (caller); the copy is not used after.
        unsafe {
            mman::mremap(
                at(aligned),
                len,
                len,
                MRemapFlags::MREMAP_MAYMOVE | MRemapFlags::MREMAP_FIXED,
                Some(at(start)),
            )
        }
        .map_err(sys("moving the copy over the code"))?;
        Ok(())
    })();
    // What is left of the reservation: its unaligned head and tail, and the
    // copy itself if the move failed.
    let leftovers = if result.is_ok() {
        [(base_addr, aligned), (aligned + len, base_addr + reserve)]
    } else {
        [(base_addr, base_addr + reserve), (0, 0)]
    };
    for (from, to) in leftovers {
        if to > from {
            // SAFETY: [from, to) is part of the reservation made above, which
            // nothing else uses.
            let _ = unsafe { mman::munmap(at(from), to - from) };
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
555555400000-5555554b2000 r--p 00000000 fe:00 42  /usr/bin/sustain-host
5555556b1000-5555558bb000 r-xp 000b1000 fe:00 42  /usr/bin/sustain-host
555555aba000-555555ad1000 rw-p 002ba000 fe:00 42  /usr/bin/sustain-host
7ffff7d80000-7ffff7ed5000 r-xp 00026000 fe:00 7   /usr/lib/x86_64-linux-gnu/libc.so.6
7ffff7f72000-7ffff7f74000 r-xp 00000000 00:00 0   [vdso]
";

    #[test]
    fn maps_lines_are_parsed() {
        let maps = parse_maps(MAPS);
        assert_eq!(maps.len(), 5);
        assert_eq!(maps[1].start, 0x5555_556b_1000);
        assert!(maps[1].code && !maps[0].code);
        // Execute-only code cannot be copied: not a candidate.
        assert!(!parse_maps("7000-8000 --xp 00000000 fe:00 1 /x")[0].code);
        assert_eq!(maps[1].path, "/usr/bin/sustain-host");
        assert_eq!(maps[4].path, "[vdso]");
        assert!(parse_maps("garbage\n-\nzz-yy r-xp").is_empty());
    }

    #[test]
    fn the_range_widens_into_unmapped_padding_only() {
        let maps = parse_maps(MAPS);
        // Linked with 2 MiB segment alignment: the padding on both sides of
        // the code is unmapped, so it widens to whole huge pages.
        assert_eq!(
            huge_range(&maps[1], &maps),
            Some((0x5555_5560_0000, 0x5555_55a0_0000))
        );
        // libc's neighbours are mapped: only whole pages inside (none here).
        let mut crowded = maps.clone();
        crowded.push(Mapping {
            start: 0x5555_558b_b000,
            end: 0x5555_558c_0000,
            code: false,
            path: String::new(),
        });
        assert_eq!(huge_range(&crowded[1], &crowded), None);
        let big = Mapping {
            start: 0x7000_0010_0000,
            end: 0x7000_0090_0000,
            code: true,
            path: "/x".into(),
        };
        let around = [
            Mapping {
                start: 0x7000_0000_0000,
                end: 0x7000_0010_0000,
                code: false,
                path: "/x".into(),
            },
            big.clone(),
        ];
        assert_eq!(
            huge_range(&big, &around),
            Some((0x7000_0020_0000, 0x7000_0080_0000))
        );
    }
}
