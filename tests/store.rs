//! The store's streamed reads and writes against a real Redis: values
//! larger than one slice land byte for byte, a refused transaction leaves
//! the old value whole, and a large read comes back exact.

use chrono::Utc;
use kit::Harness;
use precache::model::RawJson;
use precache::store::{Entry, Keys, Store, WriteBatch};

/// An entry of `n` records, each about 1 KB, tagged so values differ.
fn entry(n: usize, tag: &str) -> Entry {
    let items = (0..n).map(|i| {
        RawJson::from(format!(
            "{{\"id\":{i},\"tag\":\"{tag}\",\"pad\":\"{}\"}}",
            "x".repeat(1000)
        ))
    });
    Entry::new(items, Utc::now())
}

#[test]
fn a_value_of_many_slices_is_written_whole_or_not_at_all() {
    let h = Harness::new("store").redis().build();
    let redis = h.redis();
    let mut store = Store::new(&redis.url(), Keys::default()).unwrap();
    // About 3.5 MB: several SET/APPEND slices, and more than one read slice.
    let first = entry(3500, "first");
    let batch = WriteBatch {
        sets: vec![("big".into(), first.clone())],
        ..WriteBatch::default()
    };
    store.apply(&batch).unwrap();
    let stored = redis.get("big").unwrap();
    assert_eq!(stored, first.to_text());
    assert_eq!(stored.len(), first.len());
    let parsed: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(parsed["data"].as_array().unwrap().len(), 3500);

    // A command Redis refuses to queue voids the whole transaction: the
    // old value stays, not half of the new one.
    let second = entry(5000, "second");
    let refused = WriteBatch {
        sets: vec![("big".into(), second.clone())],
        commands: vec![redis::cmd("NOSUCHCOMMAND").arg("x").to_owned()],
        ..WriteBatch::default()
    };
    let err = store.apply(&refused).unwrap_err();
    assert!(err.to_string().contains("MULTI/EXEC"), "{err}");
    assert_eq!(redis.get("big").unwrap(), first.to_text());

    // The store recovers and the same value lands on the next try.
    let batch = WriteBatch {
        sets: vec![("big".into(), second.clone())],
        ..WriteBatch::default()
    };
    store.apply(&batch).unwrap();
    assert_eq!(
        store.get_large("big", None).unwrap(),
        Some(second.to_text())
    );
    // A length found earlier that is no longer true (the value changed
    // since the run's check) still reads the value whole.
    let len = second.to_text().len();
    assert!(len > 4 << 20, "read in slices");
    for stale in [len - 10, len + 10, len / 2] {
        assert_eq!(
            store.get_large("big", Some(stale)).unwrap(),
            Some(second.to_text()),
            "known length {stale} of {len}"
        );
    }
    assert_eq!(
        store.get_large("big", Some(len)).unwrap(),
        Some(second.to_text())
    );
    assert_eq!(store.get_large("absent", None).unwrap(), None);
    assert_eq!(store.get_large("absent", Some(10)).unwrap(), None);
    let small = entry(2, "small");
    store
        .apply(&WriteBatch {
            sets: vec![("small".into(), small.clone())],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(
        store.get_large("small", None).unwrap(),
        Some(small.to_text())
    );
    let small_len = small.to_text().len();
    assert_eq!(
        store.get_large("small", Some(small_len + 3)).unwrap(),
        Some(small.to_text())
    );
}
