//! Tests that need a process of their own, where no other test's thread maps
//! or caps memory meanwhile.

/// Set in the child's environment.
const CHILD: &str = "KVZCH_TEST_CHILD";

/// Runs `body` in a child process: this test binary again, running only the
/// test `name` (its full path), which calls this again and finds itself the
/// child.
pub fn in_a_child(name: &str, body: impl FnOnce()) {
    if std::env::var_os(CHILD).is_some() {
        body();
        return;
    }
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success() && stdout.contains("1 passed"),
        "the child ended with {}\nstdout:\n{stdout}\nstderr:\n{}",
        child.status,
        String::from_utf8_lossy(&child.stderr)
    );
}
