//! The SQLite listings: principals by id, a principal's certificates newest first, one page at a time.

use rusqlite::{Connection, params};

use super::rows::*;
use crate::error::Result;
use crate::model::{CertificateRecord, Principal, PrincipalId, PrincipalStatus, PrincipalType};
use crate::store::page_token::{self, Backend};
use crate::store::{Page, PageRequest, PrincipalFilter};

pub(super) fn principals(conn: &Connection, filter: &PrincipalFilter, page: &PageRequest) -> Result<Page<Principal>> {
    let listing = principal_listing(filter);
    let after = match &page.token {
        None => String::new(),
        Some(token) => {
            let id: PrincipalId = page_token::decode(Backend::Sqlite, &listing, token)?
                .parse()
                .map_err(|_| page_token::invalid("it is malformed"))?;
            id.as_str().to_owned()
        }
    };
    let size = page.size.max(1);
    let sql = format!(
        "SELECT {PRINCIPAL_COLUMNS} FROM principals
         WHERE (?1 IS NULL OR type = ?1) AND (?2 IS NULL OR status = ?2) AND id > ?3
         ORDER BY id LIMIT ?4"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let rows = stmt
        .query_map(
            params![
                filter.kind.map(PrincipalType::as_str),
                filter.status.map(PrincipalStatus::as_str),
                after,
                size + 1
            ],
            principal_from_row,
        )
        .map_err(sql_err)?;
    let items = rows.collect::<rusqlite::Result<Result<Vec<_>>>>().map_err(sql_err)??;
    Ok(paginate(items, size, |p| page_token::encode(Backend::Sqlite, &listing, p.id.as_str())))
}

pub(super) fn certificates(
    conn: &Connection,
    principal: &PrincipalId,
    include_revoked: bool,
    page: &PageRequest,
) -> Result<Page<CertificateRecord>> {
    certificates_page(conn, "principal_id", principal.as_str(), include_revoked, page)
}

pub(super) fn issued_by(
    conn: &Connection,
    issuer: &str,
    include_revoked: bool,
    page: &PageRequest,
) -> Result<Page<CertificateRecord>> {
    certificates_page(conn, "issuer", issuer, include_revoked, page)
}

/// Certificates whose `column` (indexed with not_before) is `value`, newest first.
fn certificates_page(
    conn: &Connection,
    column: &'static str,
    value: &str,
    include_revoked: bool,
    page: &PageRequest,
) -> Result<Page<CertificateRecord>> {
    let listing = if column == "principal_id" {
        format!("certificates|{value}|{include_revoked}")
    } else {
        format!("certificates|{column}={value}|{include_revoked}")
    };
    let cursor = match &page.token {
        None => (i64::MAX, String::new()),
        Some(token) => parse_certificate_cursor(&page_token::decode(Backend::Sqlite, &listing, token)?)?,
    };
    let size = page.size.max(1);
    let sql = format!(
        "SELECT {CERTIFICATE_COLUMNS} FROM certificates
         WHERE {column} = ?1 AND (?2 OR revoked_at IS NULL)
           AND (not_before < ?3 OR (not_before = ?3 AND (?4 = '' OR serial < ?4)))
         ORDER BY not_before DESC, serial DESC LIMIT ?5"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let rows = stmt
        .query_map(params![value, include_revoked, cursor.0, cursor.1, size + 1], certificate_from_row)
        .map_err(sql_err)?;
    let items = rows.collect::<rusqlite::Result<Result<Vec<_>>>>().map_err(sql_err)??;
    Ok(paginate(items, size, |c| {
        page_token::encode(Backend::Sqlite, &listing, &format!("{}.{}", c.not_before.unix_timestamp(), c.serial))
    }))
}
