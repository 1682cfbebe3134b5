//! Which parameters are blocksync's, and whether their values make sense.

use wasmover_sdk::types::{Error, Parameter};
use wasmover_sdk::{Params, error};

/// Parameters blocksync understands; a spec with any other is not ours.
pub const KNOWN_PARAMETERS: &[&str] = &[
    "address",
    "port",
    "block-size",
    "key-secret",
    "volume-mode",
    "journal-capacity",
    "hashes-capacity",
];

/// Whether `parameters` belong to blocksync.
pub fn claims(parameters: &[Parameter]) -> bool {
    Params::from(parameters.to_vec())
        .unknown(KNOWN_PARAMETERS)
        .is_empty()
}

/// Checks parameters (the `validate` capability).
pub fn validate(parameters: Vec<Parameter>) -> Result<(), Error> {
    let params = Params::from(parameters);
    let unknown = params.unknown(KNOWN_PARAMETERS);
    if !unknown.is_empty() {
        return Err(error(
            "UnknownParameter",
            format!(
                "blocksync does not understand {}; it knows {}",
                unknown.join(", "),
                KNOWN_PARAMETERS.join(", ")
            ),
        ));
    }
    params.parse::<u16>("port")?;
    if let Some(mode) = params.get("volume-mode")
        && !["Filesystem", "Block"].contains(&mode)
    {
        return Err(error(
            "InvalidParameter",
            format!("volume-mode={mode} is neither Filesystem nor Block"),
        ));
    }
    if let Some(size) = params.parse::<u32>("block-size")?
        && !(512..=(1 << 20)).contains(&size)
    {
        return Err(error(
            "InvalidParameter",
            format!("block-size={size} is outside 512..=1048576"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::param;

    #[test]
    fn claims_only_its_own_parameters_and_validates_them() {
        assert!(claims(&[]));
        assert!(claims(&[param("address", "10.0.0.1")]));
        assert!(!claims(&[param("repository", "s3://x")]));
        assert!(validate(vec![param("block-size", "4096")]).is_ok());
        assert_eq!(
            validate(vec![param("block-size", "7")]).unwrap_err().reason,
            "InvalidParameter"
        );
        assert_eq!(
            validate(vec![param("port", "http")]).unwrap_err().reason,
            "InvalidParameter"
        );
        assert_eq!(
            validate(vec![param("colour", "x")]).unwrap_err().reason,
            "UnknownParameter"
        );
        assert!(validate(vec![param("volume-mode", "Block")]).is_ok());
        assert_eq!(
            validate(vec![param("volume-mode", "Raw")])
                .unwrap_err()
                .reason,
            "InvalidParameter"
        );
    }
}
