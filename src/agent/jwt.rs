//! JWT-SVIDs on the agent's side: the JWT bundle it serves and ValidateJWTSVID (signature against the bundle's keys,
//! expiry, audience, and a `sub` in this trust domain).

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tonic::Status;

use super::state::Bundle;

/// The bundle's JWKS, or an empty key set when the server signs no JWT-SVIDs (clients parse it either way).
pub fn jwks_or_empty(bundle: &Bundle) -> Vec<u8> {
    if bundle.jwks.is_empty() { br#"{"keys":[]}"#.to_vec() } else { bundle.jwks.clone() }
}

/// Checks `token` for `audience`; returns its SPIFFE ID and claims.
pub fn validate(bundle: &Bundle, token: &str, audience: &str) -> Result<(String, prost_types::Struct), Status> {
    let invalid = |why: String| Status::invalid_argument(format!("invalid JWT-SVID: {why}"));
    let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.to_string()))?;
    if header.alg != Algorithm::ES256 {
        return Err(invalid(format!("unsupported algorithm {:?}", header.alg)));
    }
    // principald's access tokens are signed with the same keys: `typ` (at+jwt) and their `cnf` binding tell them
    // apart, and an access token is no JWT-SVID.
    if !matches!(header.typ.as_deref(), None | Some("JWT") | Some("JOSE")) {
        return Err(invalid(format!("type {:?} is not a JWT-SVID's", header.typ.unwrap_or_default())));
    }
    let kid = header.kid.ok_or_else(|| invalid("no key id".into()))?;
    let keys: JwkSet = serde_json::from_slice(&jwks_or_empty(bundle)).map_err(|e| invalid(e.to_string()))?;
    let jwk = keys.find(&kid).ok_or_else(|| invalid(format!("key {kid:?} is not in the bundle")))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(e.to_string()))?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "sub", "aud"]);
    validation.leeway = 0;
    let data =
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(|e| invalid(e.to_string()))?;
    if data.claims.get("cnf").is_some() {
        return Err(invalid("a certificate-bound access token is not a JWT-SVID".into()));
    }
    let sub = data.claims["sub"].as_str().unwrap_or_default().to_owned();
    let prefix = format!("{}/", bundle.trust_domain_id());
    if !sub.starts_with(&prefix) || sub.len() == prefix.len() {
        return Err(invalid(format!("subject {sub:?} is not a SPIFFE ID of {}", bundle.trust_domain_id())));
    }
    let serde_json::Value::Object(map) = data.claims else { return Err(invalid("claims are not an object".into())) };
    Ok((sub, to_struct(map)))
}

fn to_struct(map: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct { fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect() }
}

fn to_value(value: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    let kind = match value {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s),
        J::Array(items) => {
            Kind::ListValue(prost_types::ListValue { values: items.into_iter().map(to_value).collect() })
        }
        J::Object(map) => Kind::StructValue(to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}
