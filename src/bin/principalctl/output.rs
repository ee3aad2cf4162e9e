//! Rendering: aligned tables for people, JSON for scripts.

use principald::proto::{self as pb};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

pub fn time(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

pub fn principal_type(value: i32) -> &'static str {
    match pb::PrincipalType::try_from(value) {
        Ok(pb::PrincipalType::Admin) => "admin",
        Ok(pb::PrincipalType::Worker) => "worker",
        Ok(pb::PrincipalType::User) => "user",
        Ok(pb::PrincipalType::Service) => "service",
        Ok(pb::PrincipalType::Node) => "node",
        _ => "unknown",
    }
}

fn principal_status(value: i32) -> &'static str {
    match pb::PrincipalStatus::try_from(value) {
        Ok(pb::PrincipalStatus::Active) => "active",
        Ok(pb::PrincipalStatus::Suspended) => "suspended",
        Ok(pb::PrincipalStatus::Deleted) => "deleted",
        _ => "unknown",
    }
}

fn certificate_status(value: i32) -> &'static str {
    match pb::CertificateStatus::try_from(value) {
        Ok(pb::CertificateStatus::Valid) => "valid",
        Ok(pb::CertificateStatus::Revoked) => "revoked",
        Ok(pb::CertificateStatus::Expired) => "expired",
        Ok(pb::CertificateStatus::Void) => "void",
        _ => "unknown",
    }
}

/// The status, with the reason for a revoked certificate and for a void one (why principald refuses it).
fn status_with_reason(c: &pb::Certificate) -> String {
    match certificate_status(c.status) {
        "void" => format!("void ({})", c.void_reason),
        "revoked" => format!("revoked ({})", revocation_reason(c.revocation_reason)),
        status => status.to_owned(),
    }
}

fn revocation_reason(value: i32) -> &'static str {
    u8::try_from(value).ok().and_then(principald::model::RevocationReason::from_code).map_or("unknown", |r| r.as_str())
}

pub fn principal_json(p: &pb::Principal) -> Value {
    json!({
        "id": p.id,
        "type": principal_type(p.r#type),
        "status": principal_status(p.status),
        "description": p.description,
        "email": p.email,
        "status_reason": p.status_reason,
        "create_time": time(&p.create_time),
        "update_time": time(&p.update_time),
    })
}

pub fn certificate_json(c: &pb::Certificate) -> Value {
    let revoked = c.revoke_time.is_some();
    json!({
        "serial": c.serial,
        "principal_id": c.principal_id,
        "principal_type": principal_type(c.principal_type),
        "status": certificate_status(c.status),
        "not_before": time(&c.not_before),
        "not_after": time(&c.not_after),
        "sha256_fingerprint": c.sha256_fingerprint,
        "issuer_sha256_fingerprint": c.issuer_sha256_fingerprint,
        "revoke_time": if revoked { Value::from(time(&c.revoke_time)) } else { Value::Null },
        "revocation_reason": if revoked { Value::from(revocation_reason(c.revocation_reason)) } else { Value::Null },
        "void_reason": if c.void_reason.is_empty() { Value::Null } else { Value::from(c.void_reason.as_str()) },
    })
}

pub fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// Prints rows under a header, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

pub fn principals(format: Format, list: &[pb::Principal]) {
    match format {
        Format::Json => print_json(&Value::Array(list.iter().map(principal_json).collect())),
        Format::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|p| {
                    vec![
                        p.id.clone(),
                        principal_type(p.r#type).into(),
                        principal_status(p.status).into(),
                        p.email.clone().unwrap_or_default(),
                        p.description.clone(),
                    ]
                })
                .collect();
            table(&["ID", "TYPE", "STATUS", "EMAIL", "DESCRIPTION"], &rows);
        }
    }
}

pub fn principal(format: Format, p: &pb::Principal) {
    match format {
        Format::Json => print_json(&principal_json(p)),
        Format::Table => {
            let mut rows = vec![
                ("id", p.id.clone()),
                ("type", principal_type(p.r#type).into()),
                ("status", principal_status(p.status).into()),
                ("description", p.description.clone()),
                ("email", p.email.clone().unwrap_or_default()),
                ("created", time(&p.create_time)),
                ("updated", time(&p.update_time)),
            ];
            if !p.status_reason.is_empty() {
                rows.push(("reason", p.status_reason.clone()));
            }
            key_values(&rows);
        }
    }
}

pub fn certificates(format: Format, list: &[pb::Certificate]) {
    match format {
        Format::Json => print_json(&Value::Array(list.iter().map(certificate_json).collect())),
        Format::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    vec![
                        c.serial.clone(),
                        c.principal_id.clone(),
                        status_with_reason(c),
                        time(&c.not_before),
                        time(&c.not_after),
                    ]
                })
                .collect();
            table(&["SERIAL", "PRINCIPAL", "STATUS", "NOT BEFORE", "NOT AFTER"], &rows);
        }
    }
}

pub fn certificate(format: Format, c: &pb::Certificate) {
    match format {
        Format::Json => print_json(&certificate_json(c)),
        Format::Table => {
            let mut rows = vec![
                ("serial", c.serial.clone()),
                ("principal", format!("{} ({})", c.principal_id, principal_type(c.principal_type))),
                ("status", status_with_reason(c)),
                ("not before", time(&c.not_before)),
                ("not after", time(&c.not_after)),
                ("sha256", c.sha256_fingerprint.clone()),
                (
                    "issuer",
                    if c.issuer_sha256_fingerprint.is_empty() {
                        "root".into()
                    } else {
                        c.issuer_sha256_fingerprint.clone()
                    },
                ),
            ];
            if c.revoke_time.is_some() {
                rows.push((
                    "revoked",
                    format!("{} ({})", time(&c.revoke_time), revocation_reason(c.revocation_reason)),
                ));
            }
            key_values(&rows);
        }
    }
}

pub fn whoami(format: Format, me: &pb::WhoAmIResponse) {
    match format {
        Format::Json => print_json(&json!({
            "principal_id": me.principal_id,
            "principal_type": principal_type(me.principal_type),
            "certificate_serial": me.certificate_serial,
            "certificate_not_after": time(&me.certificate_not_after),
            "permissions": me.permissions,
        })),
        Format::Table => key_values(&[
            ("principal", me.principal_id.clone()),
            ("type", principal_type(me.principal_type).into()),
            ("certificate", me.certificate_serial.clone()),
            ("expires", time(&me.certificate_not_after)),
            ("permissions", me.permissions.join(", ")),
        ]),
    }
}

pub fn key_values(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{:<width$}  {v}", format!("{k}:"), width = width + 1);
    }
}

fn enrollment_token_status(value: i32) -> &'static str {
    match pb::EnrollmentTokenStatus::try_from(value) {
        Ok(pb::EnrollmentTokenStatus::Pending) => "pending",
        Ok(pb::EnrollmentTokenStatus::Used) => "used",
        Ok(pb::EnrollmentTokenStatus::Expired) => "expired",
        Ok(pb::EnrollmentTokenStatus::Revoked) => "revoked",
        Ok(pb::EnrollmentTokenStatus::Withdrawn) => "withdrawn",
        _ => "unknown",
    }
}

pub fn enrollment_tokens(format: Format, list: &[pb::EnrollmentTokenInfo]) {
    match format {
        Format::Json => print_json(&Value::Array(
            list.iter()
                .map(|t| {
                    json!({
                        "id": t.id,
                        "principal_id": t.principal_id,
                        "status": enrollment_token_status(t.status),
                        "created_at": time(&t.created_at),
                        "expires_at": time(&t.expires_at),
                        "serial": t.serial,
                        "max_validity_seconds": t.max_validity_seconds,
                    })
                })
                .collect(),
        )),
        Format::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.principal_id.clone(),
                        enrollment_token_status(t.status).into(),
                        time(&t.created_at),
                        time(&t.expires_at),
                        t.serial.clone(),
                    ]
                })
                .collect();
            table(&["ID", "PRINCIPAL", "STATUS", "CREATED", "EXPIRES", "CERTIFICATE"], &rows);
        }
    }
}
