//! Names of POSIX / Windows shared-memory objects, for every platform.
//!
//! The crate's own: `/mp` followed by 128 random bits in lowercase base32:
//! 29 characters in all, 28 after the `/` (macOS refuses more than 30,
//! `PSHMNAMLEN` is 31 with the terminator). The prefix says whose objects
//! they are; the random part makes them unguessable.
//!
//! A caller's (`SharedMemory::builder().name(..)`, `SharedMemory::open`):
//! checked by [`user_name`] before it reaches the OS.

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

/// The longest name a caller may choose, in bytes, without the leading
/// `/`: Linux keeps named objects as files in `/dev/shm` (`NAME_MAX`);
/// macOS refuses a POSIX shm name of more than `PSHMNAMLEN` = 31 bytes with
/// its `/`; Windows object names may be longer, but a name that works
/// everywhere is worth more.
#[cfg(target_vendor = "apple")]
pub(crate) const MAX_USER_NAME: usize = 30;
/// See the Apple variant.
#[cfg(not(target_vendor = "apple"))]
pub(crate) const MAX_USER_NAME: usize = 255;

/// Checks a caller's name for a named object and returns it without its
/// leading `/` (optional, as in Python on POSIX: `"/x"` and `"x"` are one
/// object). Refused: empty, `.` and `..`, longer than [`MAX_USER_NAME`]
/// bytes, or with `/` or NUL inside (and `\`, which Windows reserves for
/// its namespaces). The error says which rule.
pub(crate) fn user_name(name: &str) -> Result<&str, String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let why = if bare.is_empty() {
        Some("it is empty".to_string())
    } else if bare == "." || bare == ".." {
        Some("`.` and `..` name directories".to_string())
    } else if bare.len() > MAX_USER_NAME {
        Some(format!(
            "it is {} bytes long, the limit here is {MAX_USER_NAME}",
            bare.len()
        ))
    } else if bare.contains('/') {
        Some("only a leading `/` is allowed".to_string())
    } else if bare.contains('\0') {
        Some("it contains NUL".to_string())
    } else if bare.contains('\\') {
        Some("`\\` is reserved (Windows namespaces)".to_string())
    } else {
        None
    };
    match why {
        None => Ok(bare),
        Some(why) => Err(format!("invalid shared-memory name {name:?}: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_checked_and_lose_their_slash() {
        assert_eq!(user_name("/x"), Ok("x"));
        assert_eq!(user_name("x"), Ok("x"));
        assert_eq!(user_name("psm_1.2-ü"), Ok("psm_1.2-ü"));
        let longest = "a".repeat(MAX_USER_NAME);
        assert_eq!(user_name(&longest), Ok(longest.as_str()));
        let too_long = "a".repeat(MAX_USER_NAME + 1);
        for bad in ["", "/", "//x", "a/b", "a\0b", ".", "/..", "a\\b", &too_long] {
            let e = user_name(bad).unwrap_err();
            assert!(e.contains("invalid shared-memory name"), "{bad}: {e}");
        }
    }

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
