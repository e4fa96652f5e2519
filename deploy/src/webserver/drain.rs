//! Waiting for a reloaded server's previous workers to stop accepting connections.
//!
//! After a reload, nginx and Apache start workers with the new configuration and tell the
//! old ones to finish. Until an old worker has processed that, it can still accept a new
//! connection and answer it with the old configuration, so one probe answered by a new
//! worker does not prove the next request sees the change. Here the worker processes
//! holding the listening socket are noted before the reload; afterwards we wait until
//! each has exited or closed the socket. Workers are told apart from the master by their
//! parent: a holder whose parent also holds the socket. lighttpd reloads in its single
//! process, which has no such children, so there is nothing to wait for.
//!
//! Everything is read from `/proc` (`net/tcp*` for the socket's inode, `<pid>/fd` for its
//! holders). Processes whose fds we may not read (another user, when not root) are not
//! seen; verification then rests on the marker alone.

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

/// The old workers to wait for, and the socket inodes they must let go of.
#[derive(Debug, Clone, Default)]
pub(super) struct OldWorkers {
    inodes: Vec<u64>,
    pids: Vec<i32>,
}

impl OldWorkers {
    /// Notes the worker processes currently holding a socket listening on `address`.
    pub fn snapshot(address: SocketAddr) -> Self {
        let inodes = listening_inodes(address);
        if inodes.is_empty() {
            return OldWorkers::default();
        }
        let holders = holders(&inodes);
        let pids = holders
            .iter()
            .filter(|(_, parent)| holders.iter().any(|(pid, _)| pid == parent))
            .map(|(pid, _)| *pid)
            .collect();
        OldWorkers { inodes, pids }
    }

    /// Waits until none of the old workers holds the socket any more; `Err` names the
    /// ones still holding it at `timeout`.
    pub async fn wait_drained(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let holding: Vec<i32> = self
                .pids
                .iter()
                .copied()
                .filter(|pid| holds_any(*pid, &self.inodes))
                .collect();
            if holding.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "workers {holding:?} of the previous configuration still accept connections after {timeout:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Inodes of sockets in LISTEN state on `address`'s port and address (or a wildcard).
fn listening_inodes(address: SocketAddr) -> Vec<u64> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(file) = std::fs::File::open(table) else {
            continue;
        };
        for line in std::io::BufReader::new(file).lines().skip(1) {
            let Ok(line) = line else {
                break;
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            if fields.len() < 10 {
                continue;
            }
            // The kernel lists listening sockets first; the rest (established, TIME_WAIT:
            // thousands on a busy server, and slow to generate) is not read.
            if fields[3] != "0A" {
                break;
            }
            let Some((ip, port)) = parse_local(fields[1]) else {
                continue;
            };
            let ip_matches = ip == address.ip() || ip.is_unspecified();
            if port == address.port()
                && ip_matches
                && let Ok(inode) = fields[9].parse::<u64>()
                && inode != 0
            {
                inodes.push(inode);
            }
        }
    }
    inodes
}

/// `0100007F:1F90` → 127.0.0.1:8080. The address words are printed in host byte order.
fn parse_local(field: &str) -> Option<(IpAddr, u16)> {
    let (ip_hex, port_hex) = field.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let words: Vec<u32> = (0..ip_hex.len() / 8)
        .map(|at| u32::from_str_radix(&ip_hex[at * 8..at * 8 + 8], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let ip = match words.as_slice() {
        [word] => IpAddr::V4(Ipv4Addr::from(word.to_ne_bytes())),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (index, word) in [a, b, c, d].iter().enumerate() {
                bytes[index * 4..index * 4 + 4].copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((ip, port))
}

/// (pid, parent pid) of every process holding one of `inodes`.
fn holders(inodes: &[u64]) -> Vec<(i32, i32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| holds_any(*pid, inodes))
        .filter_map(|pid| Some((pid, parent(pid)?)))
        .collect()
}

fn holds_any(pid: i32, inodes: &[u64]) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let text = target.to_str()?;
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse::<u64>()
                .ok()
        })
        .any(|inode| inodes.contains(&inode))
}

fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may contain spaces and parentheses; the fields after the last ')' are
    // "state ppid ...".
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_addresses() {
        #[cfg(target_endian = "little")]
        {
            assert_eq!(
                parse_local("0100007F:1F90"),
                Some((IpAddr::V4(Ipv4Addr::LOCALHOST), 8080))
            );
            assert_eq!(
                parse_local("00000000000000000000000001000000:0050"),
                Some((IpAddr::V6(Ipv6Addr::LOCALHOST), 80))
            );
        }
        assert_eq!(parse_local("zz:1"), None);
    }

    #[test]
    fn finds_the_holders_of_a_listening_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let inodes = listening_inodes(address);
        assert_eq!(inodes.len(), 1, "{address}");
        assert!(holds_any(std::process::id() as i32, &inodes));
        drop(listener);
        assert!(listening_inodes(address).is_empty());
    }
}
