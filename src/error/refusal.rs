//! Why a caller was refused authentication: one value per reason, with the message the caller reads
//! ([`Display`](fmt::Display)) and the bounded label ([`Refusal::label`]) that the authentication metric, the audit
//! log's refused-request counts and the logs use. A reworded message cannot move a metric.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The connection carries no client certificate.
    NoCertificate,
    /// The certificate is not X.509 that can be read.
    Unparseable,
    /// The identity extensions are missing or malformed; what is wrong with them.
    Identity(String),
    NotYetValid,
    Expired,
    /// (The principal ids here and below are as the certificate names them.)
    UnknownPrincipal(String),
    Suspended(String),
    Deleted(String),
    /// The certificate names another type than the principal has.
    WrongType {
        id: String,
        presented: String,
        actual: String,
    },
    /// No such certificate was issued by this deployment.
    Unregistered,
    Revoked,
    /// Void with the other certificates of its principal (suspension, deletion, key compromise).
    Withdrawn,
    /// Signed by an issuing intermediate that has been revoked.
    IssuerRevoked,
    /// The presented certificate differs from the one registered under its serial.
    RegistrationMismatch,
    /// The service takes requests only with a bearer token.
    TokenRequired,
    /// The bearer token was refused; why.
    Token(String),
}

impl Refusal {
    /// Every label, for metrics that are exported before anything is refused.
    pub const LABELS: [&'static str; 14] = [
        "no_certificate",
        "unparseable",
        "bad_identity",
        "not_yet_valid",
        "expired",
        "unknown_principal",
        "suspended",
        "deleted",
        "wrong_type",
        "unregistered",
        "revoked",
        "withdrawn",
        "mismatch",
        "token_refused",
    ];

    /// A short, bounded name for the reason (a metric label value).
    pub fn label(&self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::Unparseable => "unparseable",
            Self::Identity(_) => "bad_identity",
            Self::NotYetValid => "not_yet_valid",
            Self::Expired => "expired",
            Self::UnknownPrincipal(_) => "unknown_principal",
            Self::Suspended(_) => "suspended",
            Self::Deleted(_) => "deleted",
            Self::WrongType { .. } => "wrong_type",
            Self::Unregistered => "unregistered",
            Self::Revoked | Self::IssuerRevoked => "revoked",
            Self::Withdrawn => "withdrawn",
            Self::RegistrationMismatch => "mismatch",
            Self::TokenRequired | Self::Token(_) => "token_refused",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCertificate => f.write_str("no client certificate: connect with mTLS"),
            Self::Unparseable => f.write_str("client certificate cannot be parsed"),
            Self::Identity(why) => f.write_str(why),
            Self::NotYetValid => f.write_str("client certificate is not valid yet: check the clock"),
            Self::Expired => f.write_str("client certificate has expired: renew it or get a new one"),
            Self::UnknownPrincipal(id) => write!(f, "principal {id:?} does not exist"),
            Self::Suspended(id) => write!(f, "principal {id:?} is suspended"),
            Self::Deleted(id) => write!(f, "principal {id:?} has been deleted"),
            Self::WrongType { id, presented, actual } => {
                write!(f, "client certificate says {presented} but principal {id:?} is a {actual}")
            }
            Self::Unregistered => f.write_str("client certificate is not registered with this server"),
            Self::Revoked => f.write_str("client certificate has been revoked"),
            Self::Withdrawn => f.write_str(
                "client certificate was withdrawn with the other certificates of its principal: get a new one",
            ),
            Self::IssuerRevoked => f.write_str(
                "client certificate was signed by an issuing intermediate that has been revoked: get a new one",
            ),
            Self::RegistrationMismatch => f.write_str("client certificate does not match its registration"),
            Self::TokenRequired => f.write_str("this service needs a bearer token bound to your certificate"),
            Self::Token(why) => write!(f, "bearer token refused: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_is_listed_once() {
        let id = String::from("w1");
        let all = [
            Refusal::NoCertificate,
            Refusal::Unparseable,
            Refusal::Identity("x".into()),
            Refusal::NotYetValid,
            Refusal::Expired,
            Refusal::UnknownPrincipal(id.clone()),
            Refusal::Suspended(id.clone()),
            Refusal::Deleted(id.clone()),
            Refusal::WrongType { id, presented: "user".into(), actual: "worker".into() },
            Refusal::Unregistered,
            Refusal::Revoked,
            Refusal::Withdrawn,
            Refusal::IssuerRevoked,
            Refusal::RegistrationMismatch,
            Refusal::TokenRequired,
            Refusal::Token("x".into()),
        ];
        let labels: std::collections::BTreeSet<_> = all.iter().map(Refusal::label).collect();
        let listed: std::collections::BTreeSet<_> = Refusal::LABELS.into_iter().collect();
        assert_eq!(labels, listed);
        assert_eq!(listed.len(), Refusal::LABELS.len());
    }
}
