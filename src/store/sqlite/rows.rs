//! Rows: SQL statements on principals and certificates, and rows <-> domain values. Called inside writer jobs and
//! reader closures.

use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::model::{
    CertificateRecord, Principal, PrincipalId, PrincipalStatus, PrincipalType, Renewal, Revocation, RevocationReason,
    Serial,
};
use crate::store::page_token;
use crate::store::{Page, PrincipalFilter, errors};

pub(super) const PRINCIPAL_COLUMNS: &str =
    "id, type, status, description, email, status_reason, created_at, updated_at, generation";
pub(super) const CERTIFICATE_COLUMNS: &str = "serial, principal_id, principal_type, not_before, not_after, sha256_fingerprint, der, revoked_at, revocation_reason, generation, renewed_by, renewal_key, issuer";

pub(super) fn insert_principal(conn: &Connection, p: &Principal) -> Result<()> {
    let inserted = conn
        .execute(
            "INSERT INTO principals (id, type, status, description, email, status_reason, created_at, updated_at,
                                     generation)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING",
            params![
                p.id.as_str(),
                p.kind.as_str(),
                p.status.as_str(),
                p.description,
                p.email,
                p.status_reason,
                p.created_at.unix_timestamp(),
                p.updated_at.unix_timestamp(),
                generation(p.generation)?
            ],
        )
        .map_err(sql_err)?;
    if inserted == 0 {
        return Err(Error::AlreadyExists(format!("principal {:?}", p.id.as_str())));
    }
    Ok(())
}

pub(super) fn insert_certificate_row(conn: &Connection, c: &CertificateRecord) -> Result<()> {
    let sql = format!(
        "INSERT INTO certificates ({CERTIFICATE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (serial) DO NOTHING"
    );
    let cert_generation = generation(c.generation)?;
    let inserted = conn
        .prepare_cached(&sql)
        .and_then(|mut stmt| {
            stmt.execute(params![
                c.serial.as_str(),
                c.principal_id.as_str(),
                c.principal_type.as_str(),
                c.not_before.unix_timestamp(),
                c.not_after.unix_timestamp(),
                c.sha256_fingerprint,
                c.der,
                c.revocation.map(|r| r.at.unix_timestamp()),
                c.revocation.map(|r| r.reason.code()),
                cert_generation,
                c.renewal.as_ref().map(|r| r.serial.as_str()),
                c.renewal.as_ref().map(|r| r.key_sha256.as_str()),
                c.issuer,
            ])
        })
        .map_err(sql_err)?;
    if inserted == 0 {
        return Err(Error::AlreadyExists(format!("certificate {}", c.serial)));
    }
    Ok(())
}

/// Raises the principal's generation (voiding its certificates), then revokes every unrevoked one.
pub(super) fn revoke_all(conn: &Connection, principal: &PrincipalId, reason: RevocationReason, at: i64) -> Result<u32> {
    raise_generation(conn, principal)?;
    let revoked = conn
        .execute(
            "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3
             WHERE principal_id = ?1 AND revoked_at IS NULL",
            params![principal.as_str(), at, reason.code()],
        )
        .map_err(sql_err)?;
    bump_epoch(conn)?;
    Ok(u32::try_from(revoked).unwrap_or(u32::MAX))
}

/// Marks revoked, for `reason`, every unrevoked certificate of `principal` below its current generation (void by its
/// floor), so CRLs and OCSP say what authentication already refuses. Returns how many.
pub(super) fn revoke_below_floor(
    conn: &Connection,
    principal: &PrincipalId,
    reason: RevocationReason,
    at: i64,
) -> Result<u32> {
    let revoked = conn
        .execute(
            "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3
             WHERE principal_id = ?1 AND revoked_at IS NULL
               AND generation < (SELECT generation FROM principals WHERE id = ?1)",
            params![principal.as_str(), at, reason.code()],
        )
        .map_err(sql_err)?;
    Ok(u32::try_from(revoked).unwrap_or(u32::MAX))
}

pub(super) fn raise_generation(conn: &Connection, principal: &PrincipalId) -> Result<()> {
    conn.execute("UPDATE principals SET generation = generation + 1 WHERE id = ?1", [principal.as_str()])
        .map_err(sql_err)?;
    Ok(())
}

pub(super) fn generation(value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::InvalidArgument(format!("generation {value} is out of range")))
}

pub(super) fn bump_epoch(conn: &Connection) -> Result<()> {
    conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'revocation_epoch'", []).map_err(sql_err)?;
    Ok(())
}

pub(super) fn select_principal(conn: &Connection, id: &PrincipalId) -> Result<Option<Principal>> {
    let sql = format!("SELECT {PRINCIPAL_COLUMNS} FROM principals WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    stmt.query_row([id.as_str()], principal_from_row).optional().map_err(sql_err)?.transpose()
}

pub(super) fn select_certificate(conn: &Connection, serial: &Serial) -> Result<Option<CertificateRecord>> {
    let sql = format!("SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE serial = ?1");
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    stmt.query_row([serial.as_str()], certificate_from_row).optional().map_err(sql_err)?.transpose()
}

/// Row -> principal. The outer `rusqlite::Result` is a read failure, the inner one corrupt data.
pub(super) fn principal_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Principal>> {
    let (id, kind, status): (String, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
    let (description, email, status_reason): (String, Option<String>, Option<String>) =
        (row.get(3)?, row.get(4)?, row.get(5)?);
    let (created_at, updated_at, generation): (i64, i64, i64) = (row.get(6)?, row.get(7)?, row.get(8)?);
    Ok((|| {
        Ok(Principal {
            id: id.parse().map_err(corrupt)?,
            kind: kind.parse().map_err(corrupt)?,
            status: status.parse().map_err(corrupt)?,
            description,
            email,
            status_reason,
            created_at: timestamp(created_at)?,
            updated_at: timestamp(updated_at)?,
            generation: u64::try_from(generation).map_err(corrupt)?,
        })
    })())
}

pub(super) fn certificate_from_row(row: &Row<'_>) -> rusqlite::Result<Result<CertificateRecord>> {
    let (serial, principal_id, principal_type): (String, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
    let (not_before, not_after): (i64, i64) = (row.get(3)?, row.get(4)?);
    let (sha256_fingerprint, der): (String, Vec<u8>) = (row.get(5)?, row.get(6)?);
    let (revoked_at, reason): (Option<i64>, Option<u8>) = (row.get(7)?, row.get(8)?);
    let (generation, renewed_by, renewal_key): (i64, Option<String>, Option<String>) =
        (row.get(9)?, row.get(10)?, row.get(11)?);
    let issuer: String = row.get(12)?;
    Ok((|| {
        let revocation = match (revoked_at, reason) {
            (Some(at), Some(code)) => Some(Revocation {
                at: timestamp(at)?,
                reason: RevocationReason::from_code(code)
                    .ok_or_else(|| corrupt(format!("revocation reason {code}")))?,
            }),
            _ => None,
        };
        Ok(CertificateRecord {
            serial: serial.parse().map_err(corrupt)?,
            principal_id: principal_id.parse().map_err(corrupt)?,
            principal_type: principal_type.parse().map_err(corrupt)?,
            not_before: timestamp(not_before)?,
            not_after: timestamp(not_after)?,
            sha256_fingerprint,
            der,
            revocation,
            generation: u64::try_from(generation).map_err(corrupt)?,
            renewal: match (renewed_by, renewal_key) {
                (Some(serial), Some(key_sha256)) => {
                    Some(Renewal { serial: serial.parse().map_err(corrupt)?, key_sha256 })
                }
                _ => None,
            },
            issuer,
        })
    })())
}

pub(super) fn timestamp(secs: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(corrupt)
}

pub(super) fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::internal("corrupt row in sqlite store", e)
}

pub(super) fn sql_err(e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode::{CannotOpen, DatabaseBusy, DatabaseLocked, DiskFull, SystemIoFailure};
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure | CannotOpen) => {
            Error::Unavailable(format!("sqlite: {e}"))
        }
        _ => Error::internal("sqlite", e),
    }
}

/// The unexpired revoked certificates of one CRL partition (the last hex digit of the serial), by serial.
pub(super) fn revoked_in_partition(
    conn: &Connection,
    partition: u8,
    at: OffsetDateTime,
) -> Result<Vec<crate::pki::crl::RevokedEntry>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT serial, revoked_at, revocation_reason, not_after, issuer FROM certificates
             WHERE revoked_at IS NOT NULL AND substr(serial, -1) = ?1 AND not_after > ?2 ORDER BY serial",
        )
        .map_err(sql_err)?;
    let name = crate::pki::crl::partition_name(partition);
    let rows = stmt
        .query_map(params![name, at.unix_timestamp()], |row| {
            let (serial, revoked_at, reason, not_after, issuer): (String, i64, i64, i64, String) =
                (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?);
            Ok((serial, revoked_at, reason, not_after, issuer))
        })
        .map_err(sql_err)?;
    rows.map(|row| {
        let (serial, revoked_at, reason, not_after, issuer) = row.map_err(sql_err)?;
        Ok(crate::pki::crl::RevokedEntry {
            serial: serial.parse().map_err(corrupt)?,
            revoked_at: timestamp(revoked_at)?,
            reason: u8::try_from(reason)
                .ok()
                .and_then(RevocationReason::from_code)
                .ok_or_else(|| corrupt(format!("revocation reason {reason}")))?,
            not_after: timestamp(not_after)?,
            issuer,
        })
    })
    .collect()
}

/// The certificate's principal, if it may receive the certificate now (see `Principal::may_receive`).
pub(super) fn issuable_principal(conn: &Connection, c: &CertificateRecord) -> Result<Principal> {
    let principal =
        select_principal(conn, &c.principal_id)?.ok_or_else(|| errors::principal_not_found(&c.principal_id))?;
    principal.may_receive(c)?;
    Ok(principal)
}

pub(super) fn principal_listing(filter: &PrincipalFilter) -> String {
    format!(
        "principals|{}|{}",
        filter.kind.map_or("", PrincipalType::as_str),
        filter.status.map_or("", PrincipalStatus::as_str)
    )
}

pub(super) fn paginate<T>(mut items: Vec<T>, size: u32, cursor: impl Fn(&T) -> String) -> Page<T> {
    let size = size as usize;
    let next_token = if items.len() > size {
        items.truncate(size);
        items.last().map(cursor)
    } else {
        None
    };
    Page { items, next_token }
}

pub(super) fn parse_certificate_cursor(token: &str) -> Result<(i64, String)> {
    let bad = || page_token::invalid("it is malformed");
    let (nb, serial) = token.split_once('.').ok_or_else(bad)?;
    let serial: Serial = serial.parse().map_err(|_| bad())?;
    Ok((nb.parse().map_err(|_| bad())?, serial.as_str().to_owned()))
}
