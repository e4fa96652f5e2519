//! The agent's configuration file: the settings a SIGHUP can change without a restart.
//!
//! The file is read at start and on every SIGHUP. It sets the agent's display name,
//! tags, software and GPUs, one `key = value` per line:
//!
//! ```text
//! # furrow agent
//! name = render-07
//! tags = blender, gpu, linux
//! software = blender 3.4.1, ffmpeg 5.1
//! gpus = 0, 1
//! ```
//!
//! - `name`: the display name the master shows.
//! - `tags`: words the master matches against job requirements, separated by commas.
//! - `software`: `name version` pairs separated by commas (see [`parse_software`]).
//! - `gpus`: the GPU device indices (as `CUDA_VISIBLE_DEVICES` numbers them) the agent
//!   reports and hands out to tasks, instead of those `nvidia-smi` detects (see
//!   [`AgentConfig::gpus`]).
//!
//! Lines starting with `#` and blank lines are ignored. A key the file leaves out keeps
//! the value the agent was started with; an empty value clears it (`name =` falls back to
//! the hostname, `tags =` means no tags, `software =` no software, `gpus =` no GPU).
//! Anything else (an unknown key, a key given twice, quotes or brackets, a tag with a
//! space, a software without a version, a GPU that is not a number) is refused with the
//! line number, so a typo never changes what the master sees.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{AgentConfig, AgentError, parse_gpus, parse_software};

/// Settings read from the file; `None` for keys it leaves out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ConfigFile {
    pub name: Option<String>,
    pub tags: Option<Vec<String>>,
    pub software: Option<BTreeMap<String, String>>,
    pub gpus: Option<Vec<u32>>,
}

impl ConfigFile {
    /// Reads and parses `path`.
    pub async fn read(path: &Path) -> Result<Self, AgentError> {
        let text = tokio::fs::read_to_string(path).await.map_err(|e| {
            AgentError::Config(format!(
                "cannot read the configuration file {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(&text).map_err(|reason| {
            AgentError::Config(format!("configuration file {}: {reason}", path.display()))
        })
    }

    /// Parses the file's text; the error names the offending line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut file = Self::default();
        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!(
                    "line {number}: expected `key = value`, found `{line}`"
                ));
            };
            let key = key.trim();
            let value = value.trim();
            if value.starts_with(['"', '\'', '[']) {
                return Err(format!(
                    "line {number}: write values without quotes or brackets, e.g. `tags = blender, gpu`"
                ));
            }
            match key {
                "name" => {
                    if file.name.is_some() {
                        return Err(format!("line {number}: `name` is set twice"));
                    }
                    file.name = Some(value.to_string());
                }
                "tags" => {
                    if file.tags.is_some() {
                        return Err(format!("line {number}: `tags` is set twice"));
                    }
                    file.tags = Some(parse_tags(number, value)?);
                }
                "software" => {
                    if file.software.is_some() {
                        return Err(format!("line {number}: `software` is set twice"));
                    }
                    let software =
                        parse_software(value).map_err(|e| format!("line {number}: {e}"))?;
                    file.software = Some(software);
                }
                "gpus" => {
                    if file.gpus.is_some() {
                        return Err(format!("line {number}: `gpus` is set twice"));
                    }
                    let gpus = parse_gpus(value).map_err(|e| format!("line {number}: {e}"))?;
                    file.gpus = Some(gpus);
                }
                other => {
                    return Err(format!(
                        "line {number}: unknown key `{other}`; the file sets `name`, `tags`, `software` and `gpus`"
                    ));
                }
            }
        }
        Ok(file)
    }
}

fn parse_tags(number: usize, value: &str) -> Result<Vec<String>, String> {
    let tags: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|tag| !tag.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(tag) = tags.iter().find(|tag| tag.contains(char::is_whitespace)) {
        return Err(format!(
            "line {number}: tag `{tag}` contains a space; separate tags with commas"
        ));
    }
    Ok(tags)
}

/// The part of the configuration a reload can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reloadable {
    /// Display name; the hostname when `None` or blank.
    pub name: Option<String>,
    /// Tags for the master's requirements.
    pub tags: Vec<String>,
    /// Software offered, name to version.
    pub software: BTreeMap<String, String>,
    /// GPU indices reported instead of the detected ones; `None` reports those detected.
    pub gpus: Option<Vec<u32>>,
}

impl Reloadable {
    /// `config`'s values, overridden by its configuration file when it names one.
    pub async fn resolve(config: &AgentConfig) -> Result<Self, AgentError> {
        let base = Self {
            name: config.name.clone(),
            tags: config.tags.clone(),
            software: config.software.clone(),
            gpus: config.gpus.clone(),
        };
        match &config.config_file {
            Some(path) => Ok(base.overridden_by(ConfigFile::read(path).await?)),
            None => Ok(base),
        }
    }

    fn overridden_by(self, file: ConfigFile) -> Self {
        Self {
            name: file.name.or(self.name),
            tags: file.tags.unwrap_or(self.tags),
            software: file.software.unwrap_or(self.software),
            gpus: file.gpus.or(self.gpus),
        }
    }

    /// The display name, falling back to `hostname`.
    pub fn display_name(&self, hostname: &str) -> String {
        self.name
            .as_deref()
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .unwrap_or(hostname)
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    #[test]
    fn parses_names_tags_comments_and_blank_lines() {
        let file = ConfigFile::parse(
            "# furrow agent\n\n  name = render 07  \ntags = blender, gpu ,, linux\n# tags = old\n",
        )
        .unwrap();
        assert_eq!(file.name.as_deref(), Some("render 07"));
        assert_eq!(file.tags, Some(strings(&["blender", "gpu", "linux"])));
        assert_eq!(ConfigFile::parse("").unwrap(), ConfigFile::default());
        let cleared = ConfigFile::parse("name =\ntags =\nsoftware =\ngpus =").unwrap();
        assert_eq!(cleared.name.as_deref(), Some(""));
        assert_eq!(cleared.tags, Some(Vec::new()));
        assert_eq!(cleared.software, Some(BTreeMap::new()));
        assert_eq!(
            cleared.gpus,
            Some(Vec::new()),
            "an empty `gpus` means no GPU"
        );
    }

    #[test]
    fn parses_software_and_gpus() {
        let file = ConfigFile::parse(
            "# render node\nsoftware = blender 3.4.1, ffmpeg 5.1\n\ngpus = 0, 1\n",
        )
        .unwrap();
        assert_eq!(
            file.software,
            Some(BTreeMap::from([
                ("blender".to_string(), "3.4.1".to_string()),
                ("ffmpeg".to_string(), "5.1".to_string()),
            ]))
        );
        assert_eq!(file.gpus, Some(vec![0, 1]));
        assert_eq!((file.name, file.tags), (None, None));
    }

    #[test]
    fn refuses_what_it_does_not_understand_with_the_line() {
        let cases = [
            ("name = a\ntag = gpu", "line 2: unknown key `tag`"),
            (
                "slots = 4",
                "unknown key `slots`; the file sets `name`, `tags`, `software` and `gpus`",
            ),
            (
                "name = a\nsoftware = blender",
                "line 2: software `blender` has no version",
            ),
            (
                "\n\nsoftware = blender 3.4 lts, ffmpeg 5",
                "line 3: software entry `blender 3.4 lts` is more than a name and a version",
            ),
            (
                "software = blender 3, blender 4",
                "line 1: software `blender` is listed twice",
            ),
            (
                "software = a 1\nsoftware = b 2",
                "line 2: `software` is set twice",
            ),
            (
                "# gpus\ngpus = 0, one",
                "line 2: gpu `one` is not a device index",
            ),
            ("gpus = 1, 1", "line 1: gpu 1 is listed twice"),
            ("gpus = 0\ngpus = 1", "line 2: `gpus` is set twice"),
            (
                "gpus = [0, 1]",
                "line 1: write values without quotes or brackets",
            ),
            ("tags = a\ntags = b", "line 2: `tags` is set twice"),
            ("name = a\n\nname = b", "line 3: `name` is set twice"),
            ("blender", "line 1: expected `key = value`, found `blender`"),
            (
                "tags = [\"gpu\"]",
                "line 1: write values without quotes or brackets",
            ),
            ("name = \"x\"", "without quotes"),
            (
                "tags = blender gpu",
                "line 1: tag `blender gpu` contains a space",
            ),
        ];
        for (text, needle) in cases {
            let err = ConfigFile::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn keys_left_out_keep_the_started_values() {
        let cli_software = BTreeMap::from([("blender".to_string(), "3.0".to_string())]);
        let base = Reloadable {
            name: Some("cli-name".into()),
            tags: strings(&["cli"]),
            software: cli_software.clone(),
            gpus: Some(vec![3]),
        };
        let only_tags = ConfigFile {
            tags: Some(strings(&["file"])),
            ..ConfigFile::default()
        };
        let merged = base.clone().overridden_by(only_tags);
        assert_eq!(merged.name.as_deref(), Some("cli-name"));
        assert_eq!(merged.tags, ["file"]);
        assert_eq!(merged.software, cli_software);
        assert_eq!(merged.gpus, Some(vec![3]));
        let only_name = ConfigFile {
            name: Some(" ".into()),
            ..ConfigFile::default()
        };
        let merged = base.clone().overridden_by(only_name);
        assert_eq!(merged.tags, ["cli"]);
        assert_eq!(merged.display_name("host-1"), "host-1");
        let software_and_no_gpus = ConfigFile {
            software: Some(BTreeMap::new()),
            gpus: Some(Vec::new()),
            ..ConfigFile::default()
        };
        let merged = base.overridden_by(software_and_no_gpus);
        assert!(merged.software.is_empty());
        assert_eq!(merged.gpus, Some(Vec::new()));
    }

    #[tokio::test]
    async fn resolve_reads_the_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.conf");
        let mut config = AgentConfig::new("127.0.0.1:1", dir.path());
        config.tags = strings(&["cli"]);
        let plain = Reloadable::resolve(&config).await.unwrap();
        assert_eq!(plain.tags, ["cli"]);

        config.config_file = Some(path.clone());
        let missing = Reloadable::resolve(&config).await.unwrap_err().to_string();
        assert!(
            missing.contains("cannot read the configuration file")
                && missing.contains("agent.conf"),
            "{missing}"
        );
        std::fs::write(&path, "tags = gpu\ngpus = 1\nsoftware = nuke 15.0\n").unwrap();
        let read = Reloadable::resolve(&config).await.unwrap();
        assert_eq!(read.tags, ["gpu"]);
        assert_eq!(read.gpus, Some(vec![1]));
        assert_eq!(read.software.get("nuke").map(String::as_str), Some("15.0"));
        std::fs::write(&path, "tags = gpu\ncolour = red\n").unwrap();
        let invalid = Reloadable::resolve(&config).await.unwrap_err().to_string();
        assert!(
            invalid.contains("agent.conf: line 2: unknown key `colour`"),
            "{invalid}"
        );
    }
}
