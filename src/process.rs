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

/// CPU time of each of this process's threads so far, by thread id (Linux:
/// `/proc/self/task/*/stat`); `None` where `/proc` does not say.
#[derive(Clone, Debug, Default)]
pub struct ThreadCpu(std::collections::HashMap<u32, (String, u64)>);

/// Every thread's [`ThreadCpu`] now.
pub fn thread_cpu() -> Option<ThreadCpu> {
    let mut threads = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread that ended since the listing has no stat to read: skip it.
        if let Some(stat) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|text| thread_stat(&text))
        {
            threads.insert(tid, stat);
        }
    }
    Some(ThreadCpu(threads))
}

impl ThreadCpu {
    /// CPU seconds each family of threads used since `earlier` (a family is
    /// a thread name without its number: `sled-io-3` counts as `sled-io`).
    /// A thread started since counts whole; one that ended since is not
    /// seen, so the families may sum to less than the process's time.
    /// Linux caps a thread's name at 15 bytes (`journal-snapsho`).
    pub fn since(&self, earlier: &ThreadCpu) -> std::collections::BTreeMap<String, f64> {
        let ticks_per_sec = ticks_per_sec();
        let mut families = std::collections::BTreeMap::new();
        for (tid, (name, ticks)) in &self.0 {
            // An id the system gave again to a new thread counts from zero.
            let before = match earlier.0.get(tid) {
                Some((was, t)) if was == name => *t,
                _ => 0,
            };
            *families.entry(family(name).to_owned()).or_insert(0.0) +=
                ticks.saturating_sub(before) as f64 / ticks_per_sec;
        }
        families
    }
}

/// Clock ticks per second, the unit of a thread's CPU time in `/proc`.
fn ticks_per_sec() -> f64 {
    // SAFETY: `sysconf` reads a constant of the system.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// A thread's name and CPU time (user + system, in clock ticks) from its
/// `stat` text. The name is between the first `(` and the last `)`, and may
/// hold spaces and parentheses itself.
fn thread_stat(stat: &str) -> Option<(String, u64)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let name = stat.get(open + 1..close)?.to_owned();
    // After the name: state (field 3), ..., utime (14), stime (15).
    let mut fields = stat.get(close + 1..)?.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((name, user.checked_add(system)?))
}

/// A thread's name without the number that tells it from its siblings.
fn family(name: &str) -> &str {
    let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if trimmed.len() == name.len() {
        return name;
    }
    match trimmed.trim_end_matches(['-', '_', ':', ' ', '#']) {
        "" => name,
        family => family,
    }
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
    fn a_threads_stat_gives_its_name_and_cpu_ticks() {
        // proves the name may hold spaces and parentheses, utime and stime are fields 14 and 15, and a short line is unknown
        let stat = "4242 (actix-rt|system:0) S 1 2 3 4 5 6 7 8 9 10 120 35 0 0 20 0 1 0";
        assert_eq!(
            thread_stat(stat),
            Some(("actix-rt|system:0".to_owned(), 155))
        );
        let odd = "7 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 3 4 0 0";
        assert_eq!(thread_stat(odd), Some(("a (b) c".to_owned(), 7)));
        assert_eq!(thread_stat("7 (x) R 1 2 3"), None);
        assert_eq!(thread_stat("no name here"), None);
    }

    #[test]
    fn a_thread_id_given_again_counts_from_zero() {
        // proves a new thread under an ended one's id is not charged the old one's ticks
        let ticks = |name: &str, t: u64| ThreadCpu([(9, (name.to_owned(), t))].into());
        let hz = ticks_per_sec();
        let reused = ticks("sled-io-1", 40).since(&ticks("journal-writer", 500));
        assert_eq!(reused.get("sled-io"), Some(&(40.0 / hz)));
        assert_eq!(reused.get("journal-writer"), None);
        let same = ticks("sled-io-1", 40).since(&ticks("sled-io-1", 30));
        assert_eq!(same.get("sled-io"), Some(&(10.0 / hz)));
    }

    #[test]
    fn a_threads_family_is_its_name_without_its_number() {
        // proves siblings share a family and a name that is only a number, or has none, stays whole
        assert_eq!(family("sled-io-3"), "sled-io");
        assert_eq!(family("actors-12"), "actors");
        assert_eq!(family("actix-rt|system:0"), "actix-rt|system");
        assert_eq!(family("journal-writer"), "journal-writer");
        assert_eq!(family("1234"), "1234");
        assert_eq!(family("commerce-engine"), "commerce-engine");
    }

    /// CPU time of the calling thread (s).
    #[cfg(target_os = "linux")]
    fn thread_cpu_secs() -> f64 {
        // SAFETY: `clock_gettime` only writes the struct it is given.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) },
            0
        );
        ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn thread_cpu_counts_a_busy_thread_in_its_family() {
        // proves a thread started between two readings counts whole, under its family
        let start = thread_cpu().expect("/proc/self/task");
        std::thread::Builder::new()
            .name("spinner-7".into())
            .spawn(|| {
                // Busy until this thread has used 200 ms of CPU, however
                // loaded the machine is.
                let mut x = 0u64;
                while thread_cpu_secs() < 0.2 {
                    for _ in 0..10_000 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
                    }
                }
                // Read before the thread ends, while its stat is listed.
                thread_cpu().expect("/proc/self/task")
            })
            .expect("spawn")
            .join()
            .map(|end| {
                let used = end.since(&start);
                let spun = used.get("spinner").copied().unwrap_or(0.0);
                assert!(spun >= 0.15, "{used:?}");
                assert!(!used.contains_key("spinner-7"), "{used:?}");
            })
            .expect("join");
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
