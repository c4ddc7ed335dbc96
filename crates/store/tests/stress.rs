//! Long concurrency runs, for hunting races by hand: `cargo test -p cachefs-store --test stress
//! -- --ignored --nocapture`.

mod common;

use std::sync::Arc;

use cachefs_store::LocalStore;

#[test]
#[ignore = "slow; run by hand"]
fn stress_puts_gets_and_evictions() {
    let rounds: u64 = std::env::var("STRESS_ROUNDS").map_or(5, |v| v.parse().unwrap());
    for round in 0..rounds {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(tmp.path(), 2 << 20).unwrap());
        common::hammer(&store, 400);
        let stats = store.stats();
        println!("round {round}: {stats:?}");
        assert_eq!(stats.corrupt_found, 0);
    }
}
