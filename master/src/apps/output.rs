//! The apps' output: one file per app and release, `<data-dir>/logs/apps/<app>/<N>.log`,
//! one line per output line (`at_ms`, agent, process.instance, stream, text, separated by
//! tabs; the text last, so it may hold tabs). Nothing goes to the database per line.
//! A search reads the files on a blocking thread.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use furrow_protocol::{AppLogBatch, AppLogLine, LogStream};
use regex::Regex;

/// Most lines one search returns.
pub const MAX_SEARCH_LINES: usize = 10_000;

/// Open output files of the apps.
#[derive(Debug)]
pub struct AppOutput {
    dir: PathBuf,
    files: HashMap<(String, u32), File>,
}

fn stream_name(stream: LogStream) -> &'static str {
    match stream {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
        LogStream::Agent => "agent",
    }
}

impl AppOutput {
    /// Output kept under `dir` (`<data-dir>/logs/apps`).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            files: HashMap::new(),
        }
    }

    /// Appends a batch from agent `agent` (its name).
    pub fn append(&mut self, agent: &str, batch: &AppLogBatch) -> std::io::Result<()> {
        let key = (batch.app.clone(), batch.release);
        if !self.files.contains_key(&key) {
            let dir = self.dir.join(&batch.app);
            std::fs::create_dir_all(&dir)?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{}.log", batch.release)))?;
            self.files.insert(key.clone(), file);
        }
        let mut text = String::new();
        for line in &batch.lines {
            let clean: String = line
                .text
                .chars()
                .filter(|c| *c != '\n' && *c != '\r')
                .collect();
            text.push_str(&format!(
                "{}\t{}\t{}.{}\t{}\t{}\n",
                line.at_ms,
                agent,
                batch.process,
                batch.instance,
                stream_name(line.stream),
                clean
            ));
        }
        match self.files.get_mut(&key) {
            Some(file) => file.write_all(text.as_bytes()),
            None => Ok(()),
        }
    }

    /// Closes and removes the output of `app`.
    pub fn remove(&mut self, app: &str) -> std::io::Result<()> {
        self.files.retain(|(name, _), _| name != app);
        match std::fs::remove_dir_all(self.dir.join(app)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// What a search asks for.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// Lines matching this (a regular expression), or all.
    pub pattern: Option<Regex>,
    /// Lines read at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only this release.
    pub release: Option<u32>,
    /// At most this many lines: the newest.
    pub limit: usize,
}

fn parse_line(line: &str, release: u32) -> Option<AppLogLine> {
    let mut fields = line.splitn(5, '\t');
    let at_ms = fields.next()?.parse().ok()?;
    let agent = fields.next()?.to_string();
    let instance = fields.next()?.to_string();
    let stream = fields.next()?.to_string();
    let text = fields.next()?.to_string();
    Some(AppLogLine {
        at_ms,
        agent,
        release,
        instance,
        stream,
        text,
    })
}

/// The newest lines of `app`'s output matching `search`, oldest first. Blocking.
pub fn search(dir: &Path, app: &str, search: &Search) -> std::io::Result<Vec<AppLogLine>> {
    let app_dir = dir.join(app);
    let mut releases: Vec<u32> = match std::fs::read_dir(&app_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".log")?
                    .parse::<u32>()
                    .ok()
            })
            .filter(|r| search.release.is_none_or(|wanted| wanted == *r))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    releases.sort_unstable();
    let limit = search.limit.clamp(1, MAX_SEARCH_LINES);
    let mut found = std::collections::VecDeque::with_capacity(limit);
    for release in releases {
        let file = File::open(app_dir.join(format!("{release}.log")))?;
        for line in BufReader::new(file).lines() {
            let line = line?;
            let Some(parsed) = parse_line(&line, release) else {
                continue;
            };
            if search.since_ms.is_some_and(|since| parsed.at_ms < since) {
                continue;
            }
            if let Some(pattern) = &search.pattern
                && !pattern.is_match(&parsed.text)
            {
                continue;
            }
            if found.len() == limit {
                found.pop_front();
            }
            found.push_back(parsed);
        }
    }
    let mut lines: Vec<AppLogLine> = found.into_iter().collect();
    lines.sort_by_key(|l| l.at_ms);
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use furrow_protocol::LogLine;

    use super::*;

    fn batch(release: u32, texts: &[(i64, &str)]) -> AppLogBatch {
        AppLogBatch {
            app: "hello".into(),
            release,
            process: "web".into(),
            instance: 0,
            lines: texts
                .iter()
                .map(|(at_ms, text)| LogLine {
                    at_ms: *at_ms,
                    stream: LogStream::Stdout,
                    text: text.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn output_is_kept_per_release_and_found_by_pattern_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut output = AppOutput::new(dir.path().to_path_buf());
        output
            .append(
                "host-1",
                &batch(1, &[(10, "GET /hello 200"), (20, "error: boom\tx")]),
            )
            .unwrap();
        output
            .append(
                "host-2",
                &batch(2, &[(30, "GET /hello 500"), (40, "error: again")]),
            )
            .unwrap();
        let all = search(
            dir.path(),
            "hello",
            &Search {
                limit: 100,
                ..Search::default()
            },
        )
        .unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[1].text, "error: boom\tx");
        assert_eq!((all[2].agent.as_str(), all[2].release), ("host-2", 2));
        assert_eq!(all[2].instance, "web.0");
        let errors = search(
            dir.path(),
            "hello",
            &Search {
                pattern: Some(Regex::new("^error").unwrap()),
                since_ms: Some(25),
                limit: 100,
                release: None,
            },
        )
        .unwrap();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].text, "error: again");
        let newest = search(
            dir.path(),
            "hello",
            &Search {
                limit: 1,
                ..Search::default()
            },
        )
        .unwrap();
        assert_eq!(newest[0].at_ms, 40);
        output.remove("hello").unwrap();
        assert!(
            search(
                dir.path(),
                "hello",
                &Search {
                    limit: 10,
                    ..Search::default()
                }
            )
            .unwrap()
            .is_empty()
        );
    }
}
