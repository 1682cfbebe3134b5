//! The free-form `parameters` of a replication's `mover` section.

use crate::types::{Error, Parameter};

/// Parameters with typed accessors and clear errors.
#[derive(Clone, Debug, Default)]
pub struct Params(Vec<Parameter>);

impl From<Vec<Parameter>> for Params {
    fn from(params: Vec<Parameter>) -> Self {
        Self(params)
    }
}

impl Params {
    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }

    /// `key` parsed as `T`, or `None` when absent.
    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, Error>
    where
        T::Err: std::fmt::Display,
    {
        self.get(key)
            .map(|v| {
                v.parse().map_err(|e| {
                    crate::error("InvalidParameter", format!("parameter {key}={v:?}: {e}"))
                })
            })
            .transpose()
    }

    /// Keys that are not in `known`, in order.
    pub fn unknown<'a>(&'a self, known: &[&str]) -> Vec<&'a str> {
        self.0
            .iter()
            .map(|p| p.key.as_str())
            .filter(|k| !known.contains(k))
            .collect()
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| Parameter {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect::<Vec<_>>()
            .into()
    }

    #[test]
    fn typed_access_and_unknown_keys() {
        let p = params(&[("block-size", "4096"), ("colour", "blue")]);
        assert_eq!(p.parse::<u32>("block-size").unwrap(), Some(4096));
        assert_eq!(p.parse::<u32>("missing").unwrap(), None);
        assert_eq!(p.unknown(&["block-size"]), ["colour"]);
        let err = p.parse::<u32>("colour").unwrap_err();
        assert_eq!(err.reason, "InvalidParameter");
        assert!(err.message.contains("colour"), "{}", err.message);
    }
}
