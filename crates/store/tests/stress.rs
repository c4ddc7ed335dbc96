//! Long concurrency runs, for hunting races by hand: `cargo test -p cachefs-store --test stress
//! -- --ignored --nocapture`.

mod common;

use std::sync::Arc;

use cachefs_store::LocalStore;
use common::{key, noise};

#[test]
#[ignore = "slow; run by hand"]
fn stress_puts_gets_and_evictions() {
    let rounds: u64 = std::env::var("STRESS_ROUNDS").map_or(5, |v| v.parse().unwrap());
    for round in 0..rounds {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(tmp.path(), 2 << 20).unwrap());
        let threads: Vec<_> = (0..6u64)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..400u64 {
                        let shared = noise(i % 13, 20_000);
                        let s = store.put_blob(&shared).unwrap();
                        let own = store.put_blob(&noise(100 + t * 1000 + i, 20_000)).unwrap();
                        let id = key(t * 1000 + i);
                        store.put_result(&id, &noise(i, 300), &[s, own]).unwrap();
                        store.put_manifest(&id, &noise(i, 200)).unwrap();
                        for back in [i, i / 2, i / 3] {
                            let id = key(t * 1000 + back);
                            if let Some(v) = store.get_result(&id).unwrap() {
                                assert_eq!(v, noise(back, 300));
                            }
                            assert_eq!(store.get_manifest(&id).unwrap().unwrap(), noise(back, 200));
                        }
                        if let Some(got) = store.get_blob(&s).unwrap() {
                            assert_eq!(got, shared);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let stats = store.stats();
        println!("round {round}: {stats:?}");
        assert_eq!(stats.corrupt_found, 0);
    }
}
