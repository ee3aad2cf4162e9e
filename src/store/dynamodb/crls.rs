//! Stored CRLs in DynamoDB: each place's newest CRL is an item of the principals table keyed `crl#PLACE` (principal
//! ids cannot contain `#`, and the item has no listing attributes, so it never lists as a principal; the meta table is
//! scanned for intermediates and token keys and stays small), written only over a lower number; the CRL number
//! counter is an item of its own in the meta table, raised with an atomic ADD.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::DynamoStore;
use super::items::{get_n, get_s, n_u64, s, time_from};
use crate::error::{Error, Result};
use crate::pki::crl::StoredCrl;

/// Key of the CRL number counter in the meta table.
const COUNTER_KEY: &str = "crl_number";

fn key(place: &str) -> String {
    format!("crl#{place}")
}

impl DynamoStore {
    pub(super) async fn crl_number(&self) -> Result<u64> {
        let out = self
            .client
            .update_item()
            .table_name(&self.meta)
            .key("key", s(COUNTER_KEY))
            .update_expression("ADD crl_number :one")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| super::transact::sdk_error("UpdateItem", e))?;
        let attributes = out.attributes.unwrap_or_default();
        u64::try_from(get_n(&attributes, "crl_number")?).map_err(|e| Error::internal("CRL number", e))
    }

    pub(super) async fn crl(&self, place: &str) -> Result<Option<StoredCrl>> {
        let Some(item) = self.get_item(&self.principals, "id", &key(place)).await? else { return Ok(None) };
        let der = match item.get("der") {
            Some(AttributeValue::B(blob)) => blob.as_ref().to_vec(),
            _ => return Err(Error::internal("stored CRL", "no der attribute")),
        };
        Ok(Some(StoredCrl {
            place: place.to_owned(),
            number: u64::try_from(get_n(&item, "number")?).map_err(|e| Error::internal("CRL number", e))?,
            digest: get_s(&item, "digest")?.to_owned(),
            this_update: time_from(get_n(&item, "this_update")?)?,
            next_update: time_from(get_n(&item, "next_update")?)?,
            der,
        }))
    }

    pub(super) async fn put_crl(&self, crl: &StoredCrl) -> Result<bool> {
        let put = self
            .client
            .put_item()
            .table_name(&self.principals)
            .item("id", s(&key(&crl.place)))
            .item("number", n_u64(crl.number))
            .item("digest", s(&crl.digest))
            .item("this_update", AttributeValue::N(crl.this_update.unix_timestamp().to_string()))
            .item("next_update", AttributeValue::N(crl.next_update.unix_timestamp().to_string()))
            .item("der", AttributeValue::B(Blob::new(crl.der.clone())))
            .condition_expression("attribute_not_exists(id) OR #number < :number")
            .expression_attribute_names("#number", "number")
            .expression_attribute_values(":number", n_u64(crl.number))
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(super::transact::sdk_error("PutItem", e)),
        }
    }
}
