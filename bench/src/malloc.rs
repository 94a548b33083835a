//! The responder's allocator settings: large buffers stay mapped.
//!
//! A 1 MiB upload makes the responder allocate megabyte buffers (the frame,
//! then the `thrift` crate's copy of the binary field). glibc serves
//! allocations over its *dynamic* mmap threshold with a fresh mapping and
//! unmaps them on free, and trims freed memory at the top of a heap; which of
//! that happens settles differently in each process. In some responders every
//! upload's buffers were mapped and faulted in anew, and the responder cost
//! twice as much per upload for that process's whole life: started afresh
//! seven times behind one probegate, the default responder served 1246–2413
//! uploads/s (its CPU 227–449 µs per upload, slow in five of seven), one with
//! these settings 1884–2585 (194–256 µs) every time. That spread is the
//! backend's, not the proxies', and it decided the data-path verdict of a
//! whole run; fixed thresholds keep the buffers in the heap for the next call.

/// Fixes glibc's mmap threshold at 32 MiB (its largest) and stops heap
/// trimming, before any worker allocates. False where that is refused or
/// the C library is not glibc (nothing changes there).
pub fn keep_large_buffers_mapped() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes no pointers and only sets allocator
        // parameters, under glibc's own lock; the responder calls it before
        // it starts a thread, so every worker's arena is made under them.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// What [`keep_large_buffers_mapped`] does on this build, for the bench's
/// output (the responder is this binary, run as a child).
pub fn describe() -> &'static str {
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        "glibc's mmap and trim thresholds fixed, so large buffers stay mapped between calls (malloc.rs)"
    } else {
        "the C library's allocator as it comes (not glibc: malloc.rs sets nothing)"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_settings() {
        assert!(super::keep_large_buffers_mapped());
    }
}
