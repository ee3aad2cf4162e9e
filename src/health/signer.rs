//! The CA's keys in readiness: a background task signs a test message with the root key (KMS, the HSM, a file) and
//! with the current issuing intermediate every `--signer-check-every`, and checks each signature against the key's
//! public half ([`crate::pki::signer::self_test`]). Readiness reads the last result: a probe never signs and never
//! waits on KMS or a token. A self-test that does not return within [`CHECK_TIMEOUT`] counts as a failure (a hung HSM),
//! and no second one starts while it hangs; a result older than two intervals plus that timeout counts as overdue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::pki::ca::CertificateAuthority;

/// How long one self-test may take before it counts as failed (KMS bounds each call at 10 s).
const CHECK_TIMEOUT: Duration = Duration::from_secs(12);

pub const ROOT_CANNOT_SIGN: &str = "not ready: the CA root key cannot sign (self-test failed)\n";
pub const INTERMEDIATE_CANNOT_SIGN: &str = "not ready: the issuing intermediate cannot sign (self-test failed)\n";
pub const HUNG: &str = "not ready: the CA key's self-test has not returned (KMS or the HSM hangs)\n";
pub const OVERDUE: &str = "not ready: the CA key's self-test is overdue\n";

/// The last self-test: when it ended, and the readiness reason if it failed.
#[derive(Clone, Copy, Debug)]
pub struct Status {
    pub checked_at: Instant,
    pub failure: Option<&'static str>,
}

/// The signer check, as readiness sees it.
#[derive(Clone)]
pub struct SignerCheck {
    status: watch::Receiver<Status>,
    every: Duration,
    timeout: Duration,
}

impl SignerCheck {
    /// Starts checking `ca`'s keys every `every`; the keys count as tested now (the replica self-tested its root
    /// when it started). The returned future runs until no `SignerCheck` is left.
    pub fn start(ca: Arc<CertificateAuthority>, every: Duration) -> (Self, impl Future<Output = ()> + Send) {
        Self::start_with_timeout(ca, every, CHECK_TIMEOUT)
    }

    fn start_with_timeout(
        ca: Arc<CertificateAuthority>,
        every: Duration,
        timeout: Duration,
    ) -> (Self, impl Future<Output = ()> + Send) {
        let (tx, status) = watch::channel(Status { checked_at: Instant::now(), failure: None });
        (Self { status, every, timeout }, run(ca, every, timeout, tx))
    }

    /// `None` when the keys signed at the last check and that check is recent; else the reason.
    pub fn failure(&self) -> Option<&'static str> {
        let status = *self.status.borrow();
        if status.failure.is_some() {
            return status.failure;
        }
        (status.checked_at.elapsed() > self.every * 2 + self.timeout).then_some(OVERDUE)
    }
}

async fn run(ca: Arc<CertificateAuthority>, every: Duration, timeout: Duration, status: watch::Sender<Status>) {
    // A self-test still blocked in KMS or the token from an earlier round: awaited again, never started twice.
    let mut hanging: Option<JoinHandle<Option<&'static str>>> = None;
    loop {
        tokio::time::sleep(every).await;
        if status.is_closed() {
            return;
        }
        let mut test = match hanging.take() {
            Some(test) => test,
            None => {
                let ca = ca.clone();
                tokio::task::spawn_blocking(move || self_test(&ca))
            }
        };
        let failure = match tokio::time::timeout(timeout, &mut test).await {
            Ok(Ok(failure)) => failure,
            Ok(Err(_panicked)) => Some(ROOT_CANNOT_SIGN),
            Err(_) => {
                hanging = Some(test);
                Some(HUNG)
            }
        };
        let previous = status.borrow().failure;
        if failure != previous {
            match failure {
                None => tracing::info!("the CA keys sign again"),
                Some(reason) => tracing::warn!(reason = reason.trim_end(), "CA key self-test failed"),
            }
        }
        if status.send(Status { checked_at: Instant::now(), failure }).is_err() {
            return;
        }
    }
}

/// Signs with the root and the current intermediate; the reason if either fails. Blocking.
fn self_test(ca: &CertificateAuthority) -> Option<&'static str> {
    let root = ca.root().signer();
    if let Err(error) = crate::pki::signer::self_test(root.as_ref()) {
        tracing::warn!(key = %root.describe(), %error, "the CA root key failed its self-test");
        return Some(ROOT_CANNOT_SIGN);
    }
    if let Err(error) = ca.issuing().self_test() {
        tracing::warn!(%error, "the issuing intermediate failed its self-test");
        return Some(INTERMEDIATE_CANNOT_SIGN);
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

    use super::*;
    use crate::error::Result;
    use crate::pki::ca::Root;
    use crate::pki::signer::Signer;

    const SIGNS: u8 = 0;
    const FAILS: u8 = 1;
    const HANGS: u8 = 2;

    /// An in-memory key that can be made to fail or to hang (until it is made to sign again).
    #[derive(Debug)]
    struct Flaky {
        key: Arc<dyn Signer>,
        mode: AtomicU8,
        signing: AtomicUsize,
        most_at_once: AtomicUsize,
    }

    impl Signer for Flaky {
        fn spki_der(&self) -> &[u8] {
            self.key.spki_der()
        }
        fn public_point(&self) -> &[u8] {
            self.key.public_point()
        }
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
            let now = self.signing.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            while self.mode.load(Ordering::SeqCst) == HANGS {
                std::thread::sleep(Duration::from_millis(5));
            }
            self.signing.fetch_sub(1, Ordering::SeqCst);
            match self.mode.load(Ordering::SeqCst) {
                FAILS => Err(crate::error::Error::Unavailable("the token is away".into())),
                _ => self.key.sign(message),
            }
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn derive_secret(&self, context: &[u8]) -> Result<[u8; 32]> {
            self.key.derive_secret(context)
        }
    }

    async fn until(check: &SignerCheck, wanted: Option<&'static str>) {
        let started = Instant::now();
        while check.failure() != wanted {
            assert!(started.elapsed() < Duration::from_secs(5), "still {:?}, not {wanted:?}", check.failure());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_hanging_and_unchecked_keys_turn_the_check_and_it_recovers_without_piling_up_calls() {
        let flaky = Arc::new(Flaky {
            key: crate::pki::signer::in_memory().unwrap(),
            mode: AtomicU8::new(SIGNS),
            signing: AtomicUsize::new(0),
            most_at_once: AtomicUsize::new(0),
        });
        let root = Root::create(flaky.clone(), "test CA", time::Duration::days(1), false).unwrap();
        let ca = Arc::new(CertificateAuthority::direct(root));
        let every = Duration::from_millis(20);
        let (check, run) = SignerCheck::start_with_timeout(ca, every, Duration::from_millis(100));
        let task = tokio::spawn(run);
        assert_eq!(check.failure(), None, "tested at start");

        flaky.mode.store(FAILS, Ordering::SeqCst);
        until(&check, Some(ROOT_CANNOT_SIGN)).await;
        flaky.mode.store(SIGNS, Ordering::SeqCst);
        until(&check, None).await;

        flaky.mode.store(HANGS, Ordering::SeqCst);
        until(&check, Some(HUNG)).await;
        let asked = Instant::now();
        assert_eq!(check.failure(), Some(HUNG));
        assert!(asked.elapsed() < Duration::from_millis(5), "reading the result never waits on the key");
        tokio::time::sleep(every * 10).await;
        assert_eq!(flaky.most_at_once.load(Ordering::SeqCst), 1, "no second self-test while one hangs");
        flaky.mode.store(SIGNS, Ordering::SeqCst);
        until(&check, None).await;

        task.abort();
        until(&check, Some(OVERDUE)).await;
    }
}
