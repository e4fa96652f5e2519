//! Token secrets: made from the operating system's random source, stored only as their
//! SHA-256 hash, and recognisable by their prefix (`fwa_` for API tokens and so on).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use furrow_protocol::TokenKind;
use ring::rand::{SecureRandom, SystemRandom};

/// Longest token accepted; anything longer is refused before it is hashed.
pub const MAX_TOKEN_LEN: usize = 256;

/// The prefix of a kind's tokens.
pub fn prefix(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Api => "fwa_",
        TokenKind::Join => "fwj_",
        TokenKind::Agent => "fwn_",
        TokenKind::Session => "fws_",
        TokenKind::Login => "fwl_",
    }
}

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The system source fails only on a broken kernel; there is no safe fallback.
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random source works");
    bytes
}

/// A new token of `kind`: its prefix and 256 random bits.
pub fn generate(kind: TokenKind) -> String {
    format!(
        "{}{}",
        prefix(kind),
        URL_SAFE_NO_PAD.encode(random_bytes::<32>())
    )
}

/// The stored form of a token: SHA-256, hex.
pub fn hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A token's public id: the start of its hash (enough to name it, useless to forge it).
pub fn id_of(hash: &str) -> String {
    hash[..16.min(hash.len())].to_string()
}

/// Why a presented token is malformed, before any lookup.
pub fn check_shape(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("token: empty".into());
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(format!(
            "token: {} bytes, longer than any furrow token ({MAX_TOKEN_LEN} at most)",
            token.len()
        ));
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("token: contains characters no furrow token has".into());
    }
    if !token.starts_with("fw") {
        return Err("token: not a furrow token (they start with fw)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_prefixed_and_hash_stably() {
        let a = generate(TokenKind::Api);
        let b = generate(TokenKind::Api);
        assert_ne!(a, b);
        assert!(a.starts_with("fwa_") && a.len() == 4 + 43, "{a}");
        assert!(check_shape(&a).is_ok());
        assert_eq!(hash(&a), hash(&a));
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn malformed_tokens_are_named() {
        assert_eq!(check_shape("").unwrap_err(), "token: empty");
        assert!(
            check_shape(&"fw".repeat(200))
                .unwrap_err()
                .contains("longer")
        );
        assert!(
            check_shape("fwa_\u{0}x")
                .unwrap_err()
                .contains("characters")
        );
        assert!(
            check_shape("hello")
                .unwrap_err()
                .contains("not a furrow token")
        );
    }
}
