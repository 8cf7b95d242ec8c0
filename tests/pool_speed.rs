//! The pool's fast paths keep their results: a `map` of numbers reusing
//! the previous call's input buffer (types and lengths changing between
//! calls, calls overlapping), and `map_slice`'s output copied straight out
//! of the arena.

use multiproc::{ErrorKind, Pool};

multiproc::test_support!();

fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn half(x: f32) -> f32 {
    x / 2.0
}

fn neg(x: i8) -> i16 {
    -i16::from(x)
}

fn fails_at_7(x: u64) -> u64 {
    assert!(x != 7, "seven");
    x
}

#[test]
fn number_maps_of_changing_types_and_lengths_in_a_row() {
    let pool = Pool::new(2).unwrap();
    // Long, then short, then longer than both: the spare buffer of the
    // call before is reused, shrunk and grown.
    for n in [100_000u64, 3, 0, 1, 250_000, 17] {
        let out = pool.map(square, 0..n).unwrap();
        assert_eq!(out.len() as u64, n);
        assert!(out.iter().enumerate().all(|(i, &y)| y == square(i as u64)));
        // Another number type between two u64 maps: the spare is u64's.
        let halves = pool.map(half, (0..n).map(|i| i as f32)).unwrap();
        assert_eq!(halves.len() as u64, n);
        assert!(halves.iter().enumerate().all(|(i, &y)| y == i as f32 / 2.0));
        let negs = pool.map(neg, (0..n).map(|i| i as i8)).unwrap();
        assert!(negs
            .iter()
            .enumerate()
            .all(|(i, &y)| y == -i16::from(i as i8)));
    }
    // Through the call's own chunk size and from a Vec (not a range).
    let items: Vec<u64> = (0..10_000).rev().collect();
    let out = pool.with_chunksize(7).map(square, items.clone()).unwrap();
    assert_eq!(out, items.iter().map(|&x| square(x)).collect::<Vec<_>>());
}

#[test]
fn overlapping_number_maps_each_get_their_own_items() {
    let pool = Pool::new(2).unwrap();
    // Warm a spare buffer, then start two maps before either finishes:
    // only one can have the spare; the other collects its own.
    pool.map(square, 0..1000u64).unwrap();
    let a = pool.map_async(square, 0..200_000u64).unwrap();
    let b = pool
        .map_async(square, (0..150_000u64).map(|x| x + 7))
        .unwrap();
    let c = pool.map(square, (0..50_000u64).map(|x| x * 3)).unwrap();
    let a = a.get().unwrap();
    let b = b.get().unwrap();
    assert!(a.iter().enumerate().all(|(i, &y)| y == square(i as u64)));
    assert!(b
        .iter()
        .enumerate()
        .all(|(i, &y)| y == square(i as u64 + 7)));
    assert!(c
        .iter()
        .enumerate()
        .all(|(i, &y)| y == square(i as u64 * 3)));
    assert_eq!((a.len(), b.len(), c.len()), (200_000, 150_000, 50_000));
}

#[test]
fn a_failed_number_map_leaves_the_next_one_whole() {
    let pool = Pool::new(2).unwrap();
    let e = pool.map(fails_at_7, 0..100_000u64).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Panicked);
    assert_eq!(e.item_index(), Some(7));
    let out = pool.map(fails_at_7, 8..60_008u64).unwrap();
    assert_eq!(out, (8..60_008u64).collect::<Vec<_>>());
}

#[test]
fn map_slice_outputs_of_every_width() {
    let pool = Pool::new(2).unwrap();
    // Over 4 MiB of output (huge pages advised) and small ones, with
    // output types narrower and wider than the input.
    let n = 700_000;
    let input: Vec<f64> = (0..n).map(|i| i as f64 * 0.5).collect();
    let out = pool.map_slice(|x: f64| x * 2.0, &input).unwrap();
    assert!(out.iter().enumerate().all(|(i, &y)| y == i as f64));
    let bytes = pool
        .map_slice(|x: f64| (x as u64 % 251) as u8, &input)
        .unwrap();
    assert!(bytes
        .iter()
        .enumerate()
        .all(|(i, &y)| u64::from(y) == (i as u64 / 2) % 251));
    let wide = pool
        .map_slice(|x: u8| [u64::from(x); 3], &bytes[..1001])
        .unwrap();
    assert!(wide
        .iter()
        .zip(&bytes)
        .all(|(w, &b)| *w == [u64::from(b); 3]));
    let units = pool.map_slice(|_: u32| (), &[1u32, 2, 3]).unwrap();
    assert_eq!(units.len(), 3);
    // The arena is reused: a shorter call after a longer one sees only
    // its own elements.
    let short = pool.map_slice(|x: f64| x + 1.0, &input[..5]).unwrap();
    assert_eq!(short, [1.0, 1.5, 2.0, 2.5, 3.0]);
}

#[test]
fn map_slice_in_place_changes_the_type_of_equal_widths() {
    let pool = Pool::new(2).unwrap();
    // Items and results of one size share one arena: each result is
    // written over its own item.
    let input: Vec<f64> = (0..300_000).map(|i| i as f64 + 0.25).collect();
    let out = pool.map_slice(|x: f64| x as u64 * 3, &input).unwrap();
    assert!(out.iter().enumerate().all(|(i, &y)| y == i as u64 * 3));
    let ints: Vec<i32> = (-5000..5000).collect();
    let floats = pool.map_slice(|x: i32| x as f32 * 0.5, &ints).unwrap();
    assert!(floats.iter().zip(&ints).all(|(&y, &x)| y == x as f32 * 0.5));
    // A panic in place fails the call and leaves the pool usable.
    let e = pool
        .map_slice(
            |x: u64| {
                assert!(x != 77_777, "bad item");
                x
            },
            &(0..100_000u64).collect::<Vec<_>>(),
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Panicked);
    let again = pool.map_slice(|x: u64| x + 1, &[1u64, 2, 3]).unwrap();
    assert_eq!(again, [2, 3, 4]);
}

#[test]
fn applies_between_number_maps_change_nothing() {
    let pool = Pool::new(2).unwrap();
    for round in 0..3u64 {
        let out = pool.map(square, round..round + 50_000).unwrap();
        assert!(out.iter().zip(round..).all(|(&y, x)| y == square(x)));
        // One item through the same path; its tiny buffer is not kept.
        assert_eq!(pool.apply(square, 12 + round).unwrap(), square(12 + round));
        assert_eq!(pool.apply(half, 3.0).unwrap(), 1.5);
    }
}
