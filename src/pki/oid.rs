//! Object identifiers for the identity extensions principald writes into client certificates.
//!
//! Both live under one private arc (default `1.3.6.1.4.1.99999.1`, the arc of the reference design, so that its
//! certificates interoperate): `<arc>.1` holds the principal type and `<arc>.2` the principal id.

use std::fmt;
use std::str::FromStr;

use x509_parser::oid_registry::Oid;

use crate::error::Error;

/// The default identity arc: the reference design's private enterprise arc.
pub const DEFAULT_IDENTITY_ARC: &str = "1.3.6.1.4.1.99999.1";

/// The OIDs of the principal-type and principal-id extensions, derived from one configurable arc.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityOids {
    arc: Vec<u64>,
    type_oid: Oid<'static>,
    id_oid: Oid<'static>,
}

impl IdentityOids {
    /// `<arc>.1`: the principal type extension, as arcs for rcgen.
    pub fn type_arcs(&self) -> Vec<u64> {
        self.child(1)
    }

    /// `<arc>.2`: the principal id extension, as arcs for rcgen.
    pub fn id_arcs(&self) -> Vec<u64> {
        self.child(2)
    }

    pub fn type_oid(&self) -> &Oid<'static> {
        &self.type_oid
    }

    pub fn id_oid(&self) -> &Oid<'static> {
        &self.id_oid
    }

    fn child(&self, last: u64) -> Vec<u64> {
        let mut arcs = self.arc.clone();
        arcs.push(last);
        arcs
    }
}

impl Default for IdentityOids {
    fn default() -> Self {
        DEFAULT_IDENTITY_ARC.parse().expect("the default arc is a valid OID")
    }
}

impl FromStr for IdentityOids {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::InvalidArgument(format!(
                "invalid OID arc {s:?}: expected dotted decimal such as {DEFAULT_IDENTITY_ARC}"
            ))
        };
        let arc: Vec<u64> = s.split('.').map(|p| p.parse::<u64>().map_err(|_| bad())).collect::<Result<_, _>>()?;
        if arc.len() < 2 || arc[0] > 2 || (arc[0] < 2 && arc[1] > 39) {
            return Err(bad());
        }
        let oid = |last: u64| {
            let mut a = arc.clone();
            a.push(last);
            Oid::from(&a).map_err(|_| bad())
        };
        Ok(Self { type_oid: oid(1)?, id_oid: oid(2)?, arc })
    }
}

impl fmt::Display for IdentityOids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.arc.iter().map(u64::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

impl fmt::Debug for IdentityOids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityOids({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_arc_gives_the_reference_designs_oids() {
        let oids = IdentityOids::default();
        assert_eq!(oids.type_oid().to_id_string(), "1.3.6.1.4.1.99999.1.1");
        assert_eq!(oids.id_oid().to_id_string(), "1.3.6.1.4.1.99999.1.2");
        assert_eq!(oids.type_arcs(), vec![1, 3, 6, 1, 4, 1, 99999, 1, 1]);
    }

    #[test]
    fn malformed_arcs_are_rejected() {
        for bad in ["", "1", "1.x", "3.1", "1.40", "1..2"] {
            assert!(bad.parse::<IdentityOids>().is_err(), "{bad}");
        }
    }
}
