//! Load drivers: N concurrent loops of one async call for a fixed time, with per-call latencies.

use std::future::Future;
use std::time::{Duration, Instant};

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub ok: u64,
    pub errors: u64,
    pub seconds: f64,
    latencies_us: Vec<u32>,
}

impl Stats {
    /// Successful calls per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 { self.ok as f64 / self.seconds } else { 0.0 }
    }

    /// Adds another run's results (for runs measured in slices).
    pub fn merge(&mut self, other: Stats) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.seconds += other.seconds;
        self.latencies_us.extend(other.latencies_us);
        self.latencies_us.sort_unstable();
    }

    /// Latency percentile (0..=100) in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let index = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        f64::from(self.latencies_us[index]) / 1000.0
    }
}

/// Runs `streams` concurrent loops of `call(stream, n)` for `duration` after a short warm-up that is not counted.
/// `call` returns whether the call succeeded.
pub async fn run<F, Fut>(streams: usize, duration: Duration, call: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let warmup = Duration::from_millis(500).min(duration / 4);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for stream in 0..streams {
        let call = call.clone();
        tasks.spawn(async move {
            let (mut ok, mut errors, mut latencies) = (0u64, 0u64, Vec::with_capacity(16 * 1024));
            let mut n = 0u64;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let success = call(stream, n).await;
                n += 1;
                if t >= measure_from {
                    if success {
                        ok += 1;
                        latencies.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    } else {
                        errors += 1;
                    }
                }
            }
            (ok, errors, latencies)
        });
    }
    let mut stats = Stats::default();
    while let Some(Ok((ok, errors, latencies))) = tasks.join_next().await {
        stats.ok += ok;
        stats.errors += errors;
        stats.latencies_us.extend(latencies);
    }
    stats.seconds =
        (Instant::now().min(end + Duration::from_secs(60)) - measure_from).as_secs_f64().max(duration.as_secs_f64());
    stats.latencies_us.sort_unstable();
    stats
}

/// Runs `work` on `threads` OS threads for `duration`; returns operations per second.
pub fn run_threads(threads: usize, duration: Duration, work: impl Fn() + Send + Sync + Clone + 'static) -> f64 {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let work = work.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while start.elapsed() < duration {
                    work();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    total as f64 / start.elapsed().as_secs_f64()
}
