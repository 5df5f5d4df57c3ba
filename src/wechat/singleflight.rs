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

/// A key's call: in flight, or its answer kept for the replay window. Only the answer is
/// kept, not the shared future that produced it (its waker list and state).
enum Entry<T> {
    Flying(Flight<T>),
    Answered(T),
}

struct Table<T> {
    /// Calls in flight and answers still inside the replay window.
    entries: HashMap<Arc<str>, Entry<T>>,
    /// Kept answers in completion order; the window is fixed, so expiry order too.
    expiries: VecDeque<(Instant, Arc<str>)>,
}

/// `run` calls with the same key share one execution of the work. A result that `keep`
/// accepts is handed to later callers for `window` after it finished, and at most
/// `capacity` of them are kept: past that, the oldest goes first; any other result leaves
/// the table at once, so the next caller tries again.
pub struct SingleFlight<T: Clone> {
    table: Arc<Mutex<Table<T>>>,
    window: Duration,
    capacity: usize,
    keep: fn(&T) -> bool,
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    /// A table that reuses up to `capacity` results accepted by `keep` for `window`.
    pub fn new(window: Duration, capacity: usize, keep: fn(&T) -> bool) -> Self {
        let table = Table { entries: HashMap::new(), expiries: VecDeque::new() };
        Self { table: Arc::new(Mutex::new(table)), window, capacity, keep }
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
            match table.entries.get(key) {
                Some(Entry::Answered(answer)) => return answer.clone(),
                Some(Entry::Flying(flight)) => flight.clone(),
                None => {
                    let key: Arc<str> = Arc::from(key);
                    let (shared, owned_key, window, capacity, keep) =
                        (Arc::clone(&self.table), key.clone(), self.window, self.capacity, self.keep);
                    let flight = async move {
                        // A panic must not leave an entry that re-panics every later caller.
                        let outcome = std::panic::AssertUnwindSafe(work).catch_unwind().await;
                        let mut table = lock(&shared);
                        match &outcome {
                            Ok(result) if keep(result) && capacity > 0 => {
                                while table.expiries.len() >= capacity {
                                    evict_oldest(&mut table);
                                }
                                table.entries.insert(owned_key.clone(), Entry::Answered(result.clone()));
                                table.expiries.push_back((Instant::now() + window, owned_key));
                            }
                            _ => _ = table.entries.remove(&owned_key),
                        }
                        drop(table);
                        outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    }
                    .boxed()
                    .shared();
                    table.entries.insert(key, Entry::Flying(flight.clone()));
                    tokio::spawn(flight.clone());
                    flight
                }
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
        evict_oldest(table);
    }
}

fn evict_oldest<T>(table: &mut Table<T>) {
    if let Some((_, key)) = table.expiries.pop_front()
        && matches!(table.entries.get(&key), Some(Entry::Answered(_)))
    {
        table.entries.remove(&key);
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
        let sf = Arc::new(SingleFlight::<usize>::new(Duration::ZERO, 10, |_| true));
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
        let sf = SingleFlight::<usize>::new(Duration::from_millis(100), 10, |_| true);
        let runs = Arc::new(AtomicUsize::new(0));
        assert_eq!(sf.run("k", counting(&runs, 0)).await, 0);
        assert_eq!(sf.run("k", counting(&runs, 0)).await, 0, "reused inside the window");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(sf.run("k", counting(&runs, 0)).await, 1, "run again after the window");
        assert!(lock(&sf.table).entries.len() <= 1);
    }

    #[tokio::test]
    async fn work_finishes_and_is_kept_when_every_caller_went_away() {
        let sf = SingleFlight::<usize>::new(Duration::from_secs(60), 10, |_| true);
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
        let sf = Arc::new(SingleFlight::<usize>::new(Duration::from_secs(60), 10, |_| true));
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
        let sf = SingleFlight::<usize>::new(Duration::from_secs(60), 10, |n| *n > 0);
        let runs = Arc::new(AtomicUsize::new(0));
        assert_eq!(sf.run("k", counting(&runs, 0)).await, 0);
        assert_eq!(sf.run("k", counting(&runs, 0)).await, 1);
        assert_eq!(sf.run("k", counting(&runs, 0)).await, 1, "1 is kept");
    }

    #[tokio::test]
    async fn past_its_capacity_the_table_forgets_the_oldest_answers_first() {
        let sf = SingleFlight::<usize>::new(Duration::from_secs(60), 2, |_| true);
        let runs = Arc::new(AtomicUsize::new(0));
        for key in ["a", "b", "c"] {
            sf.run(key, counting(&runs, 0)).await;
        }
        assert_eq!(lock(&sf.table).entries.len(), 2, "more answers kept than the capacity");
        assert_eq!(sf.run("c", counting(&runs, 0)).await, 2, "the newest answer was not kept");
        assert_eq!(sf.run("b", counting(&runs, 0)).await, 1, "the second newest answer was not kept");
        assert_eq!(sf.run("a", counting(&runs, 0)).await, 3, "the oldest answer was kept past the capacity");
    }

    #[tokio::test]
    async fn a_kept_answer_holds_the_result_only() {
        let sf = SingleFlight::<usize>::new(Duration::from_secs(60), 10, |_| true);
        let runs = Arc::new(AtomicUsize::new(0));
        sf.run("k", counting(&runs, 0)).await;
        assert!(matches!(lock(&sf.table).entries.get("k"), Some(Entry::Answered(0))));
    }
}
