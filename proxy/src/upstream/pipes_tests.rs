//! Kept pipes: emptied before they serve again, never kept with a byte in
//! them, bounded by their total capacity.

use super::*;

/// Writes `bytes` into `pipe` behind the pool's back: its `len` says
/// nothing of them.
fn write_unaccounted(pipe: &Pipe, bytes: &[u8]) {
    let written = rustix::io::write(&pipe.write, bytes).expect("write into the pipe");
    assert_eq!(written, bytes.len());
}

fn unread(pipe: &Pipe) -> u64 {
    rustix::io::ioctl_fionread(&pipe.read).expect("FIONREAD")
}

#[test]
fn a_pipe_given_back_with_bytes_in_it_is_emptied_and_served_again() {
    let pool = PipePool::new(KEEP_BYTES, None);
    let mut pipe = pool.take(200 * 1024).expect("a pipe");
    let capacity = pipe.capacity;
    assert!(capacity >= 200 * 1024, "{capacity}");
    write_unaccounted(&pipe, &[7u8; 4096]);
    pipe.len = 4096;
    pool.give_back(pipe);
    assert_eq!(pool.idle_pipes(), 1);

    let again = pool.take(100 * 1024).expect("the kept pipe");
    assert_eq!(again.capacity, capacity, "the kept pipe, not a new one");
    assert_eq!(pool.idle_pipes(), 0);
    assert_eq!(again.len, 0);
    assert_eq!(unread(&again), 0, "nothing of the last call is left");
}

#[test]
fn a_pipe_holding_more_than_it_says_is_closed_not_kept() {
    let pool = PipePool::new(KEEP_BYTES, None);
    let mut pipe = pool.take(64 * 1024).expect("a pipe");
    write_unaccounted(&pipe, &[1u8; 100]);
    pipe.len = 60;
    pool.give_back(pipe);
    assert_eq!(
        pool.idle_pipes(),
        0,
        "40 bytes would have reached the next call"
    );
}

#[test]
fn the_smallest_kept_pipe_that_fits_is_taken() {
    let pool = PipePool::new(KEEP_BYTES, None);
    let large = pool.take(SEGMENT_BYTES).expect("large");
    let small = pool.take(MIN_SEGMENT_BYTES).expect("small");
    let (large_capacity, small_capacity) = (large.capacity, small.capacity);
    assert!(small_capacity < large_capacity);
    pool.give_back(large);
    pool.give_back(small);
    assert_eq!(
        pool.take(MIN_SEGMENT_BYTES).expect("kept").capacity,
        small_capacity
    );
    assert_eq!(
        pool.take(MIN_SEGMENT_BYTES).expect("kept").capacity,
        large_capacity,
        "a larger pipe serves when no smaller one is kept"
    );
    assert_eq!(pool.idle_pipes(), 0);
}

#[test]
fn what_is_kept_is_bounded_by_capacity_and_number() {
    let pool = PipePool::new(2 * SEGMENT_BYTES, None);
    let pipes: Vec<Pipe> = (0..3)
        .map(|_| pool.take(SEGMENT_BYTES).expect("a pipe"))
        .collect();
    for pipe in pipes {
        pool.give_back(pipe);
    }
    assert_eq!(pool.idle_pipes(), 2, "the third is closed");

    let pool = PipePool::new(KEEP_BYTES, None);
    let small: Vec<Pipe> = (0..KEEP_PIPES + 4)
        .map(|_| pool.take(MIN_SEGMENT_BYTES).expect("a pipe"))
        .collect();
    for pipe in small {
        pool.give_back(pipe);
    }
    assert_eq!(pool.idle_pipes(), KEEP_PIPES, "and by number");

    let none = PipePool::new(0, None);
    let pipe = none.take(SEGMENT_BYTES).expect("a pipe");
    none.give_back(pipe);
    assert_eq!(none.idle_pipes(), 0);
}

#[test]
fn a_send_cut_short_leaves_a_pipe_that_empty_makes_reusable() {
    let pool = PipePool::new(KEEP_BYTES, None);
    let mut pipe = pool.take(MIN_SEGMENT_BYTES).expect("a pipe");
    write_unaccounted(&pipe, &[3u8; 1000]);
    pipe.len = 1000;
    assert!(pool.empty(&mut pipe));
    assert_eq!((pipe.len, unread(&pipe)), (0, 0));
}

#[test]
fn the_pool_counts_pipes_kept_and_pipes_made() {
    let metrics = PipeMetrics {
        kept: IntGauge::new("kept", "kept").expect("gauge"),
        made: IntCounter::new("made", "made").expect("counter"),
    };
    let (kept, made) = (metrics.kept.clone(), metrics.made.clone());
    let pool = PipePool::new(KEEP_BYTES, Some(metrics));
    let first = pool.take(SEGMENT_BYTES).expect("a pipe");
    let second = pool.take(SEGMENT_BYTES).expect("a pipe");
    assert_eq!((made.get(), kept.get()), (2, 0));
    pool.give_back(first);
    pool.give_back(second);
    assert_eq!(kept.get(), 2);
    let _again = pool.take(SEGMENT_BYTES).expect("a kept pipe");
    assert_eq!(
        (made.get(), kept.get()),
        (2, 1),
        "taken from the pool, none made"
    );
}
