//! The global allocator of builds with the local engine: jemalloc, with a background thread that
//! hands freed memory back.
//!
//! Measured with `tests/bench/run.py`: under glibc, malloc and free were about a quarter of the
//! CPU of writing ~100,000 tiny Parquet files at M scale. mimalloc cut that, but Polars frees big
//! columns from other threads than the ones that made them, and mimalloc kept those pages: at
//! 10^7 events its peak RSS was 5.8 GB (4.3 GB without transparent huge pages) against glibc's
//! 3.4 GB. jemalloc's arenas take memory back whichever thread frees it, and its background
//! thread purges what stays free (after `dirty_decay_ms`) without the allocating threads paying
//! for it. `_RJEM_MALLOC_CONF` in the environment still overrides these defaults. A build without
//! the local engine (or for MSVC) keeps the system allocator.

#[cfg(all(feature = "polars", not(target_env = "msvc")))]
mod jemalloc {
    use std::ffi::c_char;

    #[global_allocator]
    static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

    /// A C string pointer jemalloc reads at start-up (`malloc_conf`).
    #[repr(transparent)]
    pub(crate) struct Conf(*const c_char);

    // SAFETY: a pointer to a static string, never written.
    unsafe impl Sync for Conf {}

    /// jemalloc's options: the background purging thread; freed pages go back after a second
    /// (dirty), and at once once madvised (muzzy).
    #[unsafe(export_name = "_rjem_malloc_conf")]
    pub(crate) static MALLOC_CONF: Conf = Conf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

    /// Purges every arena's free pages now (`arena.<MALLCTL_ARENAS_ALL>.purge`).
    pub(crate) fn release_free_memory() {
        // SAFETY: a documented mallctl name with no input or output values.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                c"arena.4096.purge".as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            );
        }
    }
}

/// Tells the local engine how to release memory after dropping a large table.
pub(crate) fn init() {
    #[cfg(all(feature = "polars", not(target_env = "msvc")))]
    dagrun_polars::set_memory_release(jemalloc::release_free_memory);
}
