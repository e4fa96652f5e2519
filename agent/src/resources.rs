//! What the host offers: `HostInfo` once at startup (CPUs, memory, OS from /proc; GPUs
//! with their device indices from `nvidia-smi`, which the configuration may override:
//! `resolve_gpus`) and the `ResourceMonitor` actor answering load samples for heartbeats
//! from /proc.

use std::time::Duration;

use actix::prelude::*;
use furrow_protocol::GpuInfo;
use tracing::debug;

/// How long `nvidia-smi` may take before the agent gives up on GPUs.
const GPU_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The host's fixed resources, reported at registration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HostInfo {
    pub hostname: String,
    /// Kernel name and release, e.g. `Linux 6.1.0`.
    pub os: String,
    pub cpus: u32,
    pub ram_mb: u64,
    pub gpus: Vec<GpuInfo>,
    /// Software found on the host ([`detect_software`]), name → version.
    pub software: std::collections::BTreeMap<String, String>,
}

impl HostInfo {
    /// Reads the host's resources; what cannot be read is reported as unknown (zero or
    /// empty), never as an error.
    pub async fn probe() -> Self {
        let hostname = nix::unistd::gethostname()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let ram_mb = read_meminfo().total_mb.unwrap_or(0);
        Self {
            hostname,
            os: os_name(),
            cpus,
            ram_mb,
            gpus: probe_gpus().await,
            software: std::collections::BTreeMap::new(),
        }
    }
}

/// `uname -sr`, from the same kernel files uname reads.
fn os_name() -> String {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/proc/sys/kernel/{file}"))
            .map(|text| text.trim().to_string())
            .ok()
    };
    match (read("ostype"), read("osrelease")) {
        (Some(sysname), Some(release)) => format!("{sysname} {release}"),
        (Some(sysname), None) => sysname,
        _ => std::env::consts::OS.to_string(),
    }
}

/// Memory figures of /proc/meminfo, in MiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MemInfo {
    total_mb: Option<u64>,
    available_mb: Option<u64>,
}

fn read_meminfo() -> MemInfo {
    std::fs::read_to_string("/proc/meminfo")
        .map(|text| parse_meminfo(&text))
        .unwrap_or_default()
}

fn parse_meminfo(text: &str) -> MemInfo {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib / 1024)
        })
    };
    MemInfo {
        total_mb: field("MemTotal"),
        available_mb: field("MemAvailable").or_else(|| field("MemFree")),
    }
}

fn parse_loadavg(text: &str) -> Option<f32> {
    text.split_whitespace().next()?.parse().ok()
}

/// GPUs as `nvidia-smi` reports them; none when it is missing, fails or hangs.
/// How long `blender --version` or `ffmpeg -version` may take.
const SOFTWARE_PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// The versions of Blender and ffmpeg on the `PATH`, for the job types that need them:
/// `blender` → `3.4.1`, `ffmpeg` → `5.1.9`. A program that is missing or does not answer
/// is left out.
pub(crate) async fn detect_software() -> std::collections::BTreeMap<String, String> {
    let (blender, ffmpeg) = futures::join!(
        program_version("blender", "--version", "Blender "),
        program_version("ffmpeg", "-version", "ffmpeg version "),
    );
    [("blender", blender), ("ffmpeg", ffmpeg)]
        .into_iter()
        .filter_map(|(name, version)| Some((name.to_string(), version?)))
        .collect()
}

/// The version of the web server the agent mounts apps on (`nginx -v`, `apache2 -v`,
/// `lighttpd -v`); `0` when it cannot be told. The agent offers its web server as
/// software under the kind's name, so jobs of an app (its recurrent tasks) ask for it.
pub(crate) async fn webserver_version(kind: furrow_deploy::webserver::WebServerKind) -> String {
    use furrow_deploy::webserver::WebServerKind;
    let (program, prefix) = match kind {
        WebServerKind::Nginx => ("/usr/sbin/nginx", "nginx version: nginx/"),
        WebServerKind::Apache => ("/usr/sbin/apache2", "Server version: Apache/"),
        WebServerKind::Lighttpd => ("/usr/sbin/lighttpd", "lighttpd/"),
    };
    let mut command = tokio::process::Command::new(program);
    command
        .arg("-v")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let Ok(Ok(output)) = tokio::time::timeout(SOFTWARE_PROBE_TIMEOUT, command.output()).await
    else {
        return "0".into();
    };
    // nginx says it on stderr, the others on stdout.
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    parse_version(&text, prefix).unwrap_or_else(|| "0".into())
}

async fn program_version(program: &str, flag: &str, prefix: &str) -> Option<String> {
    let mut command = tokio::process::Command::new(program);
    command
        .arg(flag)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(SOFTWARE_PROBE_TIMEOUT, command.output()).await {
        Ok(Ok(output)) if output.status.success() => output,
        _ => {
            debug!(program, "not found or no version; not offered as software");
            return None;
        }
    };
    let version = parse_version(&String::from_utf8_lossy(&output.stdout), prefix);
    debug!(program, ?version, "software detected");
    version
}

/// The dotted version after `prefix` on the first line that has it (`5.1.9` from
/// `ffmpeg version 5.1.9-0+deb12u1 Copyright...`).
fn parse_version(text: &str, prefix: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(prefix)?;
        let rest = rest.trim_start_matches(|c: char| !c.is_ascii_digit());
        let version: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let version = version.trim_end_matches('.');
        (!version.is_empty()).then(|| version.to_string())
    })
}

async fn probe_gpus() -> Vec<GpuInfo> {
    let mut command = tokio::process::Command::new("nvidia-smi");
    command
        .args([
            "--query-gpu=index,name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(GPU_PROBE_TIMEOUT, command.output()).await {
        Ok(Ok(output)) if output.status.success() => {
            parse_nvidia_smi(&String::from_utf8_lossy(&output.stdout))
        }
        Ok(Ok(output)) => {
            debug!(status = %output.status, "nvidia-smi failed; reporting no gpus");
            Vec::new()
        }
        Ok(Err(error)) => {
            debug!(%error, "nvidia-smi not available; reporting no gpus");
            Vec::new()
        }
        Err(_) => {
            debug!("nvidia-smi did not answer in time; reporting no gpus");
            Vec::new()
        }
    }
}

/// Parses `index, name, memory_mib` lines. The name sits between the first and the last
/// comma, so a model name with a comma in it survives; lines that do not parse are skipped.
fn parse_nvidia_smi(text: &str) -> Vec<GpuInfo> {
    text.lines()
        .filter_map(|line| {
            let (index, rest) = line.split_once(',')?;
            let (name, memory) = rest.rsplit_once(',')?;
            Some(GpuInfo {
                index: index.trim().parse().ok()?,
                name: name.trim().to_string(),
                memory_mb: memory.trim().parse().ok()?,
            })
        })
        .filter(|gpu| !gpu.name.is_empty())
        .collect()
}

/// The GPUs the agent reports: the detected ones, or exactly the indices of `chosen` when
/// the configuration names them. A chosen index that was detected keeps its name and
/// memory; one that was not is reported as `gpu N` with unknown (zero) memory, since the
/// operator knows better than a missing or failing `nvidia-smi`.
pub(crate) fn resolve_gpus(detected: &[GpuInfo], chosen: Option<&[u32]>) -> Vec<GpuInfo> {
    let Some(chosen) = chosen else {
        return detected.to_vec();
    };
    chosen
        .iter()
        .map(|&index| {
            detected
                .iter()
                .find(|gpu| gpu.index == index)
                .cloned()
                .unwrap_or_else(|| GpuInfo {
                    index,
                    name: format!("gpu {index}"),
                    memory_mb: 0,
                })
        })
        .collect()
}

/// Current load figures for a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, MessageResponse)]
pub(crate) struct LoadSample {
    /// Memory available to new work, in MiB.
    pub free_ram_mb: u64,
    /// One-minute load average.
    pub load: f32,
}

/// Ask for a [`LoadSample`].
#[derive(Message)]
#[rtype(result = "LoadSample")]
pub(crate) struct SampleLoad;

/// Answers load samples from /proc. Reading two small /proc files takes microseconds,
/// so samples are taken on request rather than on a timer.
pub(crate) struct ResourceMonitor;

impl Actor for ResourceMonitor {
    type Context = Context<Self>;
}

impl Handler<SampleLoad> for ResourceMonitor {
    type Result = LoadSample;

    fn handle(&mut self, _msg: SampleLoad, _ctx: &mut Context<Self>) -> LoadSample {
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|text| parse_loadavg(&text))
            .unwrap_or(0.0);
        LoadSample {
            free_ram_mb: read_meminfo().available_mb.unwrap_or(0),
            load,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_banner() {
        assert_eq!(
            parse_version(
                "ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000",
                "ffmpeg version "
            )
            .as_deref(),
            Some("5.1.9")
        );
        assert_eq!(
            parse_version("Blender 3.4.1\n\tbuild date: x", "Blender ").as_deref(),
            Some("3.4.1")
        );
        assert_eq!(
            parse_version("ffmpeg version n6.0 Copyright", "ffmpeg version ").as_deref(),
            Some("6.0")
        );
        assert_eq!(parse_version("nothing here", "Blender "), None);
    }

    #[test]
    fn parses_proc_files() {
        let meminfo = "MemTotal:       16318412 kB\nMemFree:         1000000 kB\nMemAvailable:    8159206 kB\n";
        assert_eq!(
            parse_meminfo(meminfo),
            MemInfo {
                total_mb: Some(15935),
                available_mb: Some(7967)
            }
        );
        assert_eq!(
            parse_meminfo("MemTotal: 2048 kB\nMemFree: 1024 kB\n").available_mb,
            Some(1)
        );
        assert_eq!(parse_loadavg("0.52 0.58 0.59 1/467 12345\n"), Some(0.52));
        assert_eq!(parse_loadavg(""), None);
    }

    fn gpu(index: u32, name: &str, memory_mb: u64) -> GpuInfo {
        GpuInfo {
            index,
            name: name.into(),
            memory_mb,
        }
    }

    #[test]
    fn parses_nvidia_smi_lines() {
        let text = "0, NVIDIA GeForce RTX 3090, 24576\n1, Tesla T4, 15360\n3, Odd, Name, 8\n\ngarbage\nx, Bad Index, 1\n2, , 5\n";
        assert_eq!(
            parse_nvidia_smi(text),
            [
                gpu(0, "NVIDIA GeForce RTX 3090", 24576),
                gpu(1, "Tesla T4", 15360),
                gpu(3, "Odd, Name", 8),
            ]
        );
    }

    #[test]
    fn chosen_gpus_override_detection() {
        let detected = [gpu(0, "RTX 3090", 24576), gpu(1, "Tesla T4", 15360)];
        assert_eq!(resolve_gpus(&detected, None), detected);
        assert_eq!(
            resolve_gpus(&detected, Some(&[1, 4])),
            [gpu(1, "Tesla T4", 15360), gpu(4, "gpu 4", 0)]
        );
        assert_eq!(resolve_gpus(&detected, Some(&[])), []);
        assert_eq!(resolve_gpus(&[], Some(&[0])), [gpu(0, "gpu 0", 0)]);
    }

    #[actix_rt::test]
    async fn probes_this_host() {
        let host = HostInfo::probe().await;
        assert!(host.cpus >= 1);
        assert!(host.ram_mb > 0);
        assert!(host.os.starts_with("Linux "), "{}", host.os);
        assert!(!host.hostname.is_empty());
        let sample = ResourceMonitor.start().send(SampleLoad).await.unwrap();
        assert!(sample.free_ram_mb > 0 && sample.free_ram_mb <= host.ram_mb);
        assert!(sample.load >= 0.0);
    }
}
