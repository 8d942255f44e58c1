//! CPU time of a process from `/proc/<pid>/stat`, and finding the broker's pid by the port it
//! listens on (`/proc/net/tcp` gives the socket inode, `/proc/<pid>/fd` who holds it).

use std::fs;

/// Clock ticks per second of `/proc` CPU times. Linux has reported 100 (USER_HZ) to user
/// space on every architecture for decades, independent of the kernel's HZ.
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds of `pid` (`self` for this process), or `None` if it is gone.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) sit at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// CPU% between two samples, where 100% is one core busy.
pub struct CpuMeter {
    pid: String,
    last: Option<(f64, f64)>,
}

impl CpuMeter {
    pub fn new(pid: impl Into<String>, now_s: f64) -> CpuMeter {
        let pid = pid.into();
        let last = cpu_seconds(&pid).map(|c| (now_s, c));
        CpuMeter { pid, last }
    }

    pub fn sample(&mut self, now_s: f64) -> Option<f64> {
        let cpu = cpu_seconds(&self.pid)?;
        let (t0, c0) = self.last.replace((now_s, cpu))?;
        (now_s > t0).then(|| 100.0 * (cpu - c0) / (now_s - t0))
    }
}

/// Pid of the process listening on TCP `port` (IPv4 or IPv6), if this user can see it.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is "HEX_IP:HEX_PORT"; state 0A is LISTEN; inode is field 9.
            let Some(local) = f.get(1) else { continue };
            let Some(p) = local.rsplit(':').next() else { continue };
            if u16::from_str_radix(p, 16).ok() == Some(port) && f.get(3) == Some(&"0A") {
                if let Some(inode) = f.get(9) {
                    inodes.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path()) {
                if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_finds_its_own_listener() {
        let before = cpu_seconds("self").expect("/proc/self/stat");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds("self").unwrap() >= before);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(pid_listening_on(port), Some(std::process::id()));
    }
}
