//! Names of POSIX / Windows shared-memory objects, for every platform.
//!
//! `/mp` followed by 128 random bits in lowercase base32: 29 characters in
//! all, 28 after the `/` (macOS refuses more than 30, `PSHMNAMLEN` is 31
//! with the terminator). The prefix says whose objects they are; the random
//! part makes them unguessable.

use std::io;

/// The prefix of every object name this crate creates.
pub(crate) const PREFIX: &str = "/mp";

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// 128 bits in 5-bit digits.
const DIGITS: usize = 26;

/// A fresh unguessable name.
pub(crate) fn random_name() -> io::Result<String> {
    let mut bits = [0u8; 16];
    getrandom::fill(&mut bits).map_err(|e| io::Error::other(format!("getrandom: {e}")))?;
    let mut n = u128::from_le_bytes(bits);
    let mut name = String::with_capacity(PREFIX.len() + DIGITS);
    name.push_str(PREFIX);
    for _ in 0..DIGITS {
        name.push(ALPHABET[(n & 31) as usize] as char);
        n >>= 5;
    }
    Ok(name)
}

/// `true` for exactly the names [`random_name`] makes. Anything else a
/// peer sends is refused before it reaches the OS (the name also becomes
/// part of Windows object names and, on macOS, a POSIX shm name).
// Linux opens segments by fd, not by name; there only tests use it.
#[cfg_attr(any(target_os = "linux", target_os = "android"), allow(dead_code))]
pub(crate) fn is_valid_name(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .is_some_and(|rest| rest.len() == DIGITS && rest.bytes().all(|b| ALPHABET.contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_random_and_valid() {
        let a = random_name().unwrap();
        let b = random_name().unwrap();
        assert_ne!(a, b);
        assert!(a.len() - 1 <= 30, "{a} too long for macOS");
        assert!(is_valid_name(&a));
        for bad in [
            "",
            "/mp",
            "mpabc",
            "/mp../../../../etc/passwd",
            &a[..a.len() - 1],
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        assert!(!is_valid_name(&a.to_uppercase()));
    }
}
