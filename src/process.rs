//! What the operating system says about this process.

/// Resident memory of this process in bytes (`VmRSS`, Linux); `None`
/// where `/proc` does not say.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_rss_bytes(&status)
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes.
fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

/// This process's use of the machine so far: CPU time, and bytes sent to
/// storage. The difference of two readings is what the time between cost.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// CPU time in user mode (s).
    pub user_secs: f64,
    /// CPU time in the kernel on the process's behalf (s).
    pub system_secs: f64,
    /// Bytes the process caused to be written to storage (`write_bytes` of
    /// `/proc/self/io`, Linux): page cache written back, whoever flushes it.
    pub storage_write_bytes: Option<u64>,
}

/// This process's [`Usage`] now (`getrusage`); `None` if the call fails.
pub fn usage() -> Option<Usage> {
    // SAFETY: `getrusage` only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return None;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(Usage {
        user_secs: secs(ru.ru_utime),
        system_secs: secs(ru.ru_stime),
        storage_write_bytes: std::fs::read_to_string("/proc/self/io")
            .ok()
            .and_then(|io| write_bytes(&io)),
    })
}

/// `write_bytes` of a `/proc/<pid>/io` text.
fn write_bytes(io: &str) -> Option<u64> {
    let line = io.lines().find(|l| l.starts_with("write_bytes:"))?;
    line["write_bytes:".len()..].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_bytes_is_read_from_its_own_line_only() {
        let io =
            "rchar: 10\nwchar: 20\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(write_bytes(io), Some(8192));
        assert_eq!(write_bytes("cancelled_write_bytes: 5\n"), None);
        assert_eq!(write_bytes("write_bytes: many\n"), None);
    }

    #[test]
    fn this_process_has_used_cpu_time() {
        let start = usage().expect("getrusage");
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let end = usage().expect("getrusage");
        assert!(end.user_secs + end.system_secs > start.user_secs + start.system_secs);
        assert!(end.user_secs >= start.user_secs && end.system_secs >= start.system_secs);
    }

    #[test]
    fn vm_rss_is_read_in_kib_and_anything_else_is_unknown() {
        let status = "Name:\tx\nVmPeak:\t  900 kB\nVmRSS:\t  2048 kB\nThreads:\t3\n";
        assert_eq!(vm_rss_bytes(status), Some(2048 * 1024));
        assert_eq!(vm_rss_bytes("Name:\tx\n"), None);
        assert_eq!(vm_rss_bytes("VmRSS:\t12 MB\n"), None);
        assert_eq!(vm_rss_bytes("VmRSS:\tlots kB\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_a_resident_set() {
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }
}
