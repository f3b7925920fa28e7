//! CommitLog benchmarks (criterion; short by default so `cargo bench` takes a couple of minutes).
//!
//! - `append`: 1 KiB messages through the store under ASYNC_FLUSH: 32 concurrent senders, and
//!   batches of 64 (one request, the writer's raw speed); next to the baselines of a plain memcpy
//!   of the same bytes into a memmap2-mapped file (warm pages, and pages never touched before,
//!   which is what appends really write to), and a CRC32 of them.
//! - `read`: `get_messages` of 32 records by queue offset.
//! - `recovery`: reopening a 128 MiB CommitLog with a full verification walk (bytes/s checked).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rocketraft_broker::store::{BrokerMessage, FlushDiskType, MessageStore, StoreConfig};
use rocketraft_common::message::Message;

const MSG: usize = 1024;
const PER_ITER: usize = 64;

fn store_config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        commitlog_segment_size: 256 << 20,
        flush_disk_type: FlushDiskType::AsyncFlush,
        pretouch: true,
        ..StoreConfig::new(dir)
    }
}

fn message(body: &Bytes, queue_id: i32) -> BrokerMessage {
    let mut m = Message::new("BenchTopic", body.clone());
    m.set_tags("TagA");
    BrokerMessage::new(m, queue_id)
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(store_config(dir.path())).expect("open store");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let body = Bytes::from(vec![b'x'; MSG]);
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Bytes((MSG * PER_ITER) as u64));

    group.bench_function("store_put_1KiB_32_senders", |b| {
        b.iter_custom(|iters| {
            let senders = 32;
            let per_sender = iters as usize * PER_ITER / senders;
            rt.block_on(async {
                let start = Instant::now();
                let mut tasks = tokio::task::JoinSet::new();
                for s in 0..senders {
                    let store = Arc::clone(&store);
                    let body = body.clone();
                    tasks.spawn(async move {
                        for _ in 0..per_sender {
                            store
                                .put_message(message(&body, (s % 8) as i32))
                                .await
                                .expect("put");
                        }
                    });
                }
                while let Some(r) = tasks.join_next().await {
                    r.expect("sender");
                }
                start.elapsed()
            })
        })
    });

    let batch: Vec<BrokerMessage> = (0..PER_ITER).map(|_| message(&body, 0)).collect();
    group.bench_function("store_put_batch_64x1KiB", |b| {
        b.iter(|| store.put_messages_blocking(&batch).expect("put batch"))
    });

    // Baseline: the same bytes copied into a mapped file, nothing else.
    let file = tempfile::tempfile_in(dir.path()).expect("file");
    let map_len = 256usize << 20;
    file.set_len(map_len as u64).expect("set_len");
    // SAFETY: a private temporary file nobody else maps.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("map");
    map.iter_mut().step_by(4096).for_each(|b| *b = 0);
    let chunk = vec![b'x'; MSG];
    let mut cursor = 0usize;
    group.bench_function("baseline_memcpy_mmap_64x1KiB", |b| {
        b.iter(|| {
            for _ in 0..PER_ITER {
                if cursor + MSG > map_len {
                    cursor = 0;
                }
                map[cursor..cursor + MSG].copy_from_slice(&chunk);
                cursor += MSG;
            }
        })
    });
    // The same, but always into memory never touched before (as the store's appends are):
    // on small VMs first-touch page-cache allocation, not the copy, sets the pace.
    let fresh_file = tempfile::tempfile_in(dir.path()).expect("file");
    let fresh_len = 2usize << 30;
    fresh_file.set_len(fresh_len as u64).expect("set_len");
    // SAFETY: a private temporary file nobody else maps.
    let mut fresh = unsafe { memmap2::MmapMut::map_mut(&fresh_file) }.expect("map");
    let mut fresh_cursor = 0usize;
    group.bench_function("baseline_memcpy_fresh_mmap_64x1KiB", |b| {
        b.iter(|| {
            for _ in 0..PER_ITER {
                if fresh_cursor + MSG > fresh_len {
                    fresh_cursor = 0;
                }
                fresh[fresh_cursor..fresh_cursor + MSG].copy_from_slice(&chunk);
                fresh_cursor += MSG;
            }
        })
    });
    drop(fresh);
    let bytes = vec![b'x'; MSG * PER_ITER];
    group.bench_function("baseline_crc32_64KiB", |b| {
        b.iter(|| crc32fast::hash(std::hint::black_box(&bytes)))
    });
    group.finish();
    store.shutdown().expect("shutdown");
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(store_config(dir.path())).expect("open store");
    let body = Bytes::from(vec![b'r'; MSG]);
    let total = 50_000i64;
    let batch: Vec<BrokerMessage> = (0..100).map(|_| message(&body, 0)).collect();
    for _ in 0..total / 100 {
        store.put_messages_blocking(&batch).expect("fill");
    }
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Bytes((MSG * 32) as u64));
    let mut offset = 0i64;
    group.bench_function("get_messages_32x1KiB", |b| {
        b.iter(|| {
            let r = store.get_messages("g", "BenchTopic", 0, offset, 32, 1 << 20, &|_| true);
            offset = if r.next_begin_offset + 32 >= total {
                0
            } else {
                r.next_begin_offset
            };
            r.buffer_total_size
        })
    });
    group.finish();
    store.shutdown().expect("shutdown");
}

fn recovery(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        commitlog_segment_size: 64 << 20,
        recover_full_scan: true,
        ..store_config(dir.path())
    };
    let body = Bytes::from(vec![b'z'; MSG]);
    let checked = {
        let store = MessageStore::open(cfg.clone()).expect("open store");
        let batch: Vec<BrokerMessage> = (0..100).map(|_| message(&body, 1)).collect();
        while store.max_phy_offset() < 128 << 20 {
            store.put_messages_blocking(&batch).expect("fill");
        }
        store.shutdown().expect("shutdown");
        store.max_phy_offset()
    };
    let mut group = c.benchmark_group("recovery");
    group.throughput(Throughput::Bytes(checked as u64));
    group.bench_function("full_scan_128MiB", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let store = MessageStore::open(cfg.clone()).expect("reopen");
                spent += start.elapsed();
                assert!(store.recovery_report().bytes_checked > 0);
                store.shutdown().expect("shutdown");
            }
            spent
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = append, read, recovery
}
criterion_main!(benches);
