//! Resident registration numbers. The number itself is never stored or
//! logged: accounts and the registry are joined by a keyed blind index
//! (HMAC-SHA256 under a key that does not live in the database).

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

use crate::error::ApiError;

/// A well-formed resident registration number: `YYMMDD-NNNNNNN`.
#[derive(Clone, PartialEq, Eq)]
pub struct Rrn(String);

impl Rrn {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let digits: String = raw.chars().filter(|c| *c != '-').collect();
        let valid = digits.len() == 13
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (raw.len() == 13 || (raw.len() == 14 && raw.as_bytes()[6] == b'-'));
        if !valid {
            return Err(ApiError::Validation(
                "a resident registration number has 13 digits, as YYMMDD-NNNNNNN".into(),
            ));
        }
        Ok(Rrn(digits))
    }

    /// The digits, for sealing; never for showing or logging.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last digits only, for people to recognise their own number.
    pub fn masked(&self) -> String {
        format!("******-*****{}", &self.0[11..])
    }
}

impl fmt::Debug for Rrn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rrn({})", self.masked())
    }
}

/// Computes blind indexes.
pub struct RrnIndexer {
    key: SecretBox<[u8; 32]>,
}

impl RrnIndexer {
    pub fn new(key: [u8; 32]) -> Self {
        RrnIndexer {
            key: SecretBox::new(Box::new(key)),
        }
    }

    /// Reads the key from a file, creating one with a random key if there
    /// is none (the embedded default keeps it under `./data/keys`).
    pub fn from_key_file(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let key: [u8; 32] = hex::decode(String::from_utf8_lossy(&bytes).trim())
                    .ok()
                    .and_then(|k| k.try_into().ok())
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "the key file does not hold 32 hex bytes",
                        )
                    })?;
                Ok(Self::new(key))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                write_private(path, hex::encode(key).as_bytes())?;
                Ok(Self::new(key))
            }
            Err(error) => Err(error),
        }
    }

    pub fn from_secret(secret: &str) -> Self {
        // A configured secret of any form becomes a 32-byte key.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"onestop rrn index key")
            .expect("any key length");
        mac.update(secret.as_bytes());
        Self::new(mac.finalize().into_bytes().into())
    }

    pub fn index(&self, rrn: &Rrn) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.expose_secret())
            .expect("any key length");
        mac.update(rrn.0.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// Writes a new key file readable by its owner only; never overwrites.
pub fn write_key_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    write_private(path, bytes)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_checked_and_shown_masked() {
        let rrn = Rrn::parse("900101-2345678").unwrap();
        assert_eq!(rrn, Rrn::parse("9001012345678").unwrap());
        assert_eq!(rrn.masked(), "******-*****78");
        assert!(!format!("{rrn:?}").contains("2345"));
        assert!(Rrn::parse("900101-234567").is_err());
        assert!(Rrn::parse("9001-012345678").is_err());
        assert!(Rrn::parse("90010a-2345678").is_err());
    }

    #[test]
    fn the_index_depends_on_the_key_and_hides_the_number() {
        let rrn = Rrn::parse("900101-2345678").unwrap();
        let a = RrnIndexer::new([1; 32]).index(&rrn);
        let b = RrnIndexer::new([2; 32]).index(&rrn);
        assert_ne!(a, b);
        assert_eq!(a, RrnIndexer::new([1; 32]).index(&rrn));
        assert!(!a.contains("9001012345678"));
    }

    #[test]
    fn a_key_file_is_made_once_and_read_back() {
        let dir = std::env::temp_dir().join(format!("keys-{}", uuid::Uuid::new_v4()));
        let path = dir.join("rrn-index.key");
        let rrn = Rrn::parse("900101-2345678").unwrap();
        let first = RrnIndexer::from_key_file(&path).unwrap().index(&rrn);
        let second = RrnIndexer::from_key_file(&path).unwrap().index(&rrn);
        assert_eq!(first, second);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
