//! CPython's `_TestArray`.

use super::*;

const SEQ: [i32; 10] = [680, 626, 934, 821, 150, 233, 548, 982, 714, 831];

/// CPython's `f(seq)`: running sums, in place.
fn running_sums(arr: SharedArray<i32>) {
    for i in 1..arr.len() {
        arr.set(i, arr.get(i).unwrap() + arr.get(i - 1).unwrap());
    }
}

fn check_array(arr: SharedArray<i32>) {
    let mut seq = SEQ.to_vec();
    assert_eq!(arr.len(), seq.len());
    assert_eq!(arr.get(3), Some(seq[3]));
    let mut part = [0; 5];
    arr.read_at(2, &mut part); // arr[2:7]
    assert_eq!(part, seq[2..7]);

    arr.write_at(4, &[1, 2, 3, 4]); // arr[4:8] = ...
    seq[4..8].copy_from_slice(&[1, 2, 3, 4]);
    assert_eq!(arr.to_vec(), seq);

    for i in 1..seq.len() {
        seq[i] += seq[i - 1];
    }
    Process::spawn(running_sums, arr.clone())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(arr.to_vec(), seq);
}

#[test]
fn test_array() {
    let arr = SharedArray::<i32>::with_lock(SEQ.len()).unwrap();
    arr.copy_from_slice(&SEQ);
    check_array(arr);
}

#[test]
fn test_array_from_size() {
    for _ in 0..3 {
        let arr = SharedArray::<i32>::new(10).unwrap();
        assert_eq!(arr.len(), 10);
        assert_eq!(arr.to_vec(), vec![0; 10]);
        let range: Vec<i32> = (0..10).collect();
        arr.copy_from_slice(&range);
        assert_eq!(arr.to_vec(), range);
    }
}

#[test]
fn test_rawarray() {
    check_array(SharedArray::from_slice(&SEQ).unwrap());
}

#[test]
fn test_getobj_getlock_obj() {
    let arr1 = SharedArray::<i32>::with_lock(10).unwrap();
    assert!(arr1.get_lock().is_some());
    let arr5 = SharedArray::from_slice(&[0i32; 10]).unwrap();
    assert!(arr5.get_lock().is_none());
}
