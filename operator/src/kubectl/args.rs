//! Checks of the plugin's flag values, before anything is written or
//! created: each refusal names the flag and its rule.

use super::Error;
use crate::crd::{CopyMethod, ServiceType};
use crate::schedule::Schedule;

/// The access modes a PVC may ask for.
const ACCESS_MODES: [&str; 4] = [
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

/// `--copy-method`: `Direct`, `Clone` or `Snapshot`.
pub fn copy_method(value: &str) -> Result<CopyMethod, Error> {
    serde_json::from_value(serde_json::json!(value)).map_err(|_| Error::Invalid {
        rule: "copy-method",
        message: format!("--copy-method {value:?} is none of Direct, Clone, Snapshot"),
    })
}

/// `--service-type`: `ClusterIP`, `NodePort` or `LoadBalancer`.
pub fn service_type(value: &str) -> Result<ServiceType, Error> {
    serde_json::from_value(serde_json::json!(value)).map_err(|_| Error::Invalid {
        rule: "service-type",
        message: format!("--service-type {value:?} is none of ClusterIP, NodePort, LoadBalancer"),
    })
}

/// `--access-mode`: one of a PVC's access modes.
pub fn access_mode(value: &str) -> Result<String, Error> {
    if ACCESS_MODES.contains(&value) {
        return Ok(value.to_owned());
    }
    Err(Error::Invalid {
        rule: "access-mode",
        message: format!(
            "--access-mode {value:?} is none of {}",
            ACCESS_MODES.join(", ")
        ),
    })
}

/// `--capacity`: a storage quantity, digits with an optional fraction
/// and a binary (`Ki` .. `Ei`) or decimal (`k` .. `E`) suffix.
pub fn capacity(value: &str) -> Result<String, Error> {
    const SUFFIXES: [&str; 13] = [
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E",
    ];
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &value[digits.len()..];
    let number = digits
        .split_once('.')
        .map_or((digits, "0"), |(whole, fraction)| (whole, fraction));
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if numeric(number.0) && numeric(number.1) && SUFFIXES.contains(&suffix) {
        return Ok(value.to_owned());
    }
    Err(Error::Invalid {
        rule: "capacity",
        message: format!("--capacity {value:?} is not a storage quantity such as 10Gi or 500M"),
    })
}

/// `--cronspec`: a schedule the operator reads (five fields or an `@`
/// descriptor, as VolSync's).
pub fn cronspec(value: &str) -> Result<String, Error> {
    Schedule::parse(value).map_err(|e| Error::Invalid {
        rule: "cronspec",
        message: format!("--cronspec {value:?}: {e}"),
    })?;
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_and_refusals_name_flag_and_rule() {
        assert_eq!(copy_method("Snapshot").unwrap(), CopyMethod::Snapshot);
        assert_eq!(
            copy_method("Teleport").unwrap_err().to_string(),
            "--copy-method \"Teleport\" is none of Direct, Clone, Snapshot (rule copy-method)"
        );
        assert_eq!(
            service_type("LoadBalancer").unwrap(),
            ServiceType::LoadBalancer
        );
        assert!(service_type("ExternalName").is_err());
        assert_eq!(access_mode("ReadWriteMany").unwrap(), "ReadWriteMany");
        assert!(
            access_mode("rwx")
                .unwrap_err()
                .to_string()
                .ends_with("(rule access-mode)")
        );
        for good in ["10Gi", "1.5Ti", "500M", "1073741824"] {
            capacity(good).unwrap();
        }
        for bad in ["", "Gi", "10 Gi", "10GB", "1.Gi", "-1Gi", "ten"] {
            assert!(capacity(bad).is_err(), "{bad}");
        }
        assert_eq!(cronspec("*/5 * * * *").unwrap(), "*/5 * * * *");
        let e = cronspec("0 0 * * 7").unwrap_err().to_string();
        assert!(
            e.starts_with("--cronspec \"0 0 * * 7\": ") && e.ends_with("(rule cronspec)"),
            "{e}"
        );
    }
}
