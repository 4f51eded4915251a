//! The Toggle spill file reader (`weir spill inspect`, replay after a restart): any file
//! in the spill directory is read or refused as corrupt, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write as _;
use weir::toggle::spill::read_file;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("weir-fuzz-spill-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("0192f4a0-7c55-7b1e-8000-000000000001-3.pb");
    let mut file = std::fs::File::create(&path).expect("temp file");
    file.write_all(data).expect("write");
    drop(file);
    let _ = read_file(&path);
});
