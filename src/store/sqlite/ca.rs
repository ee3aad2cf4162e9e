//! The CA's own records: the claim (fingerprint and certificate) and the replica intermediates.

use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;

use super::rows::{bump_epoch, corrupt, sql_err, timestamp};
use crate::error::{Error, Result};
use crate::model::CaClaim;
use crate::model::{IntermediateRecord, RevocationReason, TokenKeyRecord};
use crate::pki::crl::StoredCrl;

/// The recorded claim, and whether it is `claim` recorded by this call.
pub(super) fn claim(conn: &Connection, claim: &CaClaim, replace: bool) -> Result<(CaClaim, bool)> {
    let on_conflict = if replace { "UPDATE SET value = excluded.value" } else { "NOTHING" };
    let inserted = conn
        .execute(
            &format!(
                "INSERT INTO settings (key, value) VALUES ('ca_fingerprint', ?1) ON CONFLICT (key) DO {on_conflict}"
            ),
            [&claim.fingerprint],
        )
        .map_err(sql_err)?;
    if inserted > 0 {
        conn.execute(
            "INSERT INTO settings (key, value) VALUES ('ca_certificate', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [&claim.certificate_pem],
        )
        .map_err(sql_err)?;
    }
    let setting = |key: &str| {
        conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get::<_, String>(0))
            .optional()
            .map_err(sql_err)
    };
    let recorded = CaClaim {
        fingerprint: setting("ca_fingerprint")?.ok_or_else(|| corrupt("CA claim vanished"))?,
        certificate_pem: setting("ca_certificate")?.unwrap_or_default(),
    };
    Ok((recorded, inserted > 0))
}

/// Records `r`; `false` if it was recorded already.
pub(super) fn record(conn: &Connection, r: &IntermediateRecord) -> Result<bool> {
    let inserted = conn
        .execute(
            "INSERT INTO intermediates (fingerprint, replica, not_before, not_after, der, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, NULL) ON CONFLICT (fingerprint) DO NOTHING",
            params![r.fingerprint, r.replica, r.not_before.unix_timestamp(), r.not_after.unix_timestamp(), r.der],
        )
        .map_err(sql_err)?;
    Ok(inserted > 0)
}

const COLUMNS: &str = "fingerprint, replica, not_before, not_after, der, revoked_at";

pub(super) fn list(conn: &Connection) -> Result<Vec<IntermediateRecord>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM intermediates")).map_err(sql_err)?;
    let rows = stmt.query_map([], from_row).map_err(sql_err)?;
    rows.map(|r| r.map_err(sql_err)?).collect()
}

pub(super) fn revoked(conn: &Connection) -> Result<std::collections::BTreeSet<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT fingerprint FROM intermediates WHERE revoked_at IS NOT NULL").map_err(sql_err)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(sql_err)?;
    rows.map(|r| r.map_err(sql_err)).collect()
}

/// The revoked set is the rows' `revoked_at`: it shrinks with them.
pub(super) fn forget(conn: &Connection, expired_before: OffsetDateTime) -> Result<u32> {
    let cutoff = expired_before.unix_timestamp();
    let intermediates = conn.execute("DELETE FROM intermediates WHERE not_after < ?1", [cutoff]).map_err(sql_err)?;
    let keys = conn.execute("DELETE FROM token_keys WHERE expires_at < ?1", [cutoff]).map_err(sql_err)?;
    Ok(u32::try_from(intermediates + keys).unwrap_or(u32::MAX))
}

pub(super) fn revoke(conn: &Connection, fingerprint: &str, at: OffsetDateTime) -> Result<IntermediateRecord> {
    let select = format!("SELECT {COLUMNS} FROM intermediates WHERE fingerprint = ?1");
    let found = conn.query_row(&select, [fingerprint], from_row).optional().map_err(sql_err)?.transpose()?;
    match found {
        None => return Err(Error::NotFound(format!("intermediate {fingerprint}"))),
        Some(r) if r.revoked_at.is_some() => {
            return Err(Error::FailedPrecondition(format!("intermediate {fingerprint} is already revoked")));
        }
        Some(_) => {}
    }
    conn.execute(
        "UPDATE intermediates SET revoked_at = ?2 WHERE fingerprint = ?1",
        params![fingerprint, at.unix_timestamp()],
    )
    .map_err(sql_err)?;
    // What it signed is revoked with it (CRLs, OCSP), in this same write.
    conn.execute(
        "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3 WHERE issuer = ?1 AND revoked_at IS NULL",
        params![fingerprint, at.unix_timestamp(), RevocationReason::CaCompromise.code()],
    )
    .map_err(sql_err)?;
    bump_epoch(conn)?;
    conn.query_row(&select, [fingerprint], from_row).map_err(sql_err)?
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<Result<IntermediateRecord>> {
    let (fingerprint, replica, not_before, not_after): (String, String, i64, i64) =
        (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
    let (der, revoked_at): (Vec<u8>, Option<i64>) = (row.get(4)?, row.get(5)?);
    Ok((|| {
        Ok(IntermediateRecord {
            fingerprint,
            replica,
            not_before: timestamp(not_before)?,
            not_after: timestamp(not_after)?,
            der,
            revoked_at: revoked_at.map(timestamp).transpose()?,
        })
    })())
}

/// Records a token key; `false` if it was recorded already.
pub(super) fn record_token_key(conn: &Connection, k: &TokenKeyRecord) -> Result<bool> {
    let inserted = conn
        .execute(
            "INSERT INTO token_keys (kid, replica, public_jwk, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (kid) DO NOTHING",
            params![k.kid, k.replica, k.public_jwk, k.created_at.unix_timestamp(), k.expires_at.unix_timestamp()],
        )
        .map_err(sql_err)?;
    Ok(inserted > 0)
}

pub(super) fn token_keys(conn: &Connection, at: OffsetDateTime) -> Result<Vec<TokenKeyRecord>> {
    let mut stmt = conn
        .prepare_cached("SELECT kid, replica, public_jwk, created_at, expires_at FROM token_keys WHERE expires_at > ?1")
        .map_err(sql_err)?;
    let rows = stmt
        .query_map([at.unix_timestamp()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get(3)?, r.get(4)?))
        })
        .map_err(sql_err)?;
    rows.map(|row| {
        let (kid, replica, public_jwk, created_at, expires_at): (String, String, String, i64, i64) =
            row.map_err(sql_err)?;
        Ok(TokenKeyRecord {
            kid,
            replica,
            public_jwk,
            created_at: timestamp(created_at)?,
            expires_at: timestamp(expires_at)?,
        })
    })
    .collect()
}

pub(super) fn stored_crl(conn: &Connection, place: &str) -> Result<Option<StoredCrl>> {
    let select = "SELECT number, digest, this_update, next_update, der FROM crls WHERE place = ?1";
    let row = conn
        .query_row(select, [place], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?, r.get(4)?))
        })
        .optional()
        .map_err(sql_err)?;
    row.map(|(number, digest, this_update, next_update, der)| {
        Ok(StoredCrl {
            place: place.to_owned(),
            number: u64::try_from(number).map_err(corrupt)?,
            digest,
            this_update: timestamp(this_update)?,
            next_update: timestamp(next_update)?,
            der,
        })
    })
    .transpose()
}

/// Inserts or replaces the place's CRL only with a higher number.
pub(super) fn store_crl(conn: &Connection, crl: &StoredCrl) -> Result<bool> {
    let number = i64::try_from(crl.number).map_err(|_| Error::InvalidArgument("CRL number out of range".into()))?;
    let changed = conn
        .execute(
            "INSERT INTO crls (place, number, digest, this_update, next_update, der) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (place) DO UPDATE SET number = excluded.number, digest = excluded.digest,
               this_update = excluded.this_update, next_update = excluded.next_update, der = excluded.der
             WHERE excluded.number > crls.number",
            params![
                crl.place,
                number,
                crl.digest,
                crl.this_update.unix_timestamp(),
                crl.next_update.unix_timestamp(),
                crl.der
            ],
        )
        .map_err(sql_err)?;
    Ok(changed == 1)
}
