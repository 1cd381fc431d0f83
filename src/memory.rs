//! What the machine has and what the process uses: resident memory (now and at its peak), the
//! memory available to start new work, and sizes written for people.
//!
//! Linux only (`/proc`, cgroup v1 and v2); elsewhere every figure is `None` and nothing is
//! refused for memory.

use std::path::Path;

/// Resident memory of process `pid` in bytes (`VmRSS`), if it can be read.
pub fn rss_of(pid: u32) -> Option<u64> {
    status_field(
        &Path::new("/proc").join(pid.to_string()).join("status"),
        "VmRSS:",
    )
}

/// This process's resident memory in bytes.
pub fn rss() -> Option<u64> {
    status_field(Path::new("/proc/self/status"), "VmRSS:")
}

/// This process's peak resident memory in bytes (`VmHWM`).
pub fn peak_rss() -> Option<u64> {
    status_field(Path::new("/proc/self/status"), "VmHWM:")
}

/// Starts [`peak_rss`] again from the present resident memory (Linux 4.0 on: writing 5 to
/// `/proc/self/clear_refs`), so one process running several runs reports each one's own peak.
/// Whether the system allowed it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The process (on this machine) that holds `path` open, such as the run writing a run log.
pub fn writer_of(path: &Path) -> Option<u32> {
    let target = std::fs::canonicalize(path).ok()?;
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == target))
        {
            return Some(pid);
        }
    }
    None
}

/// Memory that new work can use, in bytes: the kernel's `MemAvailable`, lowered to the room left
/// under this process's cgroup limit where one is set (a container, a batch scheduler's job).
pub fn available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let avail = field_kib(&meminfo, "MemAvailable:")?;
    Some(match cgroup_room() {
        Some(room) => avail.min(room),
        None => avail,
    })
}

/// The machine's memory in bytes (the kernel's `MemTotal`).
pub fn total() -> Option<u64> {
    field_kib(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:")
}

/// Room left under the cgroup's memory limit, if there is a limit.
fn cgroup_room() -> Option<u64> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in cg.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrl, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        let (limit, usage) = if ctrl.is_empty() {
            let dir = Path::new("/sys/fs/cgroup").join(rel);
            (dir.join("memory.max"), dir.join("memory.current"))
        } else if ctrl.split(',').any(|c| c == "memory") {
            let dir = Path::new("/sys/fs/cgroup/memory").join(rel);
            (
                dir.join("memory.limit_in_bytes"),
                dir.join("memory.usage_in_bytes"),
            )
        } else {
            continue;
        };
        let limit: u64 = std::fs::read_to_string(limit).ok()?.trim().parse().ok()?;
        let usage: u64 = std::fs::read_to_string(usage).ok()?.trim().parse().ok()?;
        // cgroup v1 writes "no limit" as a huge number.
        if limit >= 1 << 60 {
            return None;
        }
        return Some(limit.saturating_sub(usage));
    }
    None
}

fn status_field(path: &Path, key: &str) -> Option<u64> {
    field_kib(&std::fs::read_to_string(path).ok()?, key)
}

/// A `KEY:   123 kB` line's value in bytes.
fn field_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes as a person reads them: `812 MB`, `3.4 GB` (powers of 1,000, one decimal from GB up).
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.0} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_can_start_again_from_the_present() {
        // Touch 64 MB, let it go: the peak stays up until it is reset.
        let big = vec![1u8; 64 << 20];
        assert!(big.iter().map(|&b| b as u64).sum::<u64>() > 0);
        drop(big);
        let before = peak_rss().unwrap();
        if !reset_peak_rss() {
            eprintln!("skipped: this kernel does not reset VmHWM");
            return;
        }
        let after = peak_rss().unwrap();
        assert!(after + (32 << 20) < before, "{before} -> {after}");
    }

    #[test]
    fn proc_fields_are_read_in_bytes() {
        let text = "Name:\tprobescope\nVmHWM:\t  204800 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(field_kib(text, "VmRSS:"), Some(1024 * 1024));
        assert_eq!(field_kib(text, "VmHWM:"), Some(204_800 * 1024));
        assert_eq!(field_kib(text, "VmSwap:"), None);
    }

    #[test]
    fn this_process_has_resident_memory_below_its_peak() {
        if !Path::new("/proc/self/status").exists() {
            eprintln!("skipped: no /proc here");
            return;
        }
        let (rss, peak) = (rss().unwrap(), peak_rss().unwrap());
        assert!(rss > 0 && rss <= peak, "rss {rss} peak {peak}");
        assert!(available().unwrap() > 0);
    }

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human(812_300_000), "812 MB");
        assert_eq!(human(3_449_000_000), "3.4 GB");
        assert_eq!(human(12_000), "12 kB");
    }
}
