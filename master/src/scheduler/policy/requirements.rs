//! Requirements of a job's tasks and how they match an agent: tags (with `!` negation),
//! software version ranges, and the capacity one task reserves (cpus, memory, GPUs).
//!
//! Parsing happens once, at submission (the messages name the field) and when the
//! scheduler takes a job in; matching is then plain comparisons.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use furrow_protocol::Requirements;

/// Most tags a job may require, and most software entries.
const MAX_ENTRIES: usize = 64;

/// A dotted version, compared component by component as numbers (`3.10 > 3.9`); missing
/// components count as zero and anything after the leading digits of a component (`1rc2`)
/// is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(Vec<u64>);

impl Version {
    /// Parses `4.2.1`, `5.1`, `6`, `4.2.1-lts`; `None` without a leading number.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let text = text.strip_prefix(['v', 'V']).unwrap_or(text);
        let core = text.split(['-', '+', ' ']).next().unwrap_or("");
        let mut parts = Vec::new();
        for part in core.split('.') {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() {
                break;
            }
            parts.push(digits.parse().ok()?);
            if digits.len() != part.len() {
                break;
            }
        }
        (!parts.is_empty()).then_some(Self(parts))
    }

    fn component(&self, i: usize) -> u64 {
        self.0.get(i).copied().unwrap_or(0)
    }

    fn compare(&self, other: &Version) -> Ordering {
        let len = self.0.len().max(other.0.len());
        (0..len)
            .map(|i| self.component(i).cmp(&other.component(i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }

    /// Whether `self` starts with every component of `prefix` (`4.2.1` starts with `4.2`).
    fn starts_with(&self, prefix: &Version) -> bool {
        prefix
            .0
            .iter()
            .enumerate()
            .all(|(i, c)| self.component(i) == *c)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    /// `=4.2` or a bare `4.2`: every given component equal.
    Eq,
    Ne,
}

/// A version range: comparisons joined by commas, all of which must hold
/// (`>=3.0, <5`, `4.2`, `!=4.1`), or `*` for any version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRange {
    text: String,
    clauses: Vec<(Op, Version)>,
}

impl VersionRange {
    /// Parses a range; the error says which clause is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim() == "*" {
            return Ok(Self {
                text: "*".into(),
                clauses: Vec::new(),
            });
        }
        let mut clauses = Vec::new();
        for clause in text.split(',') {
            let clause = clause.trim();
            if clause.is_empty() {
                if text.trim().is_empty() {
                    return Err("empty version range (expected e.g. \">=3.0, <5\")".into());
                }
                return Err(format!("empty clause in {text:?}"));
            }
            let (op, rest) = [
                (">=", Op::Ge),
                ("<=", Op::Le),
                ("!=", Op::Ne),
                ("==", Op::Eq),
                (">", Op::Gt),
                ("<", Op::Lt),
                ("=", Op::Eq),
            ]
            .iter()
            .find_map(|(prefix, op)| clause.strip_prefix(prefix).map(|rest| (*op, rest)))
            .unwrap_or((Op::Eq, clause));
            let version = Version::parse(rest)
                .filter(|_| {
                    rest.trim()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c))
                })
                .ok_or_else(|| {
                    format!("{clause:?} is not a version comparison (expected e.g. >=3.0)")
                })?;
            clauses.push((op, version));
        }
        Ok(Self {
            text: text.trim().to_string(),
            clauses,
        })
    }

    /// Whether `version` is in the range.
    pub fn contains(&self, version: &Version) -> bool {
        self.clauses.iter().all(|(op, bound)| match op {
            Op::Ge => version.compare(bound).is_ge(),
            Op::Gt => version.compare(bound).is_gt(),
            Op::Le => version.compare(bound).is_le(),
            Op::Lt => version.compare(bound).is_lt(),
            Op::Eq => version.starts_with(bound),
            Op::Ne => !version.starts_with(bound),
        })
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What an agent offers, as far as requirements go.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Offer {
    /// Logical CPUs.
    pub cpus: u32,
    /// Memory, MiB.
    pub ram_mb: u64,
    /// GPU device indices.
    pub gpus: Vec<u32>,
    /// Tags.
    pub tags: Vec<String>,
    /// Software, name to version.
    pub software: BTreeMap<String, String>,
}

/// Parsed requirements of a job's tasks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Needs {
    /// CPUs reserved per task.
    pub cpus: u32,
    /// Memory reserved per task, MiB.
    pub ram_mb: u64,
    /// GPUs per task.
    pub gpus: u32,
    /// Tags the agent must have.
    pub tags: Vec<String>,
    /// Tags the agent must not have.
    pub not_tags: Vec<String>,
    /// Software with its range.
    pub software: Vec<(String, VersionRange)>,
}

/// Why an agent can never run a job's tasks (whatever runs there).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Miss {
    /// Fewer CPUs than one task reserves.
    Cpus,
    /// Less memory than one task reserves.
    Ram,
    /// Fewer GPUs than one task takes.
    Gpus,
    /// A required tag is missing.
    Tag(String),
    /// An excluded tag is present.
    NotTag(String),
    /// The software is missing or outside the range.
    Software(String),
}

/// Checks one tag (or software name); the error names `field`.
pub fn check_tag(tag: &str, field: &str) -> Result<(), String> {
    if tag.is_empty()
        || tag.len() > 64
        || !tag
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.:/".contains(c))
    {
        return Err(format!(
            "{field}: {tag:?} is not a tag (letters, digits and -_.:/, at most 64)"
        ));
    }
    Ok(())
}

impl Needs {
    /// Parses and checks requirements; errors name the field (`requirements.tags`...).
    pub fn parse(req: &Requirements) -> Result<Self, String> {
        if req.tags.len() > MAX_ENTRIES || req.software.len() > MAX_ENTRIES {
            return Err(format!(
                "requirements: at most {MAX_ENTRIES} tags and {MAX_ENTRIES} software entries"
            ));
        }
        if req.gpus > 64 {
            return Err(format!(
                "requirements.gpus: at most 64 per task, got {}",
                req.gpus
            ));
        }
        if req.ram_mb > i64::MAX as u64 {
            return Err("requirements.ram_mb: too large".into());
        }
        let mut needs = Needs {
            cpus: req.cpus,
            ram_mb: req.ram_mb,
            gpus: req.gpus,
            ..Needs::default()
        };
        for tag in &req.tags {
            let tag = tag.trim();
            match tag.strip_prefix('!') {
                Some(excluded) => {
                    check_tag(excluded, "requirements.tags")?;
                    needs.not_tags.push(excluded.to_string());
                }
                None => {
                    check_tag(tag, "requirements.tags")?;
                    needs.tags.push(tag.to_string());
                }
            }
        }
        if let Some(tag) = needs.tags.iter().find(|t| needs.not_tags.contains(t)) {
            return Err(format!(
                "requirements.tags: {tag:?} is both required and excluded"
            ));
        }
        for (name, range) in &req.software {
            check_tag(name, "requirements.software")?;
            let range = VersionRange::parse(range)
                .map_err(|e| format!("requirements.software.{name}: {e}"))?;
            needs.software.push((name.clone(), range));
        }
        Ok(needs)
    }

    /// The first reason `offer` can never run these tasks, even idle.
    pub fn misses(&self, offer: &Offer) -> Vec<Miss> {
        let mut misses = Vec::new();
        if self.cpus > offer.cpus {
            misses.push(Miss::Cpus);
        }
        if self.ram_mb > offer.ram_mb {
            misses.push(Miss::Ram);
        }
        if self.gpus as usize > offer.gpus.len() {
            misses.push(Miss::Gpus);
        }
        for tag in &self.tags {
            if !offer.tags.contains(tag) {
                misses.push(Miss::Tag(tag.clone()));
            }
        }
        for tag in &self.not_tags {
            if offer.tags.contains(tag) {
                misses.push(Miss::NotTag(tag.clone()));
            }
        }
        for (name, range) in &self.software {
            let ok = offer
                .software
                .get(name)
                .and_then(|v| Version::parse(v))
                .is_some_and(|v| range.contains(&v));
            if !ok {
                misses.push(Miss::Software(name.clone()));
            }
        }
        misses
    }

    /// Whether an idle `offer` could run these tasks.
    pub fn fits(&self, offer: &Offer) -> bool {
        self.misses(offer).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(v("3.10").compare(&v("3.9")).is_gt());
        assert!(v("4").compare(&v("4.0.0")).is_eq());
        assert_eq!(v("v4.2.1-lts").to_string(), "4.2.1");
        assert_eq!(v("5.1rc2").to_string(), "5.1");
        assert!(Version::parse("latest").is_none());
    }

    #[test]
    fn ranges_hold_every_clause() {
        let r = VersionRange::parse(">=3.0, <5").unwrap();
        assert!(r.contains(&v("3.0")));
        assert!(r.contains(&v("4.2.1")));
        assert!(!r.contains(&v("5.0")));
        assert!(!r.contains(&v("2.93")));
        let bare = VersionRange::parse("4.2").unwrap();
        assert!(bare.contains(&v("4.2.7")));
        assert!(!bare.contains(&v("4.3")));
        let any = VersionRange::parse(" * ").unwrap();
        assert!(any.contains(&v("0.1")) && any.contains(&v("99")));
        assert_eq!(any.to_string(), "*");
        let ne = VersionRange::parse(">=4, !=4.1").unwrap();
        assert!(ne.contains(&v("4.2")));
        assert!(!ne.contains(&v("4.1.3")));
    }

    #[test]
    fn bad_ranges_say_which_clause() {
        for (text, needle) in [
            ("", "empty version range"),
            (">=3.0,", "empty clause"),
            (">=three", "\">=three\" is not a version comparison"),
            ("~>1; rm", "is not a version comparison"),
        ] {
            let err = VersionRange::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn needs_parse_and_name_the_field() {
        let req = Requirements {
            cpus: 2,
            ram_mb: 4096,
            gpus: 1,
            tags: vec!["linux".into(), "!laptop".into()],
            software: [("blender".to_string(), ">=3.0, <5".to_string())].into(),
        };
        let needs = Needs::parse(&req).unwrap();
        assert_eq!(needs.tags, vec!["linux"]);
        assert_eq!(needs.not_tags, vec!["laptop"]);
        let bad = Requirements {
            software: [("blender".to_string(), "<<5".to_string())].into(),
            ..Requirements::default()
        };
        assert!(
            Needs::parse(&bad)
                .unwrap_err()
                .starts_with("requirements.software.blender: ")
        );
        let both = Requirements {
            tags: vec!["a".into(), "!a".into()],
            ..Requirements::default()
        };
        assert!(Needs::parse(&both).unwrap_err().contains("both required"));
        let space = Requirements {
            tags: vec!["a b".into()],
            ..Requirements::default()
        };
        assert!(
            Needs::parse(&space)
                .unwrap_err()
                .starts_with("requirements.tags: ")
        );
    }

    #[test]
    fn misses_list_every_reason() {
        let needs = Needs::parse(&Requirements {
            cpus: 4,
            gpus: 2,
            tags: vec!["linux".into(), "!laptop".into()],
            software: [("blender".to_string(), ">=3.0, <5".to_string())].into(),
            ..Requirements::default()
        })
        .unwrap();
        let offer = Offer {
            cpus: 8,
            ram_mb: 1024,
            gpus: vec![0],
            tags: vec!["linux".into(), "laptop".into()],
            software: [("blender".to_string(), "2.93".to_string())].into(),
        };
        assert_eq!(
            needs.misses(&offer),
            vec![
                Miss::Gpus,
                Miss::NotTag("laptop".into()),
                Miss::Software("blender".into())
            ]
        );
        let good = Offer {
            gpus: vec![0, 1],
            tags: vec!["linux".into()],
            software: [("blender".to_string(), "4.2.1".to_string())].into(),
            ..offer
        };
        assert!(needs.fits(&good));
    }
}
