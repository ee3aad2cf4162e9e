//! Signed checkpoints of the audit chains' heads, kept outside the store: what the store said at a time, signed by
//! a key the store does not hold (the CA root, through its signer), so that whoever can write the store cannot
//! rewrite or wipe what was checkpointed without `audit verify --checkpoints` noticing. Verification needs only the
//! CA certificate.
//!
//! The text is a signed note in the C2SP layout (text lines, a blank line, then `— NAME BASE64` signature lines, the
//! base64 holding a 4-byte key id and the signature):
//!
//! ```text
//! principald audit checkpoint v1
//! ca 3f2a...                      (SHA-256 of the CA certificate)
//! replica replica-a
//! time 1795950000                 (Unix seconds)
//! chain replica-a/0 42 9c1e...    (chain, position, hash of the event there)
//!
//! — principald-ca AbCd...
//! ```
//!
//! The signature is the root's ECDSA P-256 with SHA-256 (DER) over the text above the blank line, and the key id is
//! the first 4 bytes of SHA-256(`principald-ca` "\n" SubjectPublicKeyInfo DER). Note verifiers that know only Ed25519
//! will not verify it; this module does.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use std::collections::BTreeMap;

use super::ChainHead;
use super::chain::Broken;
use crate::error::{Error, Result};

/// The first line of every checkpoint.
pub const HEADER: &str = "principald audit checkpoint v1";
/// The signature line's key name.
pub const KEY_NAME: &str = "principald-ca";

/// What a checkpoint says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Hex SHA-256 of the CA certificate whose root signed it.
    pub ca: String,
    /// The replica that wrote it (the chains it checkpoints are its own).
    pub replica: String,
    /// Unix seconds.
    pub time: i64,
    pub heads: Vec<ChainHead>,
}

impl Checkpoint {
    /// The signed text (without the signature).
    pub fn text(&self) -> String {
        let mut text = format!("{HEADER}\nca {}\nreplica {}\ntime {}\n", self.ca, self.replica, self.time);
        for head in &self.heads {
            text.push_str(&format!("chain {} {} {}\n", head.chain, head.seq, head.hash));
        }
        text
    }

    /// The signed note: the text signed by `sign` (the root key) whose SubjectPublicKeyInfo is `spki`.
    pub fn sign(&self, spki: &[u8], sign: impl FnOnce(&[u8]) -> Result<Vec<u8>>) -> Result<String> {
        let text = self.text();
        let signature = sign(text.as_bytes())?;
        let mut blob = key_id(spki).to_vec();
        blob.extend_from_slice(&signature);
        Ok(format!("{text}\n\u{2014} {KEY_NAME} {}\n", STANDARD.encode(blob)))
    }

    /// Reads a signed note and checks its signature against the CA certificate `ca_der`; the checkpoint if it holds.
    pub fn open(note: &str, ca_der: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::InvalidArgument(format!("not a valid audit checkpoint: {why}"));
        let (text, signatures) = note.split_once("\n\n").ok_or_else(|| bad("no signature"))?;
        let text = format!("{text}\n");
        let (_, cert) = x509_parser::parse_x509_certificate(ca_der).map_err(|_| bad("unreadable CA certificate"))?;
        let spki = cert.tbs_certificate.subject_pki.raw;
        let point = cert.tbs_certificate.subject_pki.subject_public_key.data.as_ref();
        let key = aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1, point);
        let signed = signatures.lines().any(|line| {
            let Some(rest) = line.strip_prefix(&format!("\u{2014} {KEY_NAME} ")) else { return false };
            let Ok(blob) = STANDARD.decode(rest.trim()) else { return false };
            blob.len() > 4 && blob[..4] == key_id(spki) && key.verify(text.as_bytes(), &blob[4..]).is_ok()
        });
        if !signed {
            return Err(bad("no signature by this CA's root"));
        }
        let fingerprint = crate::model::sha256_hex(ca_der);
        let checkpoint = Self::parse(&text).ok_or_else(|| bad("malformed text"))?;
        if checkpoint.ca != fingerprint {
            return Err(bad("made for another CA"));
        }
        Ok(checkpoint)
    }

    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let mut field = |name: &str| lines.next()?.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned);
        let (ca, replica, time) = (field("ca")?, field("replica")?, field("time")?.parse().ok()?);
        let mut heads = Vec::new();
        for line in lines {
            let mut parts = line.strip_prefix("chain ")?.split(' ');
            let (chain, seq, hash) = (parts.next()?, parts.next()?.parse().ok()?, parts.next()?);
            heads.push(ChainHead { chain: chain.to_owned(), seq, hash: hash.to_owned() });
        }
        Some(Self { ca, replica, time, heads })
    }
}

/// What a listing of every event in the store found, as much as checking checkpoints needs: each chain's last
/// position, and the hashes at the positions some checkpoint names.
#[derive(Debug, Default)]
pub struct Found {
    last: BTreeMap<String, u64>,
    wanted: BTreeMap<(String, u64), Option<String>>,
}

impl Found {
    /// Ready to collect what `checkpoints` name.
    pub fn wanting(checkpoints: &[Checkpoint]) -> Self {
        let wanted = checkpoints.iter().flat_map(|c| &c.heads).map(|h| ((h.chain.clone(), h.seq), None)).collect();
        Self { last: BTreeMap::new(), wanted }
    }

    /// One event of the listing.
    pub fn add(&mut self, chain: &str, seq: u64, hash: &str) {
        let last = self.last.entry(chain.to_owned()).or_default();
        *last = (*last).max(seq);
        if let Some(slot) = self.wanted.get_mut(&(chain.to_owned(), seq)) {
            *slot = Some(hash.to_owned());
        }
    }
}

/// Checks that every chain each checkpoint names still exists, reaches the checkpointed position, and holds there the
/// checkpointed hash (so nothing up to it was rewritten, even with recomputed hashes and head). One finding per
/// chain, from the oldest checkpoint that fails.
pub fn check(checkpoints: &[Checkpoint], found: &Found) -> Vec<Broken> {
    let mut sorted: Vec<&Checkpoint> = checkpoints.iter().collect();
    sorted.sort_by_key(|c| c.time);
    let mut broken: BTreeMap<String, Broken> = BTreeMap::new();
    for checkpoint in sorted {
        let when = time::OffsetDateTime::from_unix_timestamp(checkpoint.time)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        let by = format!("the checkpoint of {} at {when}", checkpoint.replica);
        for head in &checkpoint.heads {
            if broken.contains_key(&head.chain) {
                continue;
            }
            let problem = match (found.last.get(&head.chain), found.wanted.get(&(head.chain.clone(), head.seq))) {
                (None, _) => format!("the chain is gone ({by} recorded {} events)", head.seq),
                (Some(&last), _) if last < head.seq => {
                    format!("only {last} events remain; {by} recorded {}: events were deleted", head.seq)
                }
                (_, Some(Some(hash))) if *hash == head.hash => continue,
                (_, Some(Some(_))) => format!("rewritten: the event here does not hash to what {by} recorded"),
                _ => format!("the event here is missing ({by} recorded it)"),
            };
            broken.insert(head.chain.clone(), Broken { chain: head.chain.clone(), seq: head.seq, problem });
        }
    }
    broken.into_values().collect()
}

fn key_id(spki: &[u8]) -> [u8; 4] {
    let mut input = format!("{KEY_NAME}\n").into_bytes();
    input.extend_from_slice(spki);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
    let mut id = [0u8; 4];
    id.copy_from_slice(&digest.as_ref()[..4]);
    id
}

/// Where `principald` writes checkpoint files and `audit verify --checkpoints` reads them: `TIME_MS-REPLICA.note`.
pub fn file_name(checkpoint: &Checkpoint, time_ms: i64) -> String {
    let replica: String =
        checkpoint.replica.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("{time_ms:013}-{replica}.note")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::ca::CertificateAuthority;

    #[test]
    fn a_signed_checkpoint_opens_with_its_ca_only() {
        let ca = CertificateAuthority::generate("checkpoint test", time::Duration::days(1)).unwrap();
        let other = CertificateAuthority::generate("other", time::Duration::days(1)).unwrap();
        let checkpoint = Checkpoint {
            ca: crate::model::sha256_hex(ca.cert_der()),
            replica: "r1".into(),
            time: 1_795_950_000,
            heads: vec![ChainHead { chain: "r1/0".into(), seq: 42, hash: "ab".repeat(32) }],
        };
        let signer = ca.root().signer().clone();
        let note = checkpoint.sign(signer.spki_der(), |m| signer.sign(m)).unwrap();
        assert!(note.contains("\n\n\u{2014} principald-ca "), "{note}");
        assert_eq!(Checkpoint::open(&note, ca.cert_der()).unwrap(), checkpoint);
        assert!(Checkpoint::open(&note, other.cert_der()).is_err(), "another CA's certificate");
        let forged = note.replace("r1/0 42", "r1/0 41");
        assert!(Checkpoint::open(&forged, ca.cert_der()).is_err(), "an edited text");
        assert!(Checkpoint::open("principald audit checkpoint v1\n", ca.cert_der()).is_err());
    }
}
