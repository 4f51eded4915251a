//! The `weir` command explains itself. (Being an integration test of this package, it also
//! makes the workspace test build produce the `weir` binary that `tests/` drives.)

#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn top_level_help_lists_every_command() {
    let text = help(&["--help"]);
    for cmd in ["serve", "filter", "tenant", "send", "tail", "bench"] {
        assert!(
            text.contains(cmd),
            "`weir --help` should list {cmd}:\n{text}"
        );
    }
}

#[test]
fn serve_help_describes_the_embedded_defaults() {
    let text = help(&["serve", "--help"]);
    assert!(text.contains("127.0.0.1:8080"), "{text}");
    assert!(text.contains("--config"), "{text}");
    let text = help(&["filter", "--help"]);
    for cmd in ["new", "build", "test", "push", "list", "rollback", "rm"] {
        assert!(
            text.contains(cmd),
            "`weir filter --help` should list {cmd}:\n{text}"
        );
    }
}
