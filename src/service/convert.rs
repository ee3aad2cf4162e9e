//! Conversions between the wire types (`crate::proto`) and the domain model. Parsing of wire values lives here, so
//! handlers only see valid domain values.

use std::time::Duration;

use time::OffsetDateTime;

use crate::error::Error;
use crate::model::{
    self, CertificateRecord, CertificateStatus, IntermediateRecord, Principal, PrincipalStatus, PrincipalType,
    RevocationReason,
};
use crate::proto;

pub fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.unix_timestamp(), nanos: 0 }
}

pub fn principal_type_to_wire(kind: PrincipalType) -> proto::PrincipalType {
    match kind {
        PrincipalType::Admin => proto::PrincipalType::Admin,
        PrincipalType::Worker => proto::PrincipalType::Worker,
        PrincipalType::User => proto::PrincipalType::User,
        PrincipalType::Service => proto::PrincipalType::Service,
        PrincipalType::Node => proto::PrincipalType::Node,
    }
}

/// A required principal type.
pub fn principal_type(value: i32) -> Result<PrincipalType, Error> {
    optional_principal_type(value)?.ok_or_else(|| {
        Error::InvalidArgument("principal type is required: admin, worker, user, service or node".into())
    })
}

/// A type filter: UNSPECIFIED means any.
pub fn optional_principal_type(value: i32) -> Result<Option<PrincipalType>, Error> {
    match proto::PrincipalType::try_from(value) {
        Ok(proto::PrincipalType::Unspecified) => Ok(None),
        Ok(proto::PrincipalType::Admin) => Ok(Some(PrincipalType::Admin)),
        Ok(proto::PrincipalType::Worker) => Ok(Some(PrincipalType::Worker)),
        Ok(proto::PrincipalType::User) => Ok(Some(PrincipalType::User)),
        Ok(proto::PrincipalType::Service) => Ok(Some(PrincipalType::Service)),
        Ok(proto::PrincipalType::Node) => Ok(Some(PrincipalType::Node)),
        Err(_) => Err(Error::InvalidArgument(format!("unknown principal type value {value}"))),
    }
}

pub fn principal_status_to_wire(status: PrincipalStatus) -> proto::PrincipalStatus {
    match status {
        PrincipalStatus::Active => proto::PrincipalStatus::Active,
        PrincipalStatus::Suspended => proto::PrincipalStatus::Suspended,
        PrincipalStatus::Deleted => proto::PrincipalStatus::Deleted,
    }
}

/// A status filter: UNSPECIFIED means any.
pub fn optional_principal_status(value: i32) -> Result<Option<PrincipalStatus>, Error> {
    match proto::PrincipalStatus::try_from(value) {
        Ok(proto::PrincipalStatus::Unspecified) => Ok(None),
        Ok(proto::PrincipalStatus::Active) => Ok(Some(PrincipalStatus::Active)),
        Ok(proto::PrincipalStatus::Suspended) => Ok(Some(PrincipalStatus::Suspended)),
        Ok(proto::PrincipalStatus::Deleted) => Ok(Some(PrincipalStatus::Deleted)),
        Err(_) => Err(Error::InvalidArgument(format!("unknown principal status value {value}"))),
    }
}

/// RFC 5280 codes are the wire enum's values.
pub fn revocation_reason(value: i32) -> Result<RevocationReason, Error> {
    u8::try_from(value).ok().and_then(RevocationReason::from_code).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "unsupported revocation reason {value}: certificateHold and removeFromCRL are not offered"
        ))
    })
}

pub fn principal_id(value: &str) -> Result<model::PrincipalId, Error> {
    value.parse()
}

pub fn serial(value: &str) -> Result<model::Serial, Error> {
    value.parse()
}

/// `0` means "the maximum for the type".
pub fn validity(seconds: u64) -> Option<Duration> {
    (seconds != 0).then(|| Duration::from_secs(seconds))
}

pub fn principal_to_wire(p: Principal) -> proto::Principal {
    proto::Principal {
        id: p.id.as_str().to_owned(),
        r#type: principal_type_to_wire(p.kind).into(),
        status: principal_status_to_wire(p.status).into(),
        description: p.description,
        email: p.email,
        status_reason: p.status_reason.unwrap_or_default(),
        create_time: Some(timestamp(p.created_at)),
        update_time: Some(timestamp(p.updated_at)),
    }
}

pub fn certificate_to_wire(c: CertificateRecord) -> proto::Certificate {
    certificate_view_to_wire(crate::registry::CertificateView { record: c, void: None })
}

pub fn certificate_view_to_wire(view: crate::registry::CertificateView) -> proto::Certificate {
    let (c, void) = (view.record, view.void);
    let status = match c.status_at(model::now()) {
        CertificateStatus::Valid if void.is_some() => proto::CertificateStatus::Void,
        CertificateStatus::Valid => proto::CertificateStatus::Valid,
        CertificateStatus::Revoked => proto::CertificateStatus::Revoked,
        CertificateStatus::Expired => proto::CertificateStatus::Expired,
        CertificateStatus::Void => proto::CertificateStatus::Void,
    };
    let void_reason =
        if status == proto::CertificateStatus::Void { void.unwrap_or_default().to_owned() } else { String::new() };
    proto::Certificate {
        serial: c.serial.as_str().to_owned(),
        principal_id: c.principal_id.as_str().to_owned(),
        principal_type: principal_type_to_wire(c.principal_type).into(),
        status: status.into(),
        not_before: Some(timestamp(c.not_before)),
        not_after: Some(timestamp(c.not_after)),
        sha256_fingerprint: c.sha256_fingerprint,
        certificate_pem: crate::pki::pem::pem_of(&c.der),
        revoke_time: c.revocation.map(|r| timestamp(r.at)),
        revocation_reason: c.revocation.map_or(0, |r| i32::from(r.reason.code())),
        issuer_sha256_fingerprint: c.issuer,
        void_reason,
    }
}

pub fn intermediate_to_wire(i: IntermediateRecord) -> proto::Intermediate {
    proto::Intermediate {
        certificate_pem: crate::pki::pem::pem_of(&i.der),
        sha256_fingerprint: i.fingerprint,
        replica: i.replica,
        not_before: Some(timestamp(i.not_before)),
        not_after: Some(timestamp(i.not_after)),
        revoke_time: i.revoked_at.map(timestamp),
    }
}

pub fn enrollment_token_to_wire(t: crate::registry::TokenView) -> proto::EnrollmentTokenInfo {
    use crate::registry::TokenStatus;
    let status = match t.status {
        TokenStatus::Pending => proto::EnrollmentTokenStatus::Pending,
        TokenStatus::Used => proto::EnrollmentTokenStatus::Used,
        TokenStatus::Expired => proto::EnrollmentTokenStatus::Expired,
        TokenStatus::Revoked => proto::EnrollmentTokenStatus::Revoked,
        TokenStatus::Withdrawn => proto::EnrollmentTokenStatus::Withdrawn,
    };
    proto::EnrollmentTokenInfo {
        id: t.id,
        principal_id: t.state.principal.as_str().to_owned(),
        created_at: Some(timestamp(t.state.created_at)),
        expires_at: Some(timestamp(t.state.expires_at)),
        status: status.into(),
        serial: t.state.serial.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        max_validity_seconds: t.state.max_validity.unwrap_or(0),
    }
}
