//! Process-wide settings the router applies at start.

/// Turns transparent huge pages off for this process (Linux; elsewhere a no-op), unless
/// the environment says `WEIR_TRANSPARENT_HUGE_PAGES=on`.
///
/// The allocator takes fresh pages for every burst of requests and gives them back when
/// idle; with huge pages on, each fresh page is a 2 MiB page the kernel zeroes whole at
/// its first touch. That zeroing was a fifth of the router's CPU under a stream of Events
/// API creates; with huge pages off the same run made 19.5–22.8k creates/s instead of
/// 14.7k (docs/benchmarks.md).
pub fn disable_transparent_huge_pages() {
    if std::env::var("WEIR_TRANSPARENT_HUGE_PAGES").is_ok_and(|v| v == "on") {
        return;
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!("cannot turn transparent huge pages off: {e}");
    }
}
