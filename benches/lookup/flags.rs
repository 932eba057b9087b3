//! Command-line flags of the benches that take numbers.

/// The number given after `flag`; panics, naming the flag, when there is none.
pub fn number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> T {
    value
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{flag} takes a number"))
}
