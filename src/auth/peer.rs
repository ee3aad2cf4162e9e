//! Peer certificate -> the identity it claims. Pure parsing; nothing here consults the store.

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{Error, Refusal};
use crate::model::{PrincipalId, PrincipalType, Serial};
use crate::pki::identity;
use crate::pki::oid::IdentityOids;

/// What a verified leaf certificate says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub kind: PrincipalType,
    pub id: PrincipalId,
    pub serial: Serial,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl PeerIdentity {
    /// Reads the identity of a DER leaf certificate that rustls has already verified against the CA.
    pub fn from_der(oids: &IdentityOids, der: &[u8]) -> Result<Self, Error> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| Error::Refused(Refusal::Unparseable))?;
        let (kind, id) = identity::read(oids, &cert).map_err(|e| Error::Refused(Refusal::Identity(e.to_string())))?;
        let validity = cert.validity();
        Ok(Self {
            kind,
            id,
            serial: Serial::from_bytes(cert.raw_serial()),
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
        })
    }

    /// `Ok` if `now` lies within the certificate's validity. Connections outlive certificates, so this is checked on
    /// every request, not only at the handshake.
    pub fn check_validity(&self, now: OffsetDateTime) -> Result<(), Error> {
        check_validity(self.not_before, self.not_after, now)
    }
}

/// `Ok` if `now` lies within `not_before..=not_after`; otherwise says which way it is off.
pub fn check_validity(not_before: OffsetDateTime, not_after: OffsetDateTime, now: OffsetDateTime) -> Result<(), Error> {
    if now < not_before {
        return Err(Error::Refused(Refusal::NotYetValid));
    }
    if now > not_after {
        return Err(Error::Refused(Refusal::Expired));
    }
    Ok(())
}
