//! The two tables that decide access: principal type -> permissions, and RPC -> required permission. An RPC missing
//! from the method table is denied; a permission missing from a type's set is denied.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use crate::auth::Caller;
use crate::error::Error;
use crate::model::PrincipalType;

/// The permissions principald itself checks.
pub mod permission {
    /// Read principals (GetPrincipal, ListPrincipals).
    pub const PRINCIPAL_READ: &str = "principal.read";
    /// Create, suspend, activate and delete principals.
    pub const PRINCIPAL_WRITE: &str = "principal.write";
    /// Read certificates (GetCertificate, ListCertificates).
    pub const CERTIFICATE_READ: &str = "certificate.read";
    /// Issue a certificate to any principal.
    pub const CERTIFICATE_ISSUE: &str = "certificate.issue";
    /// Revoke any certificate.
    pub const CERTIFICATE_REVOKE: &str = "certificate.revoke";
    /// Renew one's own certificate.
    pub const CERTIFICATE_RENEW_SELF: &str = "certificate.renew-self";
    /// Read the audit log (ListAuditEvents, WatchAuditEvents, ListAuditChains).
    pub const AUDIT_READ: &str = "audit.read";
    /// Get certificate-bound access tokens for oneself (IssueToken, the OAuth token endpoint).
    pub const TOKEN_ISSUE: &str = "token.issue";
    /// Read workload entries (GetWorkload, ListWorkloads).
    pub const WORKLOAD_READ: &str = "workload.read";
    /// Create and delete workload entries.
    pub const WORKLOAD_WRITE: &str = "workload.write";
    /// A node's own: list its workload entries and obtain X.509- and JWT-SVIDs for them (ListNodeWorkloads,
    /// IssueWorkloadCertificate, IssueWorkloadToken). The handlers also check the entry names the calling node.
    pub const WORKLOAD_ISSUE: &str = "workload.issue";

    /// What admins hold: every permission principald checks except a node's own.
    pub const ADMIN: [&str; 10] = [
        PRINCIPAL_READ,
        PRINCIPAL_WRITE,
        CERTIFICATE_READ,
        CERTIFICATE_ISSUE,
        CERTIFICATE_REVOKE,
        CERTIFICATE_RENEW_SELF,
        AUDIT_READ,
        TOKEN_ISSUE,
        WORKLOAD_READ,
        WORKLOAD_WRITE,
    ];
    /// What nodes hold.
    pub const NODE: [&str; 3] = [CERTIFICATE_RENEW_SELF, TOKEN_ISSUE, WORKLOAD_ISSUE];

    /// Every permission principald itself checks.
    pub const ALL: [&str; 11] = [
        PRINCIPAL_READ,
        PRINCIPAL_WRITE,
        CERTIFICATE_READ,
        CERTIFICATE_ISSUE,
        CERTIFICATE_REVOKE,
        CERTIFICATE_RENEW_SELF,
        AUDIT_READ,
        TOKEN_ISSUE,
        WORKLOAD_READ,
        WORKLOAD_WRITE,
        WORKLOAD_ISSUE,
    ];
}

/// What an RPC requires of its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// Anyone, even a connection without a client certificate: only for what needs no identity (gRPC health,
    /// reflection). Requests are not authenticated and carry no [`Caller`].
    Anonymous,
    /// Any authenticated principal.
    Authenticated,
    /// An authenticated principal whose type holds this permission.
    Permission(String),
}

/// Principal type -> granted permissions. Built-in grants plus whatever the operator's file adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermissionTable {
    grants: HashMap<PrincipalType, Arc<BTreeSet<String>>>,
}

impl PermissionTable {
    /// Admins get every built-in permission but a node's own; nodes may also obtain SVIDs for their workloads; every
    /// type may renew its own certificate and get tokens bound to it (carrying only its own permissions).
    pub fn builtin() -> Self {
        use permission::*;
        let grants = PrincipalType::ALL
            .into_iter()
            .map(|kind| {
                let names: &[&str] = match kind {
                    PrincipalType::Admin => &ADMIN,
                    PrincipalType::Node => &NODE,
                    _ => &[CERTIFICATE_RENEW_SELF, TOKEN_ISSUE],
                };
                (kind, Arc::new(names.iter().map(|s| s.to_string()).collect()))
            })
            .collect();
        Self { grants }
    }

    /// The built-in table extended by a JSON file of the form `{"grants": {"service": ["jobs.submit"]}}`.
    /// Grants only add; nothing built in can be taken away.
    pub fn builtin_extended_by(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::InvalidArgument(format!("cannot read permissions file {}: {e}", path.display())))?;
        Self::builtin()
            .extended_by_json(&text)
            .map_err(|e| Error::InvalidArgument(format!("permissions file {}: {e}", path.display())))
    }

    fn extended_by_json(mut self, text: &str) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            grants: BTreeMap<String, Vec<String>>,
        }
        let file: File = serde_json::from_str(text)
            .map_err(|e| format!("{e} (expected {{\"grants\": {{\"TYPE\": [\"PERMISSION\", ...]}}}})"))?;
        for (kind, names) in file.grants {
            let kind: PrincipalType = kind.parse().map_err(|e: Error| e.to_string())?;
            let set = Arc::make_mut(self.grants.entry(kind).or_default());
            for name in names {
                let valid = !name.is_empty()
                    && name.len() <= 128
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | ':'));
                if !valid {
                    return Err(format!(
                        "invalid permission name {name:?}: use lowercase letters, digits, '.', '_', '-', ':'"
                    ));
                }
                set.insert(name);
            }
        }
        Ok(self)
    }

    /// Grants `permission` to `kind` (for services that embed the auth layer and define their own permissions).
    pub fn grant(&mut self, kind: PrincipalType, permission: &str) {
        Arc::make_mut(self.grants.entry(kind).or_default()).insert(permission.to_owned());
    }

    /// Everything `kind` is granted.
    pub fn for_type(&self, kind: PrincipalType) -> Arc<BTreeSet<String>> {
        self.grants.get(&kind).cloned().unwrap_or_default()
    }
}

/// gRPC method path (`/package.Service/Method`) -> what it requires. Paths not listed are denied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MethodPolicy {
    methods: HashMap<String, Requirement>,
}

impl MethodPolicy {
    /// An empty policy: denies everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the requirement for one method path.
    pub fn allow(mut self, path: &str, requirement: Requirement) -> Self {
        self.methods.insert(path.to_owned(), requirement);
        self
    }

    /// Adds `requirement` for `method` of `service` (e.g. `"principal.v1.PrincipalService"`, `"WhoAmI"`).
    pub fn allow_method(self, service: &str, method: &str, requirement: Requirement) -> Self {
        self.allow(&format!("/{service}/{method}"), requirement)
    }

    /// Every method of a service, for services whose whole surface has one requirement (health, reflection).
    pub fn allow_service(mut self, service: &str, requirement: Requirement) -> Self {
        self.methods.insert(format!("/{service}/*"), requirement);
        self
    }

    /// The method paths named one by one (not whole services), sorted: what metrics report by name.
    pub fn method_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self.methods.keys().filter(|p| !p.ends_with("/*")).cloned().collect();
        paths.sort();
        paths
    }

    /// principald's own table: PrincipalService, gRPC health and reflection.
    pub fn principald() -> Self {
        use Requirement::{Anonymous, Authenticated, Permission};
        use permission::*;
        let svc = "principal.v1.PrincipalService";
        let p = |name: &str| Permission(name.to_owned());
        Self::new()
            .allow_method(svc, "WhoAmI", Authenticated)
            .allow_method(svc, "CreatePrincipal", p(PRINCIPAL_WRITE))
            .allow_method(svc, "GetPrincipal", p(PRINCIPAL_READ))
            .allow_method(svc, "ListPrincipals", p(PRINCIPAL_READ))
            .allow_method(svc, "SuspendPrincipal", p(PRINCIPAL_WRITE))
            .allow_method(svc, "ActivatePrincipal", p(PRINCIPAL_WRITE))
            .allow_method(svc, "DeletePrincipal", p(PRINCIPAL_WRITE))
            .allow_method(svc, "IssueCertificate", p(CERTIFICATE_ISSUE))
            .allow_method(svc, "RenewCertificate", p(CERTIFICATE_RENEW_SELF))
            .allow_method(svc, "RevokeCertificate", p(CERTIFICATE_REVOKE))
            .allow_method(svc, "GetCertificate", p(CERTIFICATE_READ))
            .allow_method(svc, "ListCertificates", p(CERTIFICATE_READ))
            .allow_method(svc, "ListIntermediates", p(CERTIFICATE_READ))
            .allow_method(svc, "RevokeIntermediate", p(CERTIFICATE_REVOKE))
            .allow_method(svc, "ListAuditEvents", p(AUDIT_READ))
            .allow_method(svc, "WatchAuditEvents", p(AUDIT_READ))
            .allow_method(svc, "ListAuditChains", p(AUDIT_READ))
            .allow_method(svc, "GetCrl", Authenticated)
            .allow_method(svc, "IssueToken", p(TOKEN_ISSUE))
            .allow_method(svc, "CreateEnrollmentToken", p(CERTIFICATE_ISSUE))
            .allow_method(svc, "ListEnrollmentTokens", p(CERTIFICATE_ISSUE))
            .allow_method(svc, "RevokeEnrollmentToken", p(CERTIFICATE_REVOKE))
            .allow_method(svc, "Enroll", Anonymous)
            .allow_method(svc, "CreateWorkload", p(WORKLOAD_WRITE))
            .allow_method(svc, "GetWorkload", p(WORKLOAD_READ))
            .allow_method(svc, "ListWorkloads", p(WORKLOAD_READ))
            .allow_method(svc, "DeleteWorkload", p(WORKLOAD_WRITE))
            .allow_method(svc, "ListNodeWorkloads", p(WORKLOAD_ISSUE))
            .allow_method(svc, "IssueWorkloadCertificate", p(WORKLOAD_ISSUE))
            .allow_method(svc, "IssueWorkloadToken", p(WORKLOAD_ISSUE))
            .allow_method(svc, "GetTrustBundle", Authenticated)
            .allow_service("grpc.health.v1.Health", Anonymous)
            .allow_service("grpc.reflection.v1.ServerReflection", Anonymous)
            .allow_service("grpc.reflection.v1alpha.ServerReflection", Anonymous)
    }

    /// What `path` requires; `None` means it is not in the table and must be denied.
    pub fn requirement(&self, path: &str) -> Option<&Requirement> {
        if let Some(r) = self.methods.get(path) {
            return Some(r);
        }
        let (service, _) = path.strip_prefix('/')?.rsplit_once('/')?;
        self.methods.get(&format!("/{service}/*"))
    }

    /// `Ok` if `caller` may call `path`.
    pub fn authorize(&self, caller: &Caller, path: &str) -> Result<(), Error> {
        Self::allows(self.requirement(path), caller, path)
    }

    /// `Ok` if `requirement` (what [`requirement`](Self::requirement) said for `path`) lets `caller` in; for callers
    /// that have looked the requirement up already.
    pub fn allows(requirement: Option<&Requirement>, caller: &Caller, path: &str) -> Result<(), Error> {
        match requirement {
            Some(Requirement::Anonymous | Requirement::Authenticated) => Ok(()),
            Some(Requirement::Permission(p)) if caller.has_permission(p) => Ok(()),
            Some(Requirement::Permission(p)) => Err(Error::PermissionDenied(format!(
                "{} {:?} lacks permission {p:?} for {path}",
                caller.kind,
                caller.id.as_str()
            ))),
            None => Err(Error::PermissionDenied(format!("{path} is not allowed for any caller"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(kind: PrincipalType, table: &PermissionTable) -> Caller {
        Caller {
            id: "c1".parse().unwrap(),
            kind,
            serial: "01".parse().unwrap(),
            not_after: time::OffsetDateTime::UNIX_EPOCH,
            permissions: table.for_type(kind),
            certificate_sha256: [0; 32],
        }
    }

    #[test]
    fn admins_may_call_everything_and_others_only_whoami_and_renew() {
        let (table, policy) = (PermissionTable::builtin(), MethodPolicy::principald());
        let svc = "/principal.v1.PrincipalService/";
        for kind in PrincipalType::ALL {
            let c = caller(kind, &table);
            for method in ["WhoAmI", "RenewCertificate"] {
                assert!(policy.authorize(&c, &format!("{svc}{method}")).is_ok(), "{kind} {method}");
            }
            for method in
                ["CreatePrincipal", "IssueCertificate", "RevokeCertificate", "ListPrincipals", "GetCertificate"]
            {
                assert_eq!(
                    policy.authorize(&c, &format!("{svc}{method}")).is_ok(),
                    kind == PrincipalType::Admin,
                    "{kind} {method}"
                );
            }
        }
    }

    #[test]
    fn methods_missing_from_the_table_are_denied() {
        let c = caller(PrincipalType::Admin, &PermissionTable::builtin());
        let policy = MethodPolicy::principald();
        for path in ["/principal.v1.PrincipalService/DropEverything", "/other.Service/Do", "garbage", "/"] {
            assert!(matches!(policy.authorize(&c, path), Err(Error::PermissionDenied(_))), "{path}");
        }
        assert!(policy.authorize(&c, "/grpc.health.v1.Health/Check").is_ok());
    }

    #[test]
    fn operator_grants_extend_the_builtin_table() {
        let table = PermissionTable::builtin().extended_by_json(r#"{"grants": {"service": ["jobs.submit"]}}"#).unwrap();
        assert!(table.for_type(PrincipalType::Service).contains("jobs.submit"));
        assert!(table.for_type(PrincipalType::Service).contains(permission::CERTIFICATE_RENEW_SELF));
        assert!(!table.for_type(PrincipalType::Worker).contains("jobs.submit"));
        for bad in
            [r#"{"grants": {"robot": ["x"]}}"#, r#"{"grants": {"user": ["Bad Name"]}}"#, r#"{"grant": {}}"#, "nope"]
        {
            assert!(PermissionTable::builtin().extended_by_json(bad).is_err(), "{bad}");
        }
    }
}
