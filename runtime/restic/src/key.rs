//! Key files: the master key, encrypted under a key derived from a
//! password with scrypt.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::crypto::{Key, KeyJson};
use crate::error::{Error, Result};

/// scrypt's cost for new key files: N = 2^15, r = 8, p = 1 (32 MiB, a
/// fraction of a second), as restic's calibration picks on common machines.
const NEW_LOG_N: u8 = 15;
const NEW_R: u32 = 8;
const NEW_P: u32 = 1;

/// The JSON of a key file (`keys/<id>`).
#[derive(Serialize, Deserialize)]
pub struct KeyFile {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    hostname: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    username: String,
    kdf: String,
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
    created: String,
    data: String,
    salt: String,
}

impl KeyFile {
    /// A key file holding `master` under `password`.
    pub fn new(
        master: &Key,
        password: &str,
        hostname: String,
        username: String,
    ) -> Result<KeyFile> {
        let salt: [u8; 64] = rand::random();
        let user_key = derive(password, &salt, NEW_LOG_N, NEW_R, NEW_P, "new key file")?;
        let master_json = serde_json::to_vec(&master.to_json()).expect("the master key serializes");
        Ok(KeyFile {
            hostname,
            username,
            kdf: "scrypt".into(),
            n: 1 << NEW_LOG_N,
            r: NEW_R,
            p: NEW_P,
            created: crate::snapshot::now(),
            data: BASE64.encode(user_key.seal(&master_json)),
            salt: BASE64.encode(salt),
        })
    }

    /// Parses a key file's bytes; `file` names it in errors.
    pub fn parse(bytes: &[u8], file: &str) -> Result<KeyFile> {
        serde_json::from_slice(bytes).map_err(|source| Error::Json {
            file: file.to_owned(),
            source,
        })
    }

    /// The master key if `password` opens this key file, `None` if the MAC
    /// says it is the wrong password.
    pub fn open(&self, password: &str, file: &str) -> Result<Option<Key>> {
        if self.kdf != "scrypt" {
            return Err(Error::format(
                file,
                format!("unknown key derivation function {:?}", self.kdf),
            ));
        }
        if !self.n.is_power_of_two() || self.n < 2 {
            return Err(Error::format(
                file,
                format!("scrypt N = {} is not a power of two", self.n),
            ));
        }
        let b64 = |s: &str, field: &str| {
            BASE64
                .decode(s)
                .map_err(|e| Error::format(file, format!("field {field} is not base64: {e}")))
        };
        let salt = b64(&self.salt, "salt")?;
        let data = b64(&self.data, "data")?;
        let user_key = derive(
            password,
            &salt,
            self.n.trailing_zeros() as u8,
            self.r,
            self.p,
            file,
        )?;
        let master_json = match user_key.open(&data, file) {
            Ok(plain) => plain,
            Err(Error::Mac { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let json: KeyJson = serde_json::from_slice(&master_json).map_err(|source| Error::Json {
            file: file.to_owned(),
            source,
        })?;
        Key::from_json(&json, file).map(Some)
    }
}

fn derive(password: &str, salt: &[u8], log_n: u8, r: u32, p: u32, file: &str) -> Result<Key> {
    let params = scrypt::Params::new(log_n, r, p, 64).map_err(|e| {
        Error::format(
            file,
            format!("scrypt parameters N=2^{log_n} r={r} p={p}: {e}"),
        )
    })?;
    let mut out = [0; 64];
    scrypt::scrypt(password.as_bytes(), salt, &params, &mut out)
        .expect("64 bytes is a valid scrypt output length");
    Ok(Key::from_bytes(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_opens_with_its_password_only() {
        let master = Key::random();
        let file = KeyFile::new(&master, "right", "h".into(), "u".into()).unwrap();
        let bytes = serde_json::to_vec(&file).unwrap();
        let file = KeyFile::parse(&bytes, "k").unwrap();
        let opened = file
            .open("right", "k")
            .unwrap()
            .expect("the right password opens it");
        assert_eq!(opened.open(&master.seal(b"x"), "f").unwrap(), b"x");
        assert!(file.open("wrong", "k").unwrap().is_none());
    }
}
