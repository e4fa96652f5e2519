//! The manifest's value types that plain serde derives cannot express: durations written
//! as text, health checks that are a path or a command, stop signals by name.

use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

use super::Health;
use crate::units::parse_duration;

/// Reads a duration written as text (`10s`); a number is refused with the expected form.
pub(super) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct DurationVisitor;
    impl de::Visitor<'_> for DurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration like 500ms, 10s, 5m, 1h or 1d")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(DurationVisitor)
}

impl<'de> Deserialize<'de> for Health {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HealthVisitor;
        impl<'de> de::Visitor<'de> for HealthVisitor {
            type Value = Health;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an HTTP path starting with / or a command (a list of strings)")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Health, E> {
                Ok(Health::Http(text.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Health, A::Error> {
                let mut command = Vec::new();
                while let Some(argument) = seq.next_element::<String>()? {
                    command.push(argument);
                }
                Ok(Health::Command(command))
            }
        }
        deserializer.deserialize_any(HealthVisitor)
    }
}

/// The signal that asks a process to stop, by its name without `SIG`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub enum StopSignal {
    /// `SIGTERM`, the default.
    #[default]
    Term,
    /// `SIGINT`.
    Int,
    /// `SIGQUIT` (e.g. a graceful stop of some servers).
    Quit,
    /// `SIGHUP`.
    Hup,
    /// `SIGUSR1`.
    Usr1,
    /// `SIGUSR2`.
    Usr2,
    /// `SIGWINCH` (e.g. Apache's graceful stop).
    Winch,
    /// `SIGKILL`: no grace at all.
    Kill,
}

impl StopSignal {
    const ALL: [(&'static str, StopSignal, libc::c_int); 8] = [
        ("TERM", StopSignal::Term, libc::SIGTERM),
        ("INT", StopSignal::Int, libc::SIGINT),
        ("QUIT", StopSignal::Quit, libc::SIGQUIT),
        ("HUP", StopSignal::Hup, libc::SIGHUP),
        ("USR1", StopSignal::Usr1, libc::SIGUSR1),
        ("USR2", StopSignal::Usr2, libc::SIGUSR2),
        ("WINCH", StopSignal::Winch, libc::SIGWINCH),
        ("KILL", StopSignal::Kill, libc::SIGKILL),
    ];

    /// The signal's number for `kill(2)`.
    pub fn as_raw(self) -> libc::c_int {
        Self::ALL
            .iter()
            .find(|(_, signal, _)| *signal == self)
            .map_or(libc::SIGTERM, |entry| entry.2)
    }

    /// The signal's name without `SIG` (`TERM`).
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, signal, _)| *signal == self)
            .map_or("TERM", |entry| entry.0)
    }
}

impl<'de> Deserialize<'de> for StopSignal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let upper = text.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        StopSignal::ALL
            .iter()
            .find(|(known, _, _)| *known == name)
            .map(|entry| entry.1)
            .ok_or_else(|| {
                let known: Vec<&str> = StopSignal::ALL.iter().map(|entry| entry.0).collect();
                de::Error::custom(format!(
                    "unknown signal {text:?}, expected one of {}",
                    known.join(", ")
                ))
            })
    }
}
