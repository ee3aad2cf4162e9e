//! Enrollment token rows: made, read, listed per principal, revoked, and consumed in the write that records the
//! certificate they pay for.

use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;

use super::rows::{corrupt, select_principal, sql_err, timestamp};
use crate::error::{Error, Result};
use crate::model::enrollment_refused as refused;
use crate::model::{CertificateRecord, PrincipalId};
use crate::model::{ENROLLMENT_REVOKED, ENROLLMENT_WITHDRAWN, EnrollmentToken, EnrollmentTokenState};
use crate::store::errors;

const COLUMNS: &str =
    "hash, principal_id, generation, created_at, expires_at, max_validity, consumed_at, serial, revoked_at";

pub(super) fn insert(conn: &Connection, t: &EnrollmentToken) -> Result<()> {
    select_principal(conn, &t.principal)?.ok_or_else(|| errors::principal_not_found(&t.principal))?;
    conn.execute(
        "INSERT INTO enrollment_tokens (hash, principal_id, created_at, expires_at, generation, max_validity) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            t.hash,
            t.principal.as_str(),
            t.created_at.unix_timestamp(),
            t.expires_at.unix_timestamp(),
            t.generation as i64,
            t.max_validity.map(|v| v as i64),
        ],
    )
    .map_err(sql_err)?;
    Ok(())
}

/// Checks and consumes the token for `cert`'s principal (the caller then records the certificate in the same write).
pub(super) fn consume(conn: &Connection, hash: &str, cert: &CertificateRecord, at: OffsetDateTime) -> Result<()> {
    let Some(token) = select(conn, hash)? else { return Err(refused("it is unknown")) };
    token.check(&cert.principal_id, at)?;
    if token.generation != cert.generation {
        return Err(refused(ENROLLMENT_WITHDRAWN));
    }
    conn.execute(
        "UPDATE enrollment_tokens SET consumed_at = ?2, serial = ?3 WHERE hash = ?1",
        params![hash, at.unix_timestamp(), cert.serial.as_str()],
    )
    .map_err(sql_err)?;
    Ok(())
}

pub(super) fn revoke(conn: &Connection, hash: &str, at: OffsetDateTime) -> Result<()> {
    let Some(token) = select(conn, hash)? else { return Err(errors::enrollment_token_not_found()) };
    if token.consumed {
        return Err(Error::FailedPrecondition("enrollment token was used already".into()));
    }
    if token.revoked {
        return Err(Error::FailedPrecondition(format!("enrollment token refused: {ENROLLMENT_REVOKED}")));
    }
    conn.execute("UPDATE enrollment_tokens SET revoked_at = ?2 WHERE hash = ?1", params![hash, at.unix_timestamp()])
        .map_err(sql_err)?;
    Ok(())
}

pub(super) fn select(conn: &Connection, hash: &str) -> Result<Option<EnrollmentTokenState>> {
    conn.query_row(&format!("SELECT {COLUMNS} FROM enrollment_tokens WHERE hash = ?1"), [hash], |r| Ok(from_row(r)))
        .optional()
        .map_err(sql_err)?
        .transpose()
}

pub(super) fn list(conn: &Connection, principal: &PrincipalId) -> Result<Vec<EnrollmentTokenState>> {
    let mut statement = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM enrollment_tokens WHERE principal_id = ?1 ORDER BY created_at DESC, hash"
        ))
        .map_err(sql_err)?;
    let rows = statement.query_map([principal.as_str()], |r| Ok(from_row(r))).map_err(sql_err)?;
    rows.map(|r| r.map_err(sql_err)?).collect()
}

fn from_row(r: &Row<'_>) -> Result<EnrollmentTokenState> {
    let at = |i: usize| -> Result<i64> { r.get(i).map_err(sql_err) };
    let set = |i: usize| -> Result<Option<i64>> { r.get(i).map_err(sql_err) };
    Ok(EnrollmentTokenState {
        hash: r.get(0).map_err(sql_err)?,
        principal: r.get::<_, String>(1).map_err(sql_err)?.parse().map_err(corrupt)?,
        generation: at(2)? as u64,
        created_at: timestamp(at(3)?)?,
        expires_at: timestamp(at(4)?)?,
        max_validity: set(5)?.map(|v| v as u64),
        consumed: set(6)?.is_some(),
        serial: r.get::<_, Option<String>>(7).map_err(sql_err)?.map(|s| s.parse()).transpose().map_err(corrupt)?,
        revoked: set(8)?.is_some(),
    })
}
