//! Pieces of the issuing transactions: the certificate put, and why a principal check failed.

use aws_sdk_dynamodb::types::{Put, TransactWriteItem};

use super::{DynamoStore, items};
use crate::error::{Error, Result};
use crate::model::CertificateRecord;
use crate::store::{Store, errors};

impl DynamoStore {
    pub(super) fn put_certificate(&self, cert: &CertificateRecord) -> Result<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.certificates)
            .set_item(Some(items::certificate_item(cert)))
            .condition_expression("attribute_not_exists(serial)")
            .build()
            .map_err(|e| Error::internal("put", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Why the principal check of an issuance failed, read back after the transaction was cancelled.
    pub(super) async fn why_not_issuable(&self, cert: &CertificateRecord) -> Error {
        let id = &cert.principal_id;
        let principal = match self.get_principal(id).await {
            Ok(Some(principal)) => principal,
            Ok(None) => return errors::principal_not_found(id),
            Err(e) => return e,
        };
        if let Err(e) = principal.may_receive(cert) {
            return e;
        }
        Error::Unavailable("principal changed during issuance; retry".into())
    }
}
