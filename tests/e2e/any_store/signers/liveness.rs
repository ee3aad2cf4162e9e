//! A root key on a token that restarts or disappears under a running process (SoftHSM2). The PKCS#11 library is
//! loaded once per process, so a second context on the same module (as another part of an application would hold)
//! finalizes, restarts or logs out the library under the key: the key logs in again and signs; a token that is gone
//! gives a clear error at once (and then at most one new attempt a second), and the key signs again once it is back;
//! readiness turns 503 while the root cannot sign and 200 when it can again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use principald::pki::signer::Signer;

use crate::common::signers::pkcs11_key_uri;
use crate::common::{TestServer, http_get};

/// How often a key tries to log in again at most (the signer's bound).
const RECONNECT_INTERVAL: Duration = Duration::from_millis(1100);

fn library() -> Pkcs11 {
    let module = std::env::var("PRINCIPALD_PKCS11_MODULE").unwrap_or_else(|_| "/usr/lib/softhsm/libsofthsm2.so".into());
    Pkcs11::new(module).expect("load the PKCS#11 module")
}

/// C_Finalize from another context of this process: every session and login of the process is gone.
fn finalize_library() {
    library().finalize().expect("the library was initialized");
}

/// C_Finalize, then C_Initialize: the library runs, but the key's session handle means nothing.
fn restart_library() {
    finalize_library();
    library().initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).unwrap();
}

/// C_Logout through another session of the process: the login is per application, so the key's session is logged out.
fn log_out_elsewhere() {
    let context = library();
    let slot = context
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| context.get_token_info(*slot).is_ok_and(|t| t.label().trim_end() == "principald-test"))
        .expect("the test token");
    context.open_ro_session(slot).unwrap().logout().expect("logged in before");
}

/// Signs `message` and checks the signature against the key's public point (read from the token when it was opened).
fn signs(key: &Arc<dyn Signer>, message: &[u8]) -> Duration {
    let started = Instant::now();
    let signature = key.sign(message).unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(message)));
    let took = started.elapsed();
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1, key.public_point())
        .verify(message, &signature)
        .expect("the signature verifies under the CA key");
    took
}

/// The token's directory moved aside (the HSM lost its token) until dropped, which puts it back.
struct TokenAway {
    tokens: PathBuf,
    away: PathBuf,
}

impl TokenAway {
    fn take() -> Self {
        let conf = std::env::var("PRINCIPALD_TEST_SOFTHSM_CONF").unwrap();
        let text = std::fs::read_to_string(&conf).unwrap();
        let tokens = text
            .lines()
            .find_map(|l| l.strip_prefix("directories.tokendir = "))
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(&conf).with_file_name("tokens"));
        let away = tokens.with_file_name("tokens-away");
        if away.exists() {
            // Left by a test that was killed while the token was away.
            drop(Self { tokens: tokens.clone(), away: away.clone() });
        }
        std::fs::rename(&tokens, &away).unwrap();
        std::fs::create_dir(&tokens).unwrap();
        Self { tokens, away }
    }
}

impl Drop for TokenAway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tokens);
        std::fs::rename(&self.away, &self.tokens).expect("put the token back");
    }
}

fn open(uri: &str) -> Arc<dyn Signer> {
    principald::pki::signer::open(&uri.parse().unwrap(), true).expect("open the CA key")
}

#[test]
fn a_token_key_logs_in_again_when_the_library_restarts_or_the_login_is_lost() {
    let Some(uri) = pkcs11_key_uri() else { return };
    principald::install_crypto_provider();
    let key = open(&uri);
    let context = b"principald intermediate key v1\0\x01\x09";
    let secret = key.derive_secret(context).unwrap();
    signs(&key, b"before");

    finalize_library();
    let took = signs(&key, b"after C_Finalize (CKR_CRYPTOKI_NOT_INITIALIZED)");
    eprintln!("signed {took:?} after the library was finalized (initialize, log in, find the key, sign)");
    assert!(took < Duration::from_secs(5), "{took:?}");

    std::thread::sleep(RECONNECT_INTERVAL);
    restart_library();
    let took = signs(&key, b"after C_Finalize + C_Initialize (CKR_SESSION_HANDLE_INVALID)");
    eprintln!("signed {took:?} after the library was restarted");

    std::thread::sleep(RECONNECT_INTERVAL);
    log_out_elsewhere();
    let took = signs(&key, b"after C_Logout elsewhere");
    eprintln!("signed {took:?} after the login was lost");

    assert_eq!(key.derive_secret(context).unwrap(), secret, "the same derivation secret after all that");
    signs(&key, b"and again, on the new session");
}

#[test]
fn a_token_that_is_gone_fails_fast_and_signs_again_once_it_is_back() {
    let Some(uri) = pkcs11_key_uri() else { return };
    principald::install_crypto_provider();
    let key = open(&uri);
    signs(&key, b"before");

    let away = TokenAway::take();
    finalize_library(); // the HSM restarts without its token
    let started = Instant::now();
    let error = key.sign(b"m").unwrap_err();
    let took = started.elapsed();
    let message = error.to_string();
    assert!(matches!(error, principald::error::Error::Unavailable(_)), "{error:?}");
    assert!(message.contains("no PKCS#11 token labelled \"principald-test\""), "{message}");
    assert!(took < Duration::from_secs(5), "a clear error, quickly: {took:?}");
    eprintln!("a missing token failed in {took:?}: {message}");
    // Until a second has passed, the token is not asked again.
    let started = Instant::now();
    let again = key.sign(b"m").unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
    assert!(again.contains("next attempt in") && again.contains("no PKCS#11 token labelled"), "{again}");

    drop(away);
    let back = Instant::now();
    let took = loop {
        match key.sign(b"back") {
            Ok(_) => break back.elapsed(),
            Err(e) if back.elapsed() < Duration::from_secs(10) => {
                assert!(e.to_string().contains("token"), "{e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("no signature 10 s after the token came back: {e}"),
        }
    };
    eprintln!("signed again {took:?} after the token came back");
    assert!(took < Duration::from_secs(3), "{took:?}");
    signs(&key, b"back for good");
}

async fn readyz_until(health: std::net::SocketAddr, code: u16, within: Duration) -> (Duration, String) {
    let started = Instant::now();
    loop {
        let (got, body) = tokio::task::spawn_blocking(move || http_get(health, "/readyz")).await.unwrap();
        if got == code {
            return (started.elapsed(), body);
        }
        assert!(started.elapsed() < within, "/readyz still {got} ({body:?}) after {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn signer_ready_metric(health: std::net::SocketAddr) -> String {
    let (_, text) = tokio::task::spawn_blocking(move || http_get(health, "/metrics")).await.unwrap();
    text.lines().find(|l| l.starts_with("principald_signer_ready ")).expect("the gauge is exported").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_503_while_the_hsm_root_cannot_sign_and_200_when_it_can() {
    let Some(uri) = pkcs11_key_uri() else { return };
    let server = TestServer::start_with(&["--ca-key", &uri, "--signer-check-every", "1s"]).await;
    let health = server.running.health_addr;
    readyz_until(health, 200, Duration::from_secs(10)).await;
    assert_eq!(signer_ready_metric(health).await, "principald_signer_ready 1");

    let away = TokenAway::take();
    tokio::task::spawn_blocking(finalize_library).await.unwrap();
    let (took, body) = readyz_until(health, 503, Duration::from_secs(15)).await;
    assert!(body.contains("the CA root key cannot sign"), "{body}");
    assert_eq!(signer_ready_metric(health).await, "principald_signer_ready 0");
    eprintln!("/readyz turned 503 {took:?} after the token went away");

    drop(away);
    let (took, _) = readyz_until(health, 200, Duration::from_secs(15)).await;
    assert_eq!(signer_ready_metric(health).await, "principald_signer_ready 1");
    eprintln!("/readyz turned 200 {took:?} after the token came back");
}
