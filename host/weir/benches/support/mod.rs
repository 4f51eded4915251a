//! What the benches share: where the `severity` filter component is.

use std::path::PathBuf;

/// `severity.wasm`: `$WEIR_BENCH_WASM`, or the release build in the target directory
/// (`cargo build --release --target wasm32-wasip2 -p severity`).
pub fn wasm_path() -> PathBuf {
    if let Some(p) = std::env::var_os("WEIR_BENCH_WASM") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("wasm32-wasip2/release/severity.wasm")
}
