//! The one test suite every [`Store`] backend must pass. Each check takes a fresh, empty store and panics on the
//! first violation of the trait's contract. Backends run it with [`store_conformance_tests!`](crate::store_conformance_tests).

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use crate::error::Error;
use crate::model::{
    CertificateRecord, Principal, PrincipalId, PrincipalStatus, PrincipalType, RevocationReason, Serial,
};
use crate::store::{PageRequest, PrincipalFilter, Store};

mod audit;
mod certificates;
mod crl;
mod enrollment;
mod hardening;
mod principals;
mod workloads;
pub use audit::*;
pub use certificates::*;
pub use crl::*;
pub use enrollment::*;
pub use hardening::*;
pub use principals::*;
pub use workloads::*;

/// Expands to one `#[tokio::test]` per conformance check; `$make` is an async expression yielding a fresh empty
/// `Arc<dyn Store>` (each test gets its own).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@tests $make;
            // principals.rs
            principal_round_trips, duplicate_principal_is_refused_and_changes_nothing, unknown_ids_are_none,
            principals_list_in_id_order_across_pages, principal_filters_apply, transitions_check_the_current_status,
            delete_revokes_every_certificate_atomically,
            // certificates.rs
            certificates_need_an_active_principal_of_the_same_type, certificate_round_trips_and_serials_are_unique,
            certificates_list_newest_first_across_pages, revocation_happens_once, concurrent_inserts_are_all_kept,
            withdrawals_advance_the_revocation_epoch, revoke_all_revokes_only_that_principals_certificates,
            // hardening.rs
            renewal_is_recorded_once_and_needs_an_unrevoked_current_parent,
            key_compromise_voids_every_certificate_in_the_revoking_write, suspension_and_deletion_raise_the_floor,
            renewals_racing_key_compromise_leave_no_live_descendant, page_tokens_from_elsewhere_are_invalid_arguments,
            the_first_ca_claim_wins, interrupted_sweeps_are_finished, intermediates_are_recorded_and_revoked_once,
            // audit.rs
            audit_events_commit_with_their_change_or_not_at_all, ca_claims_intermediates_and_token_keys_record_one_event_each,
            audit_chains_hold_together_under_concurrent_writers, audit_listings_filter_and_page,
            // crl.rs
            revoked_certificates_are_read_by_partition_while_unexpired,
            crl_numbers_grow_and_only_a_newer_crl_replaces_a_stored_one,
            suspension_revokes_what_the_floor_voids_and_nothing_after, revoking_an_intermediate_revokes_what_it_signed,
            // enrollment.rs
            enrollment_tokens_are_consumed_once_with_their_certificate, enrollment_tokens_are_listed_and_revoked_once,
            // workloads.rs
            workload_round_trips_with_its_principal,
            workload_creation_needs_an_active_node_and_a_new_id_and_a_refusal_writes_nothing,
            workloads_list_by_node_in_id_order_across_pages, workload_deletion_returns_the_entry_once,
            workload_changes_record_one_audit_event_each,
            // mod.rs
            ping_answers);
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: std::sync::Arc<dyn $crate::store::Store> = $make;
                $crate::store::conformance::$name(store).await;
            }
        )*
    };
}

/// The suite's "now", in whole seconds (stores keep seconds; fixtures must not expire: DynamoDB treats certificates
/// past their TTL as gone). Taken once per process, so a record made at t0 and one expected at t0 agree even when a
/// second boundary passes between them.
fn t0() -> OffsetDateTime {
    static T0: std::sync::OnceLock<OffsetDateTime> = std::sync::OnceLock::new();
    *T0.get_or_init(crate::model::now)
}

pub fn principal(id: &str, kind: PrincipalType) -> Principal {
    Principal {
        id: id.parse().unwrap(),
        kind,
        status: PrincipalStatus::Active,
        description: format!("{id} for tests"),
        email: Some(format!("{id}@example.test")),
        status_reason: None,
        created_at: t0(),
        updated_at: t0(),
        generation: 0,
    }
}

pub fn certificate(serial: &str, owner: &Principal, not_before: OffsetDateTime) -> CertificateRecord {
    CertificateRecord {
        serial: serial.parse().unwrap(),
        principal_id: owner.id.clone(),
        principal_type: owner.kind,
        not_before,
        not_after: not_before + Duration::days(30),
        sha256_fingerprint: "00".repeat(32),
        der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
        revocation: None,
        generation: owner.generation,
        renewal: None,
        issuer: String::new(),
    }
}

fn id(s: &str) -> PrincipalId {
    s.parse().unwrap()
}

fn page(size: u32, token: Option<String>) -> PageRequest {
    PageRequest { size, token }
}

pub async fn ping_answers(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
}
