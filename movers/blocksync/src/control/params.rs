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
    "bandwidth-limit",
    "compress-level",
    "attributes",
];

/// The least `bandwidth-limit`: below it a transfer barely moves, and
/// its peer's idle timeout would declare it dead.
const MIN_BANDWIDTH: u64 = 1 << 10;

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
    bandwidth_limit(&params)?;
    compress_level(&params)?;
    attributes(&params)?;
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

/// The parameter `compress-level`: how literals are compressed on the
/// wire, `off` or a zstd level (1 to 19, or -7 to -1 for speed);
/// `None` when absent, for the host's default (3 across a network).
pub fn compress_level(params: &Params) -> Result<Option<Option<i32>>, Error> {
    let Some(text) = params.get("compress-level") else {
        return Ok(None);
    };
    if text == "off" {
        return Ok(Some(None));
    }
    match text.parse::<i32>() {
        Ok(level) if (1..=19).contains(&level) || (-7..=-1).contains(&level) => {
            Ok(Some(Some(level)))
        }
        _ => Err(error(
            "InvalidParameter",
            format!("compress-level={text} is neither off nor a zstd level (1 to 19, or -7 to -1)"),
        )),
    }
}

/// The parameter `attributes`: whether extended attributes and POSIX
/// ACLs are copied (`true`, the default, as rsync's `-AX`) or not.
pub fn attributes(params: &Params) -> Result<bool, Error> {
    Ok(params.parse::<bool>("attributes")?.unwrap_or(true))
}

/// The parameter `bandwidth-limit`: the most bytes a second the agent
/// sends, as `10485760`, `10M` (10^6) or `10Mi` (2^20), with `k`/`Ki`,
/// `M`/`Mi`, `G`/`Gi`; at least 1Ki.
pub(super) fn bandwidth_limit(params: &Params) -> Result<Option<u64>, Error> {
    let Some(text) = params.get("bandwidth-limit") else {
        return Ok(None);
    };
    let invalid = |why: &str| {
        error(
            "InvalidParameter",
            format!(
                "bandwidth-limit={text} {why}: it is bytes per second, a whole number with an \
                 optional suffix k, M, G (powers of 1000) or Ki, Mi, Gi (powers of 1024), \
                 like 10Mi, at least 1Ki"
            ),
        )
    };
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits);
    let unit: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return Err(invalid("has an unknown suffix")),
    };
    let rate = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| invalid("is not a number of bytes per second"))?;
    if rate < MIN_BANDWIDTH {
        return Err(invalid("is too low"));
    }
    Ok(Some(rate))
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
        assert!(validate(vec![param("bandwidth-limit", "10Mi")]).is_ok());
        assert_eq!(
            validate(vec![param("bandwidth-limit", "fast")])
                .unwrap_err()
                .reason,
            "InvalidParameter"
        );
        assert_eq!(
            validate(vec![param("volume-mode", "Raw")])
                .unwrap_err()
                .reason,
            "InvalidParameter"
        );
    }

    #[test]
    fn compression_is_off_or_a_zstd_level_and_attributes_a_switch() {
        let level = |text: &str| compress_level(&Params::from(vec![param("compress-level", text)]));
        assert_eq!(level("off").unwrap(), Some(None));
        assert_eq!(level("3").unwrap(), Some(Some(3)));
        assert_eq!(level("-7").unwrap(), Some(Some(-7)));
        assert_eq!(compress_level(&Params::default()).unwrap(), None);
        for bad in ["0", "20", "-8", "fast", ""] {
            let e = level(bad).unwrap_err();
            assert_eq!(e.reason, "InvalidParameter");
            assert!(
                e.message.starts_with(&format!("compress-level={bad} ")),
                "{}",
                e.message
            );
        }
        let switch = |text: &str| attributes(&Params::from(vec![param("attributes", text)]));
        assert!(attributes(&Params::default()).unwrap());
        assert!(!switch("false").unwrap());
        assert_eq!(switch("no").unwrap_err().reason, "InvalidParameter");
    }

    #[test]
    fn a_bandwidth_limit_is_bytes_a_second_with_a_unit() {
        let limit =
            |text: &str| bandwidth_limit(&Params::from(vec![param("bandwidth-limit", text)]));
        assert_eq!(limit("1048576").unwrap(), Some(1 << 20));
        assert_eq!(limit("10Mi").unwrap(), Some(10 << 20));
        assert_eq!(limit("500k").unwrap(), Some(500_000));
        assert_eq!(limit("2G").unwrap(), Some(2_000_000_000));
        assert_eq!(limit("1Ki").unwrap(), Some(1024));
        assert_eq!(bandwidth_limit(&Params::default()).unwrap(), None);
        for (bad, why) in [
            ("10MB", "has an unknown suffix"),
            ("-1", "has an unknown suffix"),
            ("Mi", "is not a number"),
            ("1.5Mi", "has an unknown suffix"),
            ("99999999999Gi", "is not a number"),
            ("1023", "is too low"),
            ("0", "is too low"),
        ] {
            let e = limit(bad).unwrap_err();
            assert_eq!(e.reason, "InvalidParameter");
            assert!(
                e.message
                    .starts_with(&format!("bandwidth-limit={bad} {why}")),
                "{}",
                e.message
            );
        }
    }
}
