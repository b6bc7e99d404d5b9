//! Handing freed heap back to the system once a burst of work is over.
//!
//! glibc's malloc keeps freed memory in its per-thread arenas and returns
//! only what sits at the top of each heap. After a first backup of a large
//! tree the idle agent held ~220 MiB resident over ~45 MiB live heap, for
//! as long as it ran; `malloc_trim(0)` from a debugger took it to 78 MiB.
//! The `libc` crate only binds the call; no well-kept crate wraps it
//! safely. Switching the process to mimalloc (tried) cut the idle figure
//! as well but more than doubled the peak of a large backup, because its
//! heaps are per thread.

#![allow(unsafe_code)]

/// Returns the free pages of every malloc arena to the system. Costs a
/// walk of the heap (milliseconds): call it when work has just ended, not
/// in a loop.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own allocator state under its
    // arena locks; it takes no pointers from us and is safe at any moment.
    unsafe {
        libc::malloc_trim(0);
    }
}
