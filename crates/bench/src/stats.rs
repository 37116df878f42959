//! Process measurements read from `/proc`.

/// The resident set size of this process in bytes, if the platform reports it.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_rss(&status)
}

fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Whether this process runs as root (Mosquitto then needs `user root` to keep reading our files).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_in_kibibytes() {
        let status = "Name:\tx\nVmPeak:\t  9 kB\nVmRSS:\t  1536 kB\nThreads: 2\n";
        assert_eq!(parse_rss(status), Some(1536 * 1024));
        assert_eq!(parse_rss("Name: x\n"), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        assert!(rss_bytes().is_some_and(|b| b > 0));
    }
}
