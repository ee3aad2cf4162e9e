//! Key URIs: `file:PATH`, `awskms:KEY-ID` (ARN, alias/NAME, alias ARN or key id) and PKCS#11 URIs (RFC 7512).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::Error;

/// Where the CA's root key lives.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyUri {
    File(PathBuf),
    /// `awskms:KEY` or step-ca's `awskms:key-id=KEY;region=REGION`; the region of a key ARN is used when none is
    /// given, else the standard AWS environment's.
    AwsKms {
        key_id: String,
        region: Option<String>,
        /// Endpoint override (`endpoint=` or `--kms-endpoint`); the SDK also honours `AWS_ENDPOINT_URL_KMS`.
        endpoint: Option<String>,
    },
    Pkcs11(Pkcs11Uri),
}

/// The parts of an RFC 7512 URI principald uses. The PIN is read when the key is opened, never kept in the URI text.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// Token label (`token=`): slot numbers move between restarts, labels do not.
    pub token: String,
    /// Key label (`object=`); bootstrap gives a key it creates this label.
    pub object: String,
    /// Key id (`id=`, percent-encoded bytes), narrowing the search when given.
    pub id: Option<Vec<u8>>,
    /// The PKCS#11 library (`module-path=`); `PRINCIPALD_PKCS11_MODULE` or SoftHSM2's usual path otherwise.
    pub module_path: Option<PathBuf>,
    pub pin: PinSource,
}

#[derive(Clone, PartialEq, Eq)]
pub enum PinSource {
    /// `pin-source=file:PATH` (the whole file, trailing newline removed).
    File(PathBuf),
    /// `pin-value=...`: allowed, but a file or the `PRINCIPALD_PKCS11_PIN` variable keeps it out of process listings.
    Value(String),
    /// Neither given: `PRINCIPALD_PKCS11_PIN`.
    Env,
}

impl FromStr for KeyUri {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::InvalidArgument(format!("invalid key URI {:?}: {why}", redact(s)));
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(bad("file: needs a path"));
            }
            return Ok(Self::File(PathBuf::from(path.strip_prefix("//").unwrap_or(path))));
        }
        if let Some(rest) = s.strip_prefix("awskms:") {
            let rest = rest.strip_prefix("///").unwrap_or(rest);
            let (mut key_id, mut region, mut endpoint) = (rest.to_owned(), None, None);
            if ["key-id=", "region=", "endpoint="].iter().any(|a| rest.starts_with(a)) {
                key_id = String::new();
                for attr in rest.split(';').filter(|a| !a.is_empty()) {
                    match attr.split_once('=') {
                        Some(("key-id", v)) => key_id = v.to_owned(),
                        Some(("region", v)) if !v.is_empty() => region = Some(v.to_owned()),
                        Some(("endpoint", v)) if v.starts_with("http") => {
                            endpoint = Some(percent_decode(v).map_err(|why| bad(&why))?)
                        }
                        Some(("profile", _)) => {}
                        _ => return Err(bad(&format!("unknown or empty awskms attribute {attr:?}"))),
                    }
                }
            }
            if key_id.is_empty() || key_id.len() > 2048 || key_id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad("awskms: needs a key id, key ARN, alias/NAME or alias ARN"));
            }
            // arn:aws:kms:REGION:ACCOUNT:key/ID names its region.
            let region = region.or_else(|| {
                key_id
                    .strip_prefix("arn:")
                    .and_then(|arn| arn.split(':').nth(2))
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned)
            });
            return Ok(Self::AwsKms { key_id, region, endpoint });
        }
        if let Some(rest) = s.strip_prefix("pkcs11:") {
            return parse_pkcs11(rest).map(Self::Pkcs11).map_err(|why| bad(&why));
        }
        Err(bad("expected file:, awskms: or pkcs11:"))
    }
}

fn parse_pkcs11(rest: &str) -> Result<Pkcs11Uri, String> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (mut token, mut object, mut id, mut module_path, mut pin) = (None, None, None, None, PinSource::Env);
    for attr in path.split(';').filter(|a| !a.is_empty()) {
        let (k, raw) = attr.split_once('=').ok_or_else(|| format!("attribute {attr:?} has no value"))?;
        match k {
            "token" => token = Some(percent_decode(raw)?),
            "object" => object = Some(percent_decode(raw)?),
            "id" => id = Some(percent_decode_bytes(raw)?),
            "type" if raw == "private" => {}
            "type" => return Err("type must be private".into()),
            // Other path attributes (manufacturer, model, serial, id, slot-*) narrow nothing we need.
            _ => {}
        }
    }
    for attr in query.split('&').filter(|a| !a.is_empty()) {
        let (k, v) = attr.split_once('=').ok_or_else(|| format!("query attribute {attr:?} has no value"))?;
        let v = percent_decode(v)?;
        match k {
            "module-path" => module_path = Some(PathBuf::from(v)),
            "pin-source" => {
                let file = v.strip_prefix("file:").unwrap_or(&v);
                pin = PinSource::File(PathBuf::from(file.strip_prefix("//").unwrap_or(file)));
            }
            "pin-value" => pin = PinSource::Value(v),
            _ => {}
        }
    }
    let token = token.filter(|t| !t.is_empty()).ok_or("token= (the token label) is required")?;
    let object = object.filter(|o| !o.is_empty()).ok_or("object= (the key label) is required")?;
    Ok(Pkcs11Uri { token, object, id, module_path, pin })
}

fn percent_decode(s: &str) -> Result<String, String> {
    String::from_utf8(percent_decode_bytes(s)?).map_err(|_| "percent escapes are not UTF-8".into())
}

fn percent_decode_bytes(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("truncated percent escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad percent escape")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The URI with every `pin-value` masked (however often it appears, in the path or the query).
fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("pin-value=") {
        let value = at + "pin-value=".len();
        let end = rest[value..].find(['&', ';', '?']).map_or(rest.len(), |e| value + e);
        out.push_str(&rest[..value]);
        out.push_str("...");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

impl fmt::Display for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "file:{}", path.display()),
            Self::AwsKms { key_id, .. } => write!(f, "awskms:{key_id}"),
            Self::Pkcs11(p) => write!(f, "pkcs11:token={};object={}", p.token, p.object),
        }
    }
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "file:{}", path.display()),
            Self::Value(_) => f.write_str("pin-value=..."),
            Self::Env => f.write_str("PRINCIPALD_PKCS11_PIN"),
        }
    }
}

impl fmt::Debug for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn every_pin_value_is_masked() {
        let uri = "pkcs11:token=a;pin-value=1234;object=k?pin-value=5678&module-path=/x.so";
        let shown = redact(uri);
        assert!(!shown.contains("1234") && !shown.contains("5678"), "{shown}");
        assert_eq!(shown, "pkcs11:token=a;pin-value=...;object=k?pin-value=...&module-path=/x.so");
    }

    use super::*;

    #[test]
    fn parses_each_scheme() {
        assert_eq!("file:./data/ca.key".parse::<KeyUri>().unwrap(), KeyUri::File("./data/ca.key".into()));
        assert_eq!(
            "awskms:alias/principald-ca".parse::<KeyUri>().unwrap(),
            KeyUri::AwsKms { key_id: "alias/principald-ca".into(), region: None, endpoint: None }
        );
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(
            format!("awskms:{arn}").parse::<KeyUri>().unwrap(),
            KeyUri::AwsKms { key_id: arn.into(), region: Some("eu-west-1".into()), endpoint: None }
        );
        assert_eq!(
            "awskms:key-id=alias/ca;region=us-east-2;endpoint=http://127.0.0.1:5000".parse::<KeyUri>().unwrap(),
            KeyUri::AwsKms {
                key_id: "alias/ca".into(),
                region: Some("us-east-2".into()),
                endpoint: Some("http://127.0.0.1:5000".into())
            }
        );
        let KeyUri::Pkcs11(p) = "pkcs11:token=t;object=o;id=%01%ff".parse().unwrap() else { panic!("not pkcs11") };
        assert_eq!(p.id, Some(vec![1, 255]));
        let KeyUri::Pkcs11(p) =
            "pkcs11:token=prin%20cipald;object=root?module-path=/usr/lib/x.so&pin-source=file:/run/pin"
                .parse()
                .unwrap()
        else {
            panic!("not pkcs11")
        };
        assert_eq!(p.token, "prin cipald");
        assert_eq!(p.object, "root");
        assert_eq!(p.module_path, Some(PathBuf::from("/usr/lib/x.so")));
        assert_eq!(p.pin, PinSource::File("/run/pin".into()));
    }

    #[test]
    fn refuses_what_it_cannot_use_and_never_echoes_a_pin() {
        for bad in
            ["", "file:", "awskms:", "http://x", "pkcs11:object=a", "pkcs11:token=t", "pkcs11:token=t;object=%zz"]
        {
            assert!(bad.parse::<KeyUri>().is_err(), "{bad:?} accepted");
        }
        let err = "pkcs11:token=t?pin-value=hunter2".parse::<KeyUri>().unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let ok: KeyUri = "pkcs11:token=t;object=o?pin-value=hunter2".parse().unwrap();
        assert!(!format!("{ok} {ok:?}").contains("hunter2"));
    }
}
