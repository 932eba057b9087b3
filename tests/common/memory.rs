//! The process's address space, for tests that check what a cache maps.

/// The process's address space now, in bytes (`VmSize`).
pub fn mapped_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmSize:"))
        .and_then(|size| size.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    kib << 10
}
