//! Collapses concurrent calls with the same key into one.

use std::{collections::HashMap, future::Future, sync::Arc, sync::Mutex};

use futures_util::{
    FutureExt,
    future::{BoxFuture, Shared},
};

type Flight<T> = Shared<BoxFuture<'static, T>>;

/// Concurrent `run` calls with the same key share the first caller's future.
pub struct SingleFlight<T: Clone> {
    flights: Arc<Mutex<HashMap<String, Flight<T>>>>,
}

impl<T: Clone> Default for SingleFlight<T> {
    fn default() -> Self {
        Self { flights: Arc::default() }
    }
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    /// Runs `work` unless a call with `key` is already in flight, in which case its result
    /// is shared. The work runs on its own task, so it finishes (and leaves the table) even
    /// if every caller goes away, e.g. because the client disconnected.
    pub async fn run(&self, key: &str, work: impl Future<Output = T> + Send + 'static) -> T {
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(existing) = flights.get(key) {
                existing.clone()
            } else {
                let table = Arc::clone(&self.flights);
                let owned_key = key.to_owned();
                let flight = async move {
                    let result = work.await;
                    table.lock().unwrap_or_else(|e| e.into_inner()).remove(&owned_key);
                    result
                }
                .boxed()
                .shared();
                flights.insert(key.to_owned(), flight.clone());
                tokio::spawn(flight.clone());
                flight
            }
        };
        flight.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_calls_share_one_run_and_later_calls_run_again() {
        let sf = Arc::new(SingleFlight::<usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let calls = (0..10).map(|_| {
            let (sf, runs) = (sf.clone(), runs.clone());
            tokio::spawn(async move {
                sf.run("k", async move {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    runs.fetch_add(1, Ordering::SeqCst)
                })
                .await
            })
        });
        for call in calls.collect::<Vec<_>>() {
            assert_eq!(call.await.unwrap(), 0);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let r2 = runs.clone();
        assert_eq!(sf.run("k", async move { r2.fetch_add(1, Ordering::SeqCst) }).await, 1);
    }
}
