//! The allocator settings under which an upload's large buffers are reused
//! instead of being mapped and faulted in again for every call.
//!
//! Each upload makes its worker allocate buffers of about the upload's size
//! (the `thrift` crate's copy of the binary field, the stored object's
//! bytes) and free them when the call ends. glibc serves an allocation over
//! its *dynamic* mmap threshold with a fresh mapping and unmaps it on free,
//! and gives freed memory at the top of a heap back to the system; which of
//! that happens to a worker's arena settles differently per process and per
//! thread. Where it goes badly, every upload on that worker pays the page
//! faults and the kernel's zeroing of a megabyte of new pages, for the
//! connection's whole life.
//!
//! Measured with 1 MiB uploads from four clients through a fresh probegate
//! to a fresh uploader, four fresh starts each, alternated (bench/README,
//! ninth round): 1122–1468 µs of the uploader's CPU per upload with glibc's
//! defaults, 1010–1193 with these settings. Straight to the uploader, with
//! new connections in every window, the defaults were slower only in the
//! first seconds after a start (1193–1263 µs, then 868–998 like the fix).
//!
//! The price is memory: freed buffers stay with their arena for the next
//! call, up to [`TRIM_THRESHOLD`] of free memory at the top of each arena.
//! After 32 concurrent 1 MiB uploads the uploader's RSS stayed at 87 MiB
//! instead of falling back to 64 MiB.

/// Allocations up to this size come from the heap, whatever was freed
/// before: glibc's largest mmap threshold (32 MiB on 64-bit). Larger uploads
/// still get a mapping of their own.
pub const MMAP_THRESHOLD: usize = 32 << 20;
/// Free memory at the top of an arena is given back to the system only
/// beyond this much: room for a few of the largest heap-served buffers,
/// so a burst's memory is still returned once it is far beyond that.
pub const TRIM_THRESHOLD: usize = 64 << 20;

/// Fixes glibc's mmap and trim thresholds (see the module doc). Call it
/// before the workers start: the settings are global, and every allocation
/// made afterwards follows them. False where glibc refuses, or where the C
/// library is not glibc (nothing is changed there).
#[allow(unsafe_code)]
pub fn keep_large_buffers_in_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes no pointers: it only sets two of the
        // allocator's parameters, under glibc's own lock, so it is sound
        // from any thread at any time. Both values fit in a C int.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// What [`keep_large_buffers_in_heap`] does on this build, in words for a
/// startup log line or the bench's output.
pub fn describe() -> String {
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        format!(
            "glibc's mmap threshold fixed at {} MiB and its trim threshold at {} MiB, so large buffers are reused between calls",
            MMAP_THRESHOLD >> 20,
            TRIM_THRESHOLD >> 20
        )
    } else {
        "the C library's allocator as it comes (not glibc: nothing is set)".to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_settings() {
        assert!(super::keep_large_buffers_in_heap());
    }

    #[test]
    fn the_description_gives_the_thresholds_set() {
        let words = super::describe();
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(
                words.contains("at 32 MiB") && words.contains("at 64 MiB"),
                "{words}"
            );
        }
    }
}
