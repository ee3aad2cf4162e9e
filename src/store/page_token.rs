//! Page tokens: opaque, versioned and checked. A token names the backend and the listing that produced it and carries
//! a check value over both and the position, so a truncated, edited, other-store or other-listing token is refused
//! with `InvalidArgument` before any query runs. Tokens are integrity-checked, not secret: they hold only a position
//! in a listing the caller may already read, and every position is parsed strictly again after decoding.
//!
//! Layout (then base64url without padding): `version (1) | backend (1) | position (n) | check (8)`, where
//! `check = SHA-256(version | backend | listing | 0x00 | position)[..8]`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, Result};

const VERSION: u8 = 1;
const CHECK_LEN: usize = 8;
/// Longest position a token carries. Every listing position is far shorter (a principal id is at most 64 bytes, a
/// certificate position 12 digits, '#' or '.', and a serial of at most 42 hex digits).
pub const MAX_POSITION_LEN: usize = 512;
/// Longest token accepted: exactly the longest [`encode`] makes.
pub const MAX_TOKEN_LEN: usize = (2 + MAX_POSITION_LEN + CHECK_LEN).div_ceil(3) * 4;

/// Which backend made a token: a token of one store is never accepted by another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Dynamodb,
}

impl Backend {
    fn tag(self) -> u8 {
        match self {
            Self::Sqlite => b's',
            Self::Dynamodb => b'd',
        }
    }
}

/// Wraps `position` (at most [`MAX_POSITION_LEN`] bytes, which every listing position is) for the listing described
/// by `listing` (e.g. `"principals|worker|active"`).
pub fn encode(backend: Backend, listing: &str, position: &str) -> String {
    debug_assert!(position.len() <= MAX_POSITION_LEN, "page position of {} bytes", position.len());
    let mut bytes = vec![VERSION, backend.tag()];
    bytes.extend_from_slice(position.as_bytes());
    let check = check(backend, listing, position.as_bytes());
    bytes.extend_from_slice(&check);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The position inside `token`, if this backend made it for this listing; `InvalidArgument` otherwise.
pub fn decode(backend: Backend, listing: &str, token: &str) -> Result<String> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(invalid("it is too long"));
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid("it is not base64url"))?;
    if bytes.len() < 2 + CHECK_LEN {
        return Err(invalid("it is truncated"));
    }
    if bytes[0] != VERSION {
        return Err(invalid("it has an unknown version"));
    }
    if bytes[1] != backend.tag() {
        return Err(invalid("it was made by another kind of store"));
    }
    let (position, given) = bytes[2..].split_at(bytes.len() - 2 - CHECK_LEN);
    if given != check(backend, listing, position) {
        return Err(invalid("it was altered or belongs to another listing"));
    }
    String::from_utf8(position.to_vec()).map_err(|_| invalid("it is malformed"))
}

fn check(backend: Backend, listing: &str, position: &[u8]) -> [u8; CHECK_LEN] {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(&[VERSION, backend.tag()]);
    context.update(listing.as_bytes());
    context.update(&[0]);
    context.update(position);
    let digest = context.finish();
    let mut out = [0u8; CHECK_LEN];
    out.copy_from_slice(&digest.as_ref()[..CHECK_LEN]);
    out
}

/// The error for any token this backend cannot use.
pub fn invalid(why: &str) -> Error {
    Error::InvalidArgument(format!(
        "invalid page_token ({why}): pass the next_page_token of the previous response to the same listing"
    ))
}

/// What a page token of an audit listing is bound to: its filter.
pub fn audit_listing(filter: &crate::audit::AuditFilter) -> String {
    format!(
        "audit|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
        filter.since_ms, filter.until_ms, filter.actor, filter.target, filter.kind, filter.newest_first
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let token = encode(Backend::Sqlite, "principals||", "w17");
        assert_eq!(decode(Backend::Sqlite, "principals||", &token).unwrap(), "w17");
    }

    #[test]
    fn the_longest_position_round_trips_and_nothing_longer_is_accepted() {
        let longest = "x".repeat(MAX_POSITION_LEN);
        let token = encode(Backend::Dynamodb, "l", &longest);
        assert!(token.len() <= MAX_TOKEN_LEN);
        assert_eq!(decode(Backend::Dynamodb, "l", &token).unwrap(), longest);
        assert!(decode(Backend::Dynamodb, "l", &format!("{token}AAAA")).is_err());
    }

    #[test]
    fn foreign_altered_and_truncated_tokens_are_refused() {
        let token = encode(Backend::Sqlite, "principals||", "w17");
        assert!(decode(Backend::Dynamodb, "principals||", &token).is_err(), "other backend");
        assert!(decode(Backend::Sqlite, "principals|worker|", &token).is_err(), "other listing");
        assert!(decode(Backend::Sqlite, "principals||", &token[..token.len() - 2]).is_err(), "truncated");
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[3] ^= 1;
        assert!(decode(Backend::Sqlite, "principals||", &URL_SAFE_NO_PAD.encode(bytes)).is_err(), "altered");
        for junk in ["", "!!", "AAAA", &"A".repeat(MAX_TOKEN_LEN + 1)] {
            let err = decode(Backend::Sqlite, "principals||", junk).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{junk}: {err}");
        }
    }
}
