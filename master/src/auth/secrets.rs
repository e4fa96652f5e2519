//! Secret environment values.
//!
//! A job's environment lives in `params.env`. A value is secret when the submission lists
//! its name in `secret_env` or when the name looks like one ([`looks_secret`]). Secret
//! values are sealed (ChaCha20-Poly1305 under the master's key, `<data-dir>/secret.key`)
//! as soon as a submission is checked, so the database, the scheduler's memory and every
//! view hold only `furrow-secret:v1:...`. They are opened in one place: the agent
//! session, on the assignment sent to the agent that runs the task. Views show sealed
//! values as [`SECRET_SHOWN`], and every environment value as [`HIDDEN_SHOWN`] to
//! callers who may not see the job's environment.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use furrow_protocol::ApiError;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde_json::Value;

use super::tokens::random_bytes;
use crate::error::MasterError;

/// Name of the key file in the data directory.
pub const KEY_FILE: &str = "secret.key";
/// The start of every sealed value.
pub const SEALED_PREFIX: &str = "furrow-secret:v1:";
/// What views show instead of a secret value.
pub const SECRET_SHOWN: &str = "(secret)";
/// What views show instead of an environment value the caller may not see.
pub const HIDDEN_SHOWN: &str = "(hidden)";

/// Words that make a variable name secret (compared with the name's `_`-separated parts).
const SECRET_WORDS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "KEY",
    "APIKEY",
    "CREDENTIAL",
    "CREDENTIALS",
    "PRIVATE",
    "AUTH",
    "COOKIE",
    "DSN",
];

/// Whether a variable name looks like it holds a secret: `DB_PASSWORD`, `AWS_SECRET_ACCESS_KEY`,
/// `GITHUB_TOKEN`, `apiKey`...
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.contains("SECRET")
        || upper.contains("PASSWORD")
        || upper
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|part| SECRET_WORDS.contains(&part))
        || upper.ends_with("KEY")
        || upper.ends_with("TOKEN")
}

/// Seals and opens secret values with the master's key.
pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    /// The key in `<data_dir>/secret.key`, made (mode 0600) on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, MasterError> {
        let path = data_dir.join(KEY_FILE);
        let map = |source| MasterError::DataDir {
            path: path.clone(),
            source,
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = random_bytes::<32>();
                write_private(&path, &key).map_err(map)?;
                key.to_vec()
            }
            Err(e) => return Err(map(e)),
        };
        Self::from_key(&bytes).ok_or_else(|| {
            MasterError::Config(format!(
                "{} holds {} bytes, not a 32-byte key",
                path.display(),
                bytes.len()
            ))
        })
    }

    /// A sealer with `key` (32 bytes).
    pub fn from_key(key: &[u8]) -> Option<Self> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, key).ok()?;
        Some(Self {
            key: LessSafeKey::new(key),
        })
    }

    /// `plain`, sealed.
    pub fn seal(&self, plain: &str) -> String {
        let nonce = random_bytes::<NONCE_LEN>();
        let mut data = plain.as_bytes().to_vec();
        // Sealing fails only for inputs of 256 GiB and more.
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .expect("a value small enough to seal");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// The plain text of a sealed value; `None` when it is not one, or was sealed with
    /// another key.
    pub fn open(&self, sealed: &str) -> Option<String> {
        let data = URL_SAFE_NO_PAD
            .decode(sealed.strip_prefix(SEALED_PREFIX)?)
            .ok()?;
        if data.len() < NONCE_LEN {
            return None;
        }
        let (nonce, cipher) = data.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut cipher = cipher.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut cipher)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }

    /// Seals the secret values of `params.env`: those named in `listed` and those whose
    /// names look secret. A listed name missing from `params.env` is an error naming it.
    pub fn seal_env(&self, params: &mut Value, listed: &[String]) -> Result<(), ApiError> {
        let env = params.get_mut("env").and_then(Value::as_object_mut);
        for name in listed {
            if !env.as_ref().is_some_and(|env| env.contains_key(name)) {
                return Err(ApiError::bad_request(format!(
                    "secret_env: {name:?} is not a variable of params.env"
                )));
            }
        }
        let Some(env) = env else {
            return Ok(());
        };
        for (name, value) in env.iter_mut() {
            if let Value::String(text) = value
                && !text.starts_with(SEALED_PREFIX)
                && (listed.contains(name) || looks_secret(name))
            {
                *text = self.seal(text);
            }
        }
        Ok(())
    }

    /// `params` with its sealed values opened, for the agent that runs the task. A value
    /// that does not open (a key changed by hand) is left sealed, so the task sees that
    /// instead of a wrong secret.
    pub fn reveal_env(&self, params: &mut Value) {
        let Some(env) = params.get_mut("env").and_then(Value::as_object_mut) else {
            return;
        };
        for value in env.values_mut() {
            if let Value::String(text) = value
                && text.starts_with(SEALED_PREFIX)
                && let Some(plain) = self.open(text)
            {
                *text = plain;
            }
        }
    }
}

/// `params` as a view shows them: sealed values as [`SECRET_SHOWN`], and with `hide_all`
/// every environment value as [`HIDDEN_SHOWN`].
pub fn mask_env(params: &mut Value, hide_all: bool) {
    let Some(env) = params.get_mut("env").and_then(Value::as_object_mut) else {
        return;
    };
    for value in env.values_mut() {
        match value {
            Value::String(text) if text.starts_with(SEALED_PREFIX) => {
                *text = SECRET_SHOWN.into();
            }
            _ if hide_all => *value = Value::String(HIDDEN_SHOWN.into()),
            _ => {}
        }
    }
}

/// Writes `bytes` to a new file readable by its owner only (replacing `path` at once).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::from_key(&[7u8; 32]).unwrap()
    }

    #[test]
    fn names_that_look_secret() {
        for name in [
            "DB_PASSWORD",
            "AWS_SECRET_ACCESS_KEY",
            "GITHUB_TOKEN",
            "apiKey",
            "API_KEY",
            "SSH_PRIVATE_KEY",
            "MYSECRET",
            "SENTRY_DSN",
            "AUTH_HEADER",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in [
            "PATH",
            "PWD",
            "HOME",
            "FRAME_START",
            "KEYFRAME",
            "OCIO",
            "RENDER_PASS",
        ] {
            assert!(!looks_secret(name), "{name}");
        }
    }

    #[test]
    fn sealed_values_open_with_their_key_only() {
        let sealed = sealer().seal("hunter2");
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(sealer().open(&sealed).as_deref(), Some("hunter2"));
        assert_ne!(sealer().seal("hunter2"), sealed, "a fresh nonce each time");
        let other = Sealer::from_key(&[8u8; 32]).unwrap();
        assert_eq!(other.open(&sealed), None);
        assert_eq!(sealer().open("furrow-secret:v1:!!"), None);
        assert_eq!(sealer().open("plain"), None);
    }

    #[test]
    fn env_is_sealed_revealed_and_masked() {
        let mut params = serde_json::json!({
            "command": ["true"],
            "env": {"DB_PASSWORD": "hunter2", "SHOT": "sh010", "CUSTOM": "opaque"}
        });
        sealer()
            .seal_env(&mut params, &["CUSTOM".to_string()])
            .unwrap();
        let text = params.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("opaque"),
            "{text}"
        );
        assert!(text.contains("sh010"));

        let mut shown = params.clone();
        mask_env(&mut shown, false);
        assert_eq!(shown["env"]["DB_PASSWORD"], SECRET_SHOWN);
        assert_eq!(shown["env"]["SHOT"], "sh010");
        let mut hidden = params.clone();
        mask_env(&mut hidden, true);
        assert_eq!(hidden["env"]["SHOT"], HIDDEN_SHOWN);
        assert_eq!(hidden["env"]["CUSTOM"], SECRET_SHOWN);

        let mut revealed = params.clone();
        sealer().reveal_env(&mut revealed);
        assert_eq!(revealed["env"]["DB_PASSWORD"], "hunter2");
        assert_eq!(revealed["env"]["CUSTOM"], "opaque");

        let err = sealer()
            .seal_env(&mut params, &["NOPE".to_string()])
            .unwrap_err();
        assert_eq!(
            err.message,
            "secret_env: \"NOPE\" is not a variable of params.env"
        );
    }
}
